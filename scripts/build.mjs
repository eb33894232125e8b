// Bundles the plugin into one CommonJS file that runs as-is from /opt/cni/bin wherever `node` is on PATH.
import { build } from "esbuild";
import { chmodSync, mkdirSync } from "node:fs";

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
  // The runtime hands plugins its whole environment: keep its Node flags and CA bundle out of our process.
  banner: { js: "#!/usr/bin/env -S -u NODE_OPTIONS -u NODE_EXTRA_CA_CERTS node" },
});
chmodSync(outfile, 0o755);
