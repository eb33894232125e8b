// portmap's nftables backend (portmap >= 1.6) as a RuleBackend: every pod's rules in chain `hostports` of tables
// `ip cni_hostport` / `ip6 cni_hostport`, each carrying the container ID as its comment (nftables/json.ts).
import { batch, describeRule, hostportsPlace, NEVER, rewriteCommands } from "../nftables/json.js";
import { applyBatch, checkNftUsable, readPodHostports } from "../nftables/nft.js";
import type { RuleBackend } from "./backend.js";

export const nftablesBackend: RuleBackend = {
  name: "nftables",
  kind: "nftables",
  tool: "nft",
  // portmap's nftables CHECK counts the pod's rules per family: a family without host IPs keeps its rules,
  // matching nothing.
  closedDestination: NEVER,
  where: hostportsPlace,
  describe: describeRule,
  readPod: (pod, families, runner) =>
    Promise.all(
      families.map(async (f) => {
        const mine = await readPodHostports(f, pod.containerId, runner);
        return mine.length > 0 ? mine : undefined;
      }),
    ),
  // Both families in one nft process: one transaction.
  writePod: (plans, runner) =>
    applyBatch(batch(plans.flatMap((p) => rewriteCommands(p.family, p.current, p.desired))), runner),
  usable: checkNftUsable,
  async read() {
    const { readNft } = await import("./nftables-node.js");
    return readNft(nftablesBackend);
  },
};
