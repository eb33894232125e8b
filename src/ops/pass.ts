// One pass of the node's keeper (and of `reconcile` and `gc`): under the keeper lock, read the result cache, the
// container records, the node's addresses and every backend's rules; judge every container; and have each
// backend bring its pods' rules to what the live pods need — rebuilding missing or wrong rules (not for gc),
// deleting dead pods' rules that take a live pod's traffic at once and other dead pods' after the grace.

import type {
  FamilyOutcome,
  LiveAttachment,
  NodeRules,
  NodeView,
  PassOptions,
  RuleBackend,
  Settled,
} from "../backends/backend.js";
import type { Family } from "../core/ip.js";
import type { IptablesVariant } from "../core/node.js";
import {
  attachmentRef,
  type CachedAttachment,
  type CacheMemo,
  readResultCache,
  selectsNetwork,
} from "../host/cache.js";
import { judge, type Liveness, mayGo } from "../host/liveness.js";
import { readNodeNetwork } from "../host/network.js";
import { recordKey } from "../host/record.js";
import { type RecordMemo, readRecords, withKeeperLock } from "../host/state.js";
import { hasOurEntry } from "../pipeline/attachment.js";
import { placer } from "./placement.js";

/** What the keeper remembers between passes. */
export interface PassMemory {
  /**
   * Live containers whose rules need a rebuild and may be under a DEL that leaves no mark, and since when: those
   * without a record (their ADD ran before this version, or without our entry), and those whose own rules alone
   * are gone (a DEL run while a rewrite had taken our entry from the list). Between portmap's DEL and libcni
   * dropping the cache entry they look like a pod whose rules were taken: rebuilt only when a later pass,
   * CONFIRM_MS on, still finds the cache entry and the rules missing.
   */
  unconfirmed: Map<string, number>;
  /** Dead pods' rules ("<family>\n<place>"), and since when. */
  dead: Map<string, number>;
  /** Cache files and records parsed by earlier passes. */
  parsed: CacheMemo;
  records: RecordMemo;
  /** Per backend and family, what a pass found all correct: the cheap resync. */
  settled: Map<string, Settled>;
  /** Live pods (record key) and the backend that held their rules when last seen: where a flush leaves them. */
  placed: Map<string, string>;
}

export const CONFIRM_MS = 1_500;
/** A conflicting dead chain with no record of its DEL goes once seen dead this long (PassReport.pending). */
export const DEAD_CONFIRM_MS = 3_000;
// A manual reconcile or gc holds the lock for one pass: the keeper waits for it, not forever.
export const LOCK_WAIT_MS = 30_000;

export const newMemory = (): PassMemory => ({
  unconfirmed: new Map(),
  dead: new Map(),
  parsed: new Map(),
  records: new Map(),
  settled: new Map(),
  placed: new Map(),
});

/** A dead pod's rules of a network a pass does not judge. */
export interface Unjudged {
  place: string;
  network: string;
  containerId: string;
}

export interface PassReport {
  /** False when there is no result cache: nothing was judged. */
  judged: boolean;
  families: FamilyOutcome[];
  /** Networks of live pods the pass left alone: not ours (PassOptions.scope "ours"). */
  otherNetworks: string[];
  /**
   * Dead pods' rules the pass did not judge: their network is no longer in the cache (scope "cached" without
   * --network; gc names them).
   */
  unjudged: Unjudged[];
  /** Attachments whose rules cannot be computed (a policy refusal, a bad entry) and what the reads reported. */
  problems: string[];
  /** Whether something waits for a second look: the caller runs another pass CONFIRM_MS later. */
  pending: boolean;
  /** How many dead pods' rules (per family) the pass saw, gone or not. */
  dead: number;
  /** Whether any backend could read any of its tables. */
  read: boolean;
  /** Backends whose rules could not be read (named in `problems`): they sat the pass out. */
  unread: string[];
  /** What a judged pass read, before its writes: the keeper's status rows come from it. */
  seen?: { rules: NodeRules[]; view: NodeView; verdict: Liveness };
}

