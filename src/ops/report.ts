// How the keeper, reconcile and gc word what a pass did: one line per change, each naming its family (or
// backend) first.
import type { FamilyOutcome, Removed, Repaired } from "../backends/backend.js";
import { attachmentRef } from "../host/cache.js";
import type { PassReport } from "./pass.js";

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

/** One change of a family, as a line and as what the keeper's JSON log and metrics need of it. */
export interface Change {
  text: string;
  /** A dead pod's rules deleted or left alone, a live pod's rules written, another rule written. */
  event: "removed" | "left-alone" | "repaired" | "changed";
  /** The dead pod's rules that went. */
  removed?: Removed;
  /** The live pod whose rules were written. */
  repaired?: Repaired;
}

/** One family's changes: dead pods' rules first, then the live pods' (a pod's line starts with its name). */
export function changes(f: FamilyOutcome): Change[] {
  const ofPod = (text: string) => f.repaired.find((r) => text.startsWith(`${attachmentRef(r.attachment)}: `));
  return [
    ...f.removed.map((r): Change => ({ text: `deleted ${removedText(r, true)}`, event: "removed", removed: r })),
    ...f.leftAlone.map((s): Change => ({ text: `left alone ${s}`, event: "left-alone" })),
    ...f.actions.map((text): Change => {
      const repaired = ofPod(text);
      return repaired ? { text, event: "repaired", repaired } : { text, event: "changed" };
    }),
  ];
}

/** The keeper's and reconcile's lines of one family's changes. */
export const changeLines = (f: FamilyOutcome): string[] => changes(f).map((c) => c.text);

/** Whether a pass found everything as it must be and left nothing for later: nothing to say, write or wait for. */
export const settled = (report: PassReport): boolean =>
  report.judged &&
  !report.pending &&
  report.dead === 0 &&
  report.problems.length === 0 &&
  report.unread.length === 0 &&
  report.families.every(
    (f) =>
      f.lines === 0 &&
      f.removed.length === 0 &&
      f.leftAlone.length === 0 &&
      f.actions.length === 0 &&
      f.repaired.length === 0 &&
      f.skipped.length === 0 &&
      f.waiting.length === 0 &&
      f.failure === undefined,
  );
