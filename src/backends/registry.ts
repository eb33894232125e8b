// Which backends the operations talk to, in the order they look for a pod's rules: portmap's iptables backend
// through the binaries on PATH (the ones portmap ran), then its nftables backend. Loaded when asked for: a pod
// with nothing to scope loads none of them.
import type { RuleBackend } from "./backend.js";

export async function podBackends(): Promise<RuleBackend[]> {
  const [{ iptablesBackend }, { nftablesBackend }] = await Promise.all([
    import("./iptables.js"),
    import("./nftables.js"),
  ]);
  return [iptablesBackend(), nftablesBackend];
}

/** The backends the operator commands and the keeper read on this node. */
export const nodeBackends = podBackends;
