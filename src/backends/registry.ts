// Which backends the operations talk to, in the order they look for a pod's rules. Loaded when asked for: a pod
// with nothing to scope loads none of them.
import { IPTABLES_VARIANTS } from "../core/node.js";
import type { RuleBackend } from "./backend.js";

/**
 * The plugin's: portmap's iptables backend through the binaries on PATH (portmap shares the runtime's PATH with
 * us: its `iptables` is ours), then its nftables backend.
 */
export async function podBackends(): Promise<RuleBackend[]> {
  const [{ iptablesBackend }, { nftablesBackend }] = await Promise.all([
    import("./iptables.js"),
    import("./nftables.js"),
  ]);
  return [iptablesBackend(), nftablesBackend];
}

/**
 * The operator commands' and the keeper's: where both iptables variants are installed, each variant's nat table
 * (a node can have portmap's rules in one and kube-proxy's in the other, and which one is portmap's is a fact
 * of each pod: ops/placement.ts), else the binaries on PATH; then portmap's nftables backend.
 */
export async function nodeBackends(path?: string): Promise<RuleBackend[]> {
  const [{ iptablesBackend }, { nftablesBackend }, { bothVariants }] = await Promise.all([
    import("./iptables.js"),
    import("./nftables.js"),
    import("../iptables/variant.js"),
  ]);
  const iptables = bothVariants(path) ? IPTABLES_VARIANTS.map((v) => iptablesBackend(v)) : [iptablesBackend()];
  return [...iptables, nftablesBackend];
}
