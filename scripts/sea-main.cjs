// The single executable's main script. The plugin's bundle comes as an asset with a V8 code cache made at
// build time holding every function a pod start runs (scripts/sea-code-cache.cjs): Node's own SEA code cache
// holds only what compiles before the script runs, so each of them would otherwise be compiled then.
const { getAsset, getRawAsset } = require("node:sea");
const { compileFunction, Script } = require("node:vm");

// The operator commands, an asset of their own (scripts/build.mjs): compiled only when a command line runs.
globalThis[Symbol.for("portmap-hostip.cli")] = () => {
  const m = { exports: {} };
  const params = ["exports", "require", "module"];
  compileFunction(getAsset("cli.js", "utf8"), params, { filename: "portmap-hostip-cli.js" })(m.exports, require, m);
  return m.exports;
};

const script = new Script(getAsset("plugin.js", "utf8"), {
  filename: "portmap-hostip.js",
  cachedData: new Uint8Array(getRawAsset("plugin.cache")),
});
// Built by another runtime than this one: it still works, compiling as it goes, but the build checks for this.
if (script.cachedDataRejected) require("node:fs").writeSync(2, "portmap-hostip: code cache rejected\n");
script.runInThisContext()(exports, require, module, __filename, __dirname);
