// Whether a container whose rules are on the node is alive, from the node's state: libcni's result cache (what
// the runtime set up) and the records ADD and DEL leave. The keeper, reconcile, gc and status all judge by this.
import type { CacheRead } from "./cache.js";
import { ownedByUnreadable } from "./cache.js";
import { type ContainerRecord, recordKey } from "./record.js";

/** No runtime keeps an ADD going longer than this (kubelet gives up on sandbox creation within 4 minutes). */
export const ADD_RECORD_TTL_MS = 5 * 60_000;

/**
 * What a container is:
 * - live: a readable cache entry and no "deleted" record — its rules must be there;
 * - deleting: its DEL has started — never rebuilt (portmap's DEL is removing them);
 * - adding: no cache entry yet, but its ADD started less than ADD_RECORD_TTL_MS ago — never deleted;
 * - unknown: a cache file that cannot be read may be its — never deleted, reported;
 * - dead: none of these — its rules go.
 */
export type Verdict = "live" | "deleting" | "adding" | "unknown" | "dead";

/** The verdict on a container of a network; `null`: of any network (portmap's nftables rules name none). */
export type Liveness = (network: string | null, containerId: string) => Verdict;

/** Whether an "added" record says ADD may still be running (its rules are live though no cache entry names it). */
export function addMayBeRunning(record: ContainerRecord | undefined, now = Date.now()): boolean {
  return record?.state === "added" && now - record.at < ADD_RECORD_TTL_MS;
}

/** Dead, or its DEL under way with no cache entry keeping it: its rules may go. */
export const mayGo = (verdict: Verdict): boolean => verdict === "dead" || verdict === "deleting";

export function judge(view: {
  cache: CacheRead;
  records: ReadonlyMap<string, ContainerRecord>;
  now: number;
}): Liveness {
  const cached = new Set(view.cache.attachments.map((a) => recordKey(a.network, a.containerId)));
  const cachedIds = new Set(view.cache.attachments.map((a) => a.containerId));
  const byId = new Map<string, ContainerRecord[]>();
  for (const r of view.records.values()) byId.set(r.containerId, [...(byId.get(r.containerId) ?? []), r]);
  return (network, containerId) => {
    if (network === null) {
      // Alive while any network's attachment has it.
      if (cachedIds.has(containerId)) return "live";
      if (ownedByUnreadable(view.cache, null, containerId)) return "unknown";
      const records = byId.get(containerId) ?? [];
      if (records.some((r) => addMayBeRunning(r, view.now))) return "adding";
      return records.some((r) => r.state === "deleted") ? "deleting" : "dead";
    }
    const key = recordKey(network, containerId);
    const record = view.records.get(key);
    if (record?.state === "deleted") return "deleting";
    if (cached.has(key)) return "live";
    if (ownedByUnreadable(view.cache, network, containerId)) return "unknown";
    return addMayBeRunning(record, view.now) ? "adding" : "dead";
  };
}
