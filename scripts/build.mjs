// Bundles the plugin into one CommonJS file that runs as-is from /opt/cni/bin wherever `node` is on PATH.
import { build } from "esbuild";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { buildSea } from "./build-sea.mjs";

const { version } = JSON.parse(readFileSync("package.json", "utf8"));
const outfile = "dist/portmap-hostip";
mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  outfile,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  minify: true,
  legalComments: "none",
  // `--version` needs no package.json at run time.
  define: { PORTMAP_HOSTIP_VERSION: JSON.stringify(version) },
  // The runtime hands plugins its whole environment: keep its Node flags and CA bundle out of our process.
  banner: { js: "#!/usr/bin/env -S -u NODE_OPTIONS -u NODE_EXTRA_CA_CERTS node" },
});
chmodSync(outfile, 0o755);
// dist/ sits in this "type": "module" package: without this, node would load the bundle as ESM.
writeFileSync("dist/package.json", '{ "type": "commonjs" }\n');

// The same bundle, with its own runtime, for nodes without Node.js.
buildSea(outfile, "dist/portmap-hostip-linux-x64", version);
