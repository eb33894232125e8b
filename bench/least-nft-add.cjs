// The least any Node plugin can do to scope a hostPort pod's rules on portmap's nftables backend (the bench's
// "least nft ADD" rows), on the single executable's runtime: read stdin, list the node's addresses and default
// routes with one `ip`, list each family's `hostports` chain (the pod's rules are known only by their handles),
// and in one `nft -j` batch put, before each of the pod's DNAT rules, one copy per host IP given and delete it;
// print prevResult. No validation, policy or record: what our ADD costs above it is our own code.
// node least-nft-add.cjs <ip batch> <container ID> <IPv4 host IPs, comma-separated> <IPv6 host IPs>
"use strict";
const { readFileSync, writeSync } = require("node:fs");
const { spawnSync } = require("node:child_process");
const conf = JSON.parse(readFileSync(0, "utf8"));
const [batch, id, ...hostIps] = process.argv.slice(2);
const run = (args, input) => {
  const r = spawnSync(args[0], args.slice(1), { input, timeout: 10_000, encoding: "utf8" });
  if (r.status !== 0) {
    writeSync(2, `${args.join(" ")} exited ${r.status}: ${r.stderr}`);
    process.exit(1);
  }
  return r.stdout;
};
run(["ip", "-j", "-batch", "-"], batch);
const commands = ["ip", "ip6"].flatMap((family, i) => {
  const listing = JSON.parse(run(["nft", "-a", "-j", "list", "chain", family, "cni_hostport", "hostports"]));
  const mine = listing.nftables.flatMap((o) =>
    o.rule?.comment === id && o.rule.expr.some((e) => e.dnat) ? [o.rule] : [],
  );
  return mine.flatMap(({ handle, ...rule }) => [
    ...hostIps[i].split(",").map((ip) => ({
      insert: {
        rule: {
          ...rule,
          handle,
          expr: [
            { match: { op: "==", left: { payload: { protocol: family, field: "daddr" } }, right: ip } },
            ...rule.expr,
          ],
        },
      },
    })),
    { delete: { rule: { family, table: "cni_hostport", chain: "hostports", handle } } },
  ]);
});
run(["nft", "-j", JSON.stringify({ nftables: commands })]);
writeSync(1, JSON.stringify(conf.prevResult));
process.exit(0);
