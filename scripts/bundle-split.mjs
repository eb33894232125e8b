// The bundle run by the system's `node` (dist/portmap-hostip): one file, but the modules a pod start may not
// need (the hostPort pipeline, the operator commands, ip-address) are kept in it as text and compiled at
// their first use. Without a code cache (Node 20 cannot keep one for a plugin), V8 parses every function of a
// script it loads; a pod without hostPorts then parses about a third of the code. The single executable gets
// the whole bundle instead, with a code cache of every function (scripts/build-sea.mjs).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { build, transform } from "esbuild";

const require = createRequire(import.meta.url);

// Each kept module is a CommonJS function body; `load` is its `require`: a kept module by its name, anything
// else (node's built-in modules) from node. Compiled with its name as the file name, for stack traces.
const LOADER = `const { compileFunction } = require("node:vm");
const loaded = {};
function load(id) {
  const code = modules[id];
  if (code === undefined) return require(id);
  let m = loaded[id];
  if (m === undefined) {
    m = loaded[id] = { exports: {} };
    compileFunction(code, ["exports", "require", "module"], { filename: "portmap-hostip/" + id })(m.exports, load, m);
  }
  return m.exports;
}`;

const toCommonJs = async (code) =>
  (
    await transform(code, {
      format: "cjs",
      platform: "node",
      target: "node20",
      minify: true,
      supported: { "dynamic-import": false },
    })
  ).code;

/** Writes `outfile`: `options` are esbuild's for the whole bundle (entry, define, banner, minify…). */
export async function buildSplitBundle(outfile, options) {
  const dir = mkdtempSync(join("dist", ".split-"));
  try {
    const { banner, outfile: _whole, format: _format, ...common } = options;
    // esbuild's code splitting (ESM only): the entry, one chunk per dynamic import, shared chunks.
    await build({
      ...common,
      entryPoints: { main: options.entryPoints[0] },
      outdir: dir,
      splitting: true,
      format: "esm",
      chunkNames: "[name]-[hash]",
      // core/ip.ts requires each half of ip-address at its first use: kept as modules of their own.
      external: ["ip-address/*"],
    });
    const modules = {};
    for (const file of readdirSync(dir)) modules[`./${file}`] = await toCommonJs(readFileSync(join(dir, file), "utf8"));
    for (const half of ["ipv4", "ipv6"]) {
      const id = `ip-address/dist/${half}.js`;
      const out = await build({ ...common, entryPoints: [require.resolve(id)], format: "cjs", write: false });
      modules[id] = out.outputFiles[0].text;
    }
    const main = modules["./main.js"];
    delete modules["./main.js"];
    writeFileSync(
      outfile,
      `${banner.js}\n"use strict";\nconst modules = ${JSON.stringify(modules)};\n${LOADER}\n(function (exports, require, module) {\n${main}})({}, load, { exports: {} });\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
