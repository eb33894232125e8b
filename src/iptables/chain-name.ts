// portmap's per-pod chain name: "CNI-DN-" + sha512 hex of (network name + container ID), cut to 28 chars.
import { sha512Hex } from "../core/sha512.js";

// iptables chain names are at most 28 characters.
const MAX_CHAIN = 28;

export function portmapChainName(networkName: string, containerId: string): string {
  return `CNI-DN-${sha512Hex(networkName + containerId)}`.slice(0, MAX_CHAIN);
}