/**
 * Whether a dead pod's rules go now: after the grace; at once when they take a live pod's port and its DEL is
 * recorded. Without that record, rules with no cache entry and no ADD record may be a pod's whose ADD is
 * between portmap and us (another pod may hold the same port on another host IP): they must look dead for
 * DEAD_CONFIRM_MS first. gc (`conflictsFirst` false) waits out the grace for every one.
 */
export function deadChainGoes(c: {
  conflicting: boolean;
  deleted: boolean;
  age: number;
  graceMs: number;
  conflictsFirst?: boolean;
}): boolean {
  const first = (c.conflictsFirst ?? true) && c.conflicting && (c.deleted || c.age >= DEAD_CONFIRM_MS);
  return first || c.age >= c.graceMs;
}

/** Runs one pass under the keeper lock. */
export async function keeperPass(
  backends: readonly RuleBackend[],
  dirs: { cacheDir: string; stateDir: string },
  memory: PassMemory,
  options: PassOptions,
): Promise<PassReport> {
  return withKeeperLock(dirs.stateDir, LOCK_WAIT_MS, async () => {
    const [cache, { records, problems: recordProblems }, network] = await Promise.all([
      readResultCache(dirs.cacheDir, memory.parsed),
      readRecords(dirs.stateDir, memory.records),
      readNodeNetwork(),
    ]);
    const problems = [...cache.problems, ...recordProblems];
    // A node where no pod has started yet: nothing to keep, and no failure (the keeper's probe stays green).
    if (!cache.present)
      return {
        judged: false,
        families: [],
        problems: [...problems, `no result cache at ${cache.dir} yet (--cache-dir): nothing to rebuild from`],
        pending: false,
        dead: 0,
        otherNetworks: [],
        unjudged: [],
        read: false,
        unread: [],
      };
    const view: NodeView = { cache, records, network, now: Date.now() };
    const verdict = judge(view);
    // A backend whose rules cannot be read sits the pass out.
    const read: NodeRules[] = [];
    const unread: string[] = [];
    for (const backend of backends) {
      try {
        const rules = await backend.read();
        problems.push(...rules.problems);
        read.push(rules);
      } catch (err) {
        problems.push(`${backend.name} rules not read: ${(err as Error).message}`);
        unread.push(backend.name);
      }
    }
    const scope = passScope(cache.attachments, options);
    const live = new Map<RuleBackend, LiveAttachment[]>();
    const recorded = new Map<string, Set<IptablesVariant>>();
    for (const r of records.values())
      if (r.state === "added" && r.iptables)
        recorded.set(r.network, (recorded.get(r.network) ?? new Set()).add(r.iptables));
    const place = placer(read, { stated: options.cniIptables, recorded }, memory.placed);
    const placed = new Map<string, string>();
    for (const a of cache.attachments) {
      if (!scope.keeps(a.network) || verdict(a.network, a.containerId) !== "live") continue;
      const key = recordKey(a.network, a.containerId);
      const label = attachmentRef(a);
      const l: LiveAttachment = { key, label, attachment: a, record: records.get(key) };
      const where = place(l);
      // gc rebuilds nothing: where a pod without rules would go is no question then.
      if (where && "refused" in where) {
        if (options.rebuild) problems.push(`skipped ${label}: ${where.refused}`);
        continue;
      }
      if (!where) continue;
      const remembered = memory.placed.get(key);
      if (where.held) placed.set(key, where.backend.name);
      else if (remembered !== undefined) placed.set(key, remembered);
      live.set(where.backend, [...(live.get(where.backend) ?? []), l]);
    }
    memory.placed = placed;
    const withRecord = new Set(
      [...live.values()]
        .flat()
        .filter((l) => l.record?.state === "added")
        .map((l) => l.key),
    );
    const waitingNow = new Set<string>();
    const mayRebuild = (key: string, alone: boolean): boolean => {
      if (withRecord.has(key) && !alone) return true;
      const since = memory.unconfirmed.get(key);
      if (since !== undefined && view.now - since >= CONFIRM_MS) return true;
      waitingNow.add(key);
      return false;
    };
    const deadSeen = new Set<string>();
    let deadWaiting = false;
    const collectNow = (family: Family, place: string, conflicting: boolean, deleted: boolean): boolean => {
      const key = `${family}\n${place}`; // places carry the backend's own prefix
      deadSeen.add(key);
      const since = memory.dead.get(key) ?? view.now;
      memory.dead.set(key, since);
      const age = view.now - since;
      const { graceMs, conflictsFirst } = options;
      if (conflictsFirst && conflicting && !deleted && age < DEAD_CONFIRM_MS) deadWaiting = true;
      return deadChainGoes({ conflicting, deleted, age, graceMs, conflictsFirst });
    };
    const gcNetworks = scope.judged;
    const families: FamilyOutcome[] = [];
    for (const rules of read) {
      const mine = live.get(rules.backend) ?? [];
      // The other variant's nat table on a node with both, with nothing of portmap's and no pod to keep: nothing
      // to do, nothing to say.
      if (rules.backend.variant !== undefined && mine.length === 0 && !rules.portmapWrote) continue;
      const result = await rules.keep({
        view,
        live: mine,
        verdict,
        mayRebuild,
        collectNow,
        gcNetworks,
        settled: memory.settled,
        options,
      });
      families.push(...result.families);
      problems.push(...result.problems);
    }
    // Forget what resolved itself; remember what still waits (from its first sighting).
    for (const key of [...memory.unconfirmed.keys()]) if (!waitingNow.has(key)) memory.unconfirmed.delete(key);
    for (const key of waitingNow) if (!memory.unconfirmed.has(key)) memory.unconfirmed.set(key, view.now);
    for (const key of [...memory.dead.keys()]) if (!deadSeen.has(key)) memory.dead.delete(key);
    return {
      judged: true,
      families,
      problems,
      pending: waitingNow.size > 0 || deadWaiting,
      dead: deadSeen.size,
      otherNetworks: scope.others,
      unjudged:
        options.scope === "cached" && options.networks.length === 0 ? unjudgedDead(read, verdict, gcNetworks) : [],
      read: read.some((r) => r.families.length > 0),
      unread,
      seen: { rules: read, view, verdict },
    };
  });
}

