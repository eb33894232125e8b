// How the keeper, reconcile and gc word what a pass did: one line per change, each naming its family (or
// backend) first.
import type { FamilyOutcome, Removed } from "../backends/backend.js";

/** "IPv4" for the iptables backend on PATH, "<backend> IPv4" for another, "<backend>" for both families at once. */
export const familyLabel = (f: FamilyOutcome): string =>
  f.family === undefined ? f.backend : `${f.backend === "iptables" ? "" : `${f.backend} `}IPv${f.family}`;

export const droppedLine = (f: FamilyOutcome): string =>
  `removed ${f.droppedUdp} stale UDP conntrack entr${f.droppedUdp === 1 ? "y" : "ies"}`;

/** A dead pod's rules that went: its chain and jumps (iptables), or its rules (nftables). */
export function removedText(r: Removed, dead: boolean): string {
  const which = dead ? "dead " : "";
  if (r.chain)
    return `${which}${r.chain.name} (network ${r.chain.network}, container ${r.containerId}) and ${r.chain.jumps} jump(s)`;
  return `${r.rules ?? 0} rule(s) of ${which}container ${r.containerId}`;
}

/** The keeper's and reconcile's lines of one family's changes: dead pods' rules first, then the live pods'. */
export const changeLines = (f: FamilyOutcome): string[] => [
  ...f.removed.map((r) => `deleted ${removedText(r, true)}`),
  ...f.leftAlone.map((s) => `left alone ${s}`),
  ...f.actions,
];
