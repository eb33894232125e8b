// Run by the single executable's own runtime at build time: `node sea-code-cache.cjs PLUGIN_JS CACHE_OUT`.
// Compiles the plugin's bundle with every function compiled eagerly, then writes V8's code cache of it with the
// flags back at their defaults: V8 accepts a cache only from a runtime with the same flags, and the
// executable runs with none.
const { readFileSync, writeFileSync } = require("node:fs");
const { setFlagsFromString } = require("node:v8");
const { Script } = require("node:vm");

const [source, out] = process.argv.slice(2);
setFlagsFromString("--no-lazy");
const script = new Script(readFileSync(source, "utf8"), { filename: "portmap-hostip.js" });
setFlagsFromString("--lazy");
writeFileSync(out, script.createCachedData());
