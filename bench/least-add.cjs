// The least any Node plugin can do for a hostPort pod's first ADD (the bench's "least Node ADD" rows), on the
// single executable's runtime: read stdin, list the node's addresses and default routes with one `ip`, swap
// portmap's rules for the scoped ones with one iptables-restore per family (the payloads given, computed by the
// bench), print prevResult, exit. No validation, policy or record: what our ADD costs above it is our own code.
// node least-add.cjs <ip batch> <IPv4 payload> [<IPv6 payload>]
"use strict";
const { readFileSync, writeSync } = require("node:fs");
const conf = JSON.parse(readFileSync(0, "utf8"));
const { spawnSync } = require("node:child_process");
const [batch, ...payloads] = process.argv.slice(2);
const run = (file, args, input) => {
  const r = spawnSync(file, args, { input, timeout: 10_000 });
  if (r.status !== 0) {
    writeSync(2, `${file} exited ${r.status}: ${r.stderr}`);
    process.exit(1);
  }
};
run("ip", ["-j", "-batch", "-"], batch);
for (const [i, p] of payloads.entries())
  run(i === 0 ? "iptables-restore" : "ip6tables-restore", ["-w", "5", "--noflush"], p);
writeSync(1, JSON.stringify(conf.prevResult));
process.exit(0);
