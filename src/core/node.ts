// The node's network as the policy sees it: its addresses and default-route interfaces (read by host/network.ts).
import type { Family, Ip } from "./ip.js";

export interface NodeAddress {
  ifname: string;
  ip: Ip;
  /** Kernel scope: global, link, host. */
  scope: string;
}

export interface NodeNetwork {
  addresses: NodeAddress[];
  /** Interfaces holding a default route, per family. */
  defaultRouteInterfaces: Record<Family, string[]>;
}
