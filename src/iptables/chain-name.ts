// portmap's per-pod chain name: "CNI-DN-" + sha512 hex of (network name + container ID), cut to 28 chars.
import { sha512Hex } from "../core/sha512.js";

// iptables chain names are at most 28 characters.
const MAX_CHAIN = 28;
// The keeper names every cached pod's chain on every pass: each is hashed once (plain-JS SHA-512, ~15 µs),
// up to this many, then the memo starts over.
const MEMO_MAX = 10_000;
const memo = new Map<string, string>();

export function portmapChainName(networkName: string, containerId: string): string {
  const key = `${networkName}\n${containerId}`;
  let chain = memo.get(key);
  if (chain === undefined) {
    if (memo.size >= MEMO_MAX) memo.clear();
    chain = `CNI-DN-${sha512Hex(networkName + containerId)}`.slice(0, MAX_CHAIN);
    memo.set(key, chain);
  }
  return chain;
}
