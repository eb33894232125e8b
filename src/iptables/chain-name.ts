// portmap's per-pod chain name: "CNI-DN-" + sha512 hex of (network name + container ID), cut to 28 chars.
import { createHash } from "node:crypto";

// iptables chain names are at most 28 characters.
const MAX_CHAIN = 28;

export function portmapChainName(networkName: string, containerId: string): string {
  return `CNI-DN-${createHash("sha512")
    .update(networkName + containerId)
    .digest("hex")}`.slice(0, MAX_CHAIN);
}
