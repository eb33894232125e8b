// The node's network as the policy sees it: its addresses and default-route interfaces (read by host/network.ts);
// and its iptables, which comes in two implementations.
import type { Family, Ip } from "./ip.js";

export interface NodeAddress {
  ifname: string;
  ip: Ip;
  /** Kernel scope: global, link, host. */
  scope: string;
  /** IPv6 privacy address: for outgoing connections only, replaced every day or so. */
  temporary: boolean;
  /** IPv6 duplicate address detection failed: the kernel does not use it. */
  dadFailed: boolean;
}

export interface NodeNetwork {
  addresses: NodeAddress[];
  /** Interfaces holding a default route of the main table, per family (every nexthop of a multipath route). */
  defaultRouteInterfaces: Record<Family, string[]>;
}

/** iptables' two implementations: the nf_tables kernel API, or the legacy x_tables one. */
export type IptablesVariant = "nft" | "legacy";

export const IPTABLES_VARIANTS: readonly IptablesVariant[] = ["legacy", "nft"];