/**
 * Which networks a pass keeps (PassOptions.scope): their live pods, and their dead pods' rules (`judged`); and the
 * networks of cached pods it leaves alone (`others`).
 */
export function passScope(
  attachments: readonly CachedAttachment[],
  options: Pick<PassOptions, "networks" | "scope" | "managed">,
): { keeps: (network: string) => boolean; judged: Set<string>; others: string[] } {
  const cached = new Set(attachments.map((a) => a.network));
  const ours = new Set(attachments.filter(hasOurEntry).map((a) => a.network));
  if (options.managed) ours.add(options.managed.network);
  const inScope = (network: string) => options.scope === "cached" || ours.has(network);
  const keeps = (network: string) => selectsNetwork(options.networks, network) && inScope(network);
  const named =
    options.networks.length > 0 ? options.networks : options.scope === "ours" ? [...cached, ...ours] : cached;
  return {
    keeps,
    judged: new Set([...named].filter(inScope)),
    others: [...cached].filter((n) => selectsNetwork(options.networks, n) && !inScope(n)).sort(),
  };
}

/** Dead pods' rules that name a network outside `judged`, once each (not per family). */
function unjudgedDead(read: readonly NodeRules[], verdict: Liveness, judged: ReadonlySet<string>): Unjudged[] {
  const found = new Map<string, Unjudged>();
  for (const p of read.flatMap((r) => r.pods())) {
    const o = p.owner;
    if (!o || o.network === null || judged.has(o.network) || !mayGo(verdict(o.network, o.containerId))) continue;
    found.set(`${p.place}\n${o.network}\n${o.containerId}`, { place: p.place, ...o, network: o.network });
  }
  return [...found.values()];
}
