// One pass of the node's keeper (and of `reconcile`): under the keeper lock, read the result cache, the
// container records and the node's addresses, judge every container, and have the backend bring its rules to
// what the live pods need — rebuilding missing or wrong chains, deleting dead chains that would take a live
// pod's traffic at once and other dead chains after the grace — in one transaction per family.
//
// The backend is the only part that knows a rule syntax: iptables (iptablesBackend, here) and portmap's
// nftables backend (nftablesBackend, keep-nft.ts) implement KeeperBackend from the same inputs.
import type { Family } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { takenPorts } from "../core/rule.js";
import { readNodeNetwork } from "../host/network.js";
import type { ContainerRecord } from "../host/record.js";
import { addMayBeRunning, type RecordMemo, readRecords, recordKey, withKeeperLock } from "../host/state.js";
import { readTable, restoreNat } from "../iptables/backend.js";
import { type NatTable, parseTable, portmapJumps, rulesOf } from "../iptables/table.js";
import { natTransaction } from "../iptables/text.js";
import { dropStaleUdp } from "../pipeline/conntrack.js";
import { type ExpectedChain, expectedChains, type PortmapBackend, portmapBackendOf } from "./attachment.js";
import {
  attachmentLabel,
  type CachedAttachment,
  type CacheMemo,
  type CacheRead,
  ownedByUnreadable,
  readResultCache,
  selectsNetwork,
} from "./cache.js";
import { planGc } from "./gc.js";
import { emptyOutcome, failureText, nftablesBackend, sameItems } from "./keep-nft.js";
import { FAMILIES } from "./kernel.js";
import { type FamilyPlan, planReconcile, type Wanted } from "./reconcile.js";

/**
 * What a container is to the keeper:
 * - live: a readable cache entry and no "deleted" record — its rules must be there;
 * - deleting: its DEL has started — never rebuilt (portmap's DEL is removing them);
 * - adding: no cache entry yet, but its ADD started less than ADD_RECORD_TTL_MS ago — never deleted;
 * - unknown: a cache file that cannot be read may be its — never deleted, reported;
 * - dead: none of these — its chains go.
 */
export type Verdict = "live" | "deleting" | "adding" | "unknown" | "dead";

export interface NodeView {
  cache: CacheRead;
  records: Map<string, ContainerRecord>;
  network: NodeNetwork;
  now: number;
}

export function judge(
  view: Pick<NodeView, "cache" | "records" | "now">,
): (network: string, containerId: string) => Verdict {
  const cached = new Set(view.cache.attachments.map((a) => recordKey(a.network, a.containerId)));
  return (network, containerId) => {
    const key = recordKey(network, containerId);
    const record = view.records.get(key);
    if (record?.state === "deleted") return "deleting";
    if (cached.has(key)) return "live";
    if (ownedByUnreadable(view.cache, network, containerId)) return "unknown";
    return addMayBeRunning(record, view.now) ? "adding" : "dead";
  };
}

/** What the keeper remembers between passes. */
export interface PassMemory {
  /**
   * Live containers without a record (their ADD ran before this version, or without our entry) whose rules
   * need a rebuild, and since when. Their DEL leaves no mark, and between portmap's DEL and libcni dropping
   * the cache entry they look exactly like a pod whose rules a flush took: rebuilt only when a later pass,
   * CONFIRM_MS on, still finds the cache entry and the rules missing.
   */
  unconfirmed: Map<string, number>;
  /** Dead chains ("<family>\n<chain>"), and since when. */
  dead: Map<string, number>;
  /** Cache files and records parsed by earlier passes. */
  parsed: CacheMemo;
  records: RecordMemo;
  /**
   * Per backend and family, what a pass found all correct (and nothing left to judge): the next pass that
   * reads the same table text for the same expected chains has nothing to plan — the cheap resync.
   */
  settled: Map<string, Settled>;
}

export interface Settled {
  text: string;
  expected: readonly unknown[];
  gcNetworks: string;
  correct: number;
}

export const CONFIRM_MS = 1_500;
/** A conflicting dead chain with no record of its DEL goes once seen dead this long (PassReport.pending). */
export const DEAD_CONFIRM_MS = 3_000;

export const newMemory = (): PassMemory => ({
  unconfirmed: new Map(),
  dead: new Map(),
  parsed: new Map(),
  records: new Map(),
  settled: new Map(),
});

export interface PassOptions {
  dryRun: boolean;
  /** Only these networks' attachments and chains (none: every network). */
  networks: readonly string[];
  /** Our entry for attachments whose cached conflist has none (the keeper's own options). */
  fallbackEntry: Record<string, unknown> | undefined;
  /** A dead chain that takes no live pod's port goes after this long dead (Infinity: never). */
  graceMs: number;
  /** The node's CNI plugins: the nftables backend runs portmap's ADD again from here. */
  cniBinDir: string;
}

/** One family's part of a pass, for the report. */
export interface FamilyOutcome {
  /** The backend's name (KeeperBackend.name). */
  backend: string;
  /** undefined: both families at once (the nftables backend works per pod, in both). */
  family: Family | undefined;
  /** One line per change (written, or planned under dryRun). */
  actions: string[];
  correct: number;
  rebuilt: number;
  /** Lines of the one transaction (0: nothing written). */
  lines: number;
  /** The transaction itself, for --dry-run. */
  payload: string;
  skipped: string[];
  waiting: string[];
  failure: string | undefined;
  droppedUdp: number;
}

export interface PassReport {
  families: FamilyOutcome[];
  /** Attachments whose rules cannot be computed (a policy refusal, a bad entry) and what the reads reported. */
  problems: string[];
  /** Whether some container waits for confirmation: the caller runs another pass CONFIRM_MS later. */
  pending: boolean;
}

/** A live attachment and its record, as every backend gets it. */
export interface LiveAttachment {
  key: string;
  /** The backend portmap used for it: only that backend keeps its rules. */
  backend: PortmapBackend;
  label: string;
  attachment: CachedAttachment;
  record: ContainerRecord | undefined;
}

export interface BackendPass {
  view: NodeView;
  live: LiveAttachment[];
  verdict: (network: string, containerId: string) => Verdict;
  /** Whether the pass may rebuild this attachment's rules now (false: wait for confirmation). */
  mayRebuild: (key: string) => boolean;
  /**
   * Called for every dead chain seen; whether it goes now. `conflicting`: it takes a live pod's port;
   * `deleted`: its DEL is recorded (no doubt it is dead).
   */
  collectNow: (family: Family, chain: string, conflicting: boolean, deleted: boolean) => boolean;
  /** Networks whose dead chains may go: those given, else every network the cache names. */
  gcNetworks: ReadonlySet<string>;
  /** The backend's record of settled families (PassMemory.settled). */
  settled: Map<string, Settled>;
  options: PassOptions;
  /** What the backend's survey read (KeeperBackend.survey), for it to use again. */
  surveyed: unknown;
}

/**
 * A rule backend the keeper drives: reads its rules, plans and writes them. It gets only the live attachments
 * whose portmap used it (LiveAttachment.backend === name) and judges only its own rules.
 */
export interface KeeperBackend {
  readonly name: PortmapBackend;
  /**
   * Reads its rules before the pass: `containers` with rules there are this backend's whatever their cached
   * entry says (portmap v1.9.1 without `backend` falls back to nftables when iptables is unusable).
   */
  survey?(): Promise<{ containers: ReadonlySet<string>; read: unknown }>;
  pass(input: BackendPass): Promise<{ families: FamilyOutcome[]; problems: string[] }>;
}

/** Runs one pass under the keeper lock. */
export async function keeperPass(
  backends: readonly KeeperBackend[],
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
        families: [],
        problems: [...problems, `no result cache at ${cache.dir} (yet): nothing to rebuild from`],
        pending: false,
      };
    const view: NodeView = { cache, records, network, now: Date.now() };
    const verdict = judge(view);
    // Which backend keeps an attachment: the one holding its rules; without rules anywhere, its cached
    // portmap entry's `backend` (portmapBackendOf). A backend whose rules cannot be read sits the pass out.
    const surveys = new Map<KeeperBackend, { containers: ReadonlySet<string>; read: unknown }>();
    for (const backend of backends) {
      if (!backend.survey) continue;
      try {
        surveys.set(backend, await backend.survey());
      } catch (err) {
        problems.push(`${backend.name} rules not read: ${(err as Error).message}`);
      }
    }
    const backendOf = (a: CachedAttachment): PortmapBackend =>
      [...surveys].find(([, s]) => s.containers.has(a.containerId))?.[0].name ?? portmapBackendOf(a);
    const live = cache.attachments
      .filter((a) => selectsNetwork(options.networks, a.network) && verdict(a.network, a.containerId) === "live")
      .map((a) => {
        const key = recordKey(a.network, a.containerId);
        return {
          key,
          backend: backendOf(a),
          label: `${attachmentLabel(a)} (${a.network}, ${a.containerId})`,
          attachment: a,
          record: records.get(key),
        };
      });
    const withRecord = new Set(live.filter((l) => l.record?.state === "added").map((l) => l.key));
    const waitingNow = new Set<string>();
    const mayRebuild = (key: string): boolean => {
      if (withRecord.has(key)) return true;
      const since = memory.unconfirmed.get(key);
      if (since !== undefined && view.now - since >= CONFIRM_MS) return true;
      waitingNow.add(key);
      return false;
    };
    const deadSeen = new Set<string>();
    let deadWaiting = false;
    const collectNow = (family: Family, chain: string, conflicting: boolean, deleted: boolean): boolean => {
      const key = `${family}\n${chain}`; // chain names carry the backend's own prefix
      deadSeen.add(key);
      const since = memory.dead.get(key) ?? view.now;
      memory.dead.set(key, since);
      const age = view.now - since;
      if (conflicting && !deleted && age < DEAD_CONFIRM_MS) deadWaiting = true;
      return deadChainGoes({ conflicting, deleted, age, graceMs: options.graceMs });
    };
    const gcNetworks = new Set(
      options.networks.length > 0 ? options.networks : cache.attachments.map((a) => a.network),
    );
    const families: FamilyOutcome[] = [];
    for (const backend of backends) {
      if (backend.survey && !surveys.has(backend)) continue;
      const mine = live.filter((l) => l.backend === backend.name);
      const result = await backend.pass({
        view,
        live: mine,
        verdict,
        mayRebuild,
        collectNow,
        gcNetworks,
        settled: memory.settled,
        options,
        surveyed: surveys.get(backend)?.read,
      });
      families.push(...result.families);
      problems.push(...result.problems);
    }
    // Forget what resolved itself; remember what still waits (from its first sighting).
    for (const key of [...memory.unconfirmed.keys()]) if (!waitingNow.has(key)) memory.unconfirmed.delete(key);
    for (const key of waitingNow) if (!memory.unconfirmed.has(key)) memory.unconfirmed.set(key, view.now);
    for (const key of [...memory.dead.keys()]) if (!deadSeen.has(key)) memory.dead.delete(key);
    return { families, problems, pending: waitingNow.size > 0 || deadWaiting };
  });
}

// A manual reconcile or gc holds the lock for one pass: the keeper waits for it, not forever.
export const LOCK_WAIT_MS = 30_000;

/**
 * Whether a dead chain goes now: after the grace; at once when it takes a live pod's port and its DEL is
 * recorded. Without that record, a chain with no cache entry and no ADD record may be a pod's whose ADD is
 * between portmap and us (another pod may hold the same port on another host IP): it must look dead for
 * DEAD_CONFIRM_MS first.
 */
export function deadChainGoes(c: { conflicting: boolean; deleted: boolean; age: number; graceMs: number }): boolean {
  return (c.conflicting && (c.deleted || c.age >= DEAD_CONFIRM_MS)) || c.age >= c.graceMs;
}

// An attachment parsed once (CacheMemo) is the same object at every pass: its chains are computed again only
// when the node's addresses or the fallback entry changed.
const expectedMemo = new WeakMap<CachedAttachment, { key: string; chains: ExpectedChain[] }>();

function expectedOf(
  a: CachedAttachment,
  network: NodeNetwork,
  fallback: Record<string, unknown> | undefined,
  key: string,
): ExpectedChain[] {
  const known = expectedMemo.get(a);
  if (known?.key === key) return known.chains;
  const chains = expectedChains(a, network, fallback);
  expectedMemo.set(a, { key, chains });
  return chains;
}

/** The iptables backend: the nat tables through iptables-save/-restore (nft or legacy variant alike). */
export const iptablesBackend: KeeperBackend = {
  name: "iptables",
  async pass({ view, live, verdict, mayRebuild, collectNow, gcNetworks, settled, options }) {
    const problems: string[] = [];
    const wanted: Wanted[] = [];
    const inputsKey = JSON.stringify([view.network, options.fallbackEntry ?? null]);
    for (const l of live) {
      try {
        for (const expected of expectedOf(l.attachment, view.network, options.fallbackEntry, inputsKey))
          wanted.push({ label: l.label, key: l.key, expected });
      } catch (err) {
        // Left as it is: writing portmap's unscoped rules would open what the policy refuses.
        problems.push(`skipped ${l.label}: ${(err as Error).message}`);
      }
    }
    const families: FamilyOutcome[] = [];
    const networksKey = [...gcNetworks].sort().join("\n");
    const texts = await Promise.allSettled(FAMILIES.map((f) => readTable(f)));
    for (const [i, read] of texts.entries()) {
      const family = FAMILIES[i] as Family;
      if (read.status === "rejected") {
        problems.push(`IPv${family} nat table not read: ${(read.reason as Error).message}`);
        continue;
      }
      const mine = wanted.filter((w) => w.expected.family === family);
      const expected = mine.map((w) => w.expected);
      const settledKey = `iptables\n${family}`;
      const before = settled.get(settledKey);
      settled.delete(settledKey);
      if (
        before &&
        before.text === read.value &&
        before.gcNetworks === networksKey &&
        sameItems(before.expected, expected)
      ) {
        settled.set(settledKey, before);
        families.push({ ...emptyOutcome("iptables", family), correct: before.correct });
        continue;
      }
      const table = parseTable(read.value);
      const plan = planReconcile(table, family, mine, (w) => mayRebuild(w.key));
      const gc = planDead(table, family, mine, verdict, collectNow, gcNetworks);
      const lines = [...plan.declarations, ...gc.lines, ...plan.commands];
      const outcome: FamilyOutcome = {
        ...emptyOutcome("iptables", family),
        actions: [...gc.actions, ...plan.actions],
        correct: plan.correct.length,
        rebuilt: plan.rebuilt.length,
        lines: lines.length,
        payload: lines.length > 0 ? natTransaction(lines) : "",
        skipped: plan.skipped,
        waiting: plan.waiting,
      };
      families.push(outcome);
      if (lines.length === 0 && plan.waiting.length === 0 && plan.skipped.length === 0 && gc.undecided === 0) {
        settled.set(settledKey, { text: read.value, expected, gcNetworks: networksKey, correct: plan.correct.length });
      }
      if (lines.length === 0 || options.dryRun) continue;
      try {
        await restoreNat(family, outcome.payload, "the keeper's hostPort rules");
      } catch (err) {
        outcome.failure = failureText(err);
        continue;
      }
      outcome.droppedUdp = await dropStale(plan, family, (t) => problems.push(t));
    }
    return { families, problems };
  },
};

/** Dead chains of this family that go now: those a live pod's port conflicts with, and those past the grace. */
export function planDead(
  table: NatTable,
  family: Family,
  wanted: ReadonlyArray<Wanted>,
  verdict: (network: string, containerId: string) => Verdict,
  collectNow: BackendPass["collectNow"],
  gcNetworks: ReadonlySet<string>,
): { lines: string[]; actions: string[]; undecided: number } {
  const livePorts = new Set(wanted.flatMap((w) => [...takenPorts(w.expected.rules)]));
  const chainOf = new Map(
    portmapJumps(table).flatMap((j) =>
      j.owner ? [[recordKey(j.owner.network, j.owner.containerId), j.chain] as const] : [],
    ),
  );
  const liveChains = new Set(wanted.map((w) => w.expected.chain));
  const decided = new Map<string, boolean>();
  const gc = planGc(table, family, (network, containerId) => {
    // "deleting": its DEL started and no cache entry keeps it (portmap's DEL removes it too).
    const v = verdict(network, containerId);
    if (!gcNetworks.has(network) || (v !== "dead" && v !== "deleting")) return false;
    const chain = chainOf.get(recordKey(network, containerId));
    if (chain === undefined || liveChains.has(chain)) return false;
    if (!decided.has(chain)) {
      const conflicting = [...takenPorts(rulesOf(table, chain))].some((p) => livePorts.has(p));
      decided.set(chain, collectNow(family, chain, conflicting, v === "deleting"));
    }
    return decided.get(chain) as boolean;
  });
  const actions = gc.orphans.map(
    (o) => `deleted dead ${o.chain} (network ${o.network}, container ${o.containerId}) and ${o.jumps.length} jump(s)`,
  );
  // Chains of the judged networks that are not live pods': their verdict may change with time alone (a grace,
  // an ADD record's age), so the family cannot be settled.
  const undecided = [...chainOf].filter(
    ([key, chain]) => gcNetworks.has(key.split("\n")[0] as string) && !liveChains.has(chain),
  ).length;
  return { lines: gc.lines, actions: [...actions, ...gc.skipped.map((s) => `left alone ${s}`)], undecided };
}

async function dropStale(plan: FamilyPlan, family: Family, warn: (t: string) => void): Promise<number> {
  const rewrites = plan.rebuilt.map((r) => ({ before: r.before, after: r.expected.rules }));
  if (rewrites.length === 0) return 0;
  return dropStaleUdp(family, rewrites, warn).catch((err: Error) => {
    warn(err.message);
    return 0;
  });
}

/** Every backend the node's pods may use. */
export const BACKENDS: readonly KeeperBackend[] = [iptablesBackend, nftablesBackend];

/** How lines name a family: "IPv4" for the iptables backend, "<backend> IPv4" for another, "<backend>" for both. */
export const familyLabel = (f: FamilyOutcome): string =>
  f.family === undefined ? f.backend : `${f.backend === "iptables" ? "" : `${f.backend} `}IPv${f.family}`;

export const droppedLine = (f: FamilyOutcome): string =>
  `removed ${f.droppedUdp} stale UDP conntrack entr${f.droppedUdp === 1 ? "y" : "ies"}`;

export interface ReconcileFlags {
  cacheDir: string;
  stateDir: string;
  dryRun: boolean;
  /** Only these networks' attachments (none: every network). */
  networks: readonly string[];
  /** Our entry for attachments whose cached conflist has none (from the installed conflist). */
  fallbackEntry: Record<string, unknown> | undefined;
  /** Where the node's portmap is (PassOptions.cniBinDir). */
  cniBinDir: string;
}

/**
 * The keeper's pass, once, without the grace-delayed gc (dead chains that take a live pod's port go, others
 * are gc's). What needs a second look (a container without a record whose rules need a rebuild, a dead chain
 * without a record of its DEL that takes a live pod's port) gets it from later passes.
 */
export async function runReconcile(
  flags: ReconcileFlags,
  stdout: (t: string) => void,
  stderr: (t: string) => void,
): Promise<number> {
  const memory = newMemory();
  const options = {
    dryRun: flags.dryRun,
    networks: flags.networks,
    fallbackEntry: flags.fallbackEntry,
    graceMs: Infinity,
    cniBinDir: flags.cniBinDir,
  };
  const dirs = { cacheDir: flags.cacheDir, stateDir: flags.stateDir };
  let report = await keeperPass(BACKENDS, dirs, memory, options);
  // Second looks (CONFIRM_MS, DEAD_CONFIRM_MS) take at most three more passes.
  for (let look = 0; report.pending && look < 3; look++) {
    await new Promise((r) => setTimeout(r, CONFIRM_MS));
    report = await keeperPass(BACKENDS, dirs, memory, options);
  }
  let failed = report.problems.length;
  for (const p of report.problems) stderr(`portmap-hostip reconcile: ${p}\n`);
  const verb = flags.dryRun ? "would write" : "wrote";
  for (const f of report.families) {
    const at = familyLabel(f);
    for (const s of f.skipped) stdout(`${at}: skipped ${s}\n`);
    for (const w of f.waiting)
      stdout(`${at}: waiting ${w}: no record of its ADD, and its rules are missing (its DEL may be under way)\n`);
    failed += f.skipped.length;
    for (const a of f.actions) stdout(`${at}: ${a}\n`);
    stdout(
      `${at}: ${f.correct} attachment(s) correct, left alone; ${f.rebuilt} rebuilt${f.lines > 0 ? ` (${verb} ${f.lines} lines in one transaction)` : ""}\n`,
    );
    if (flags.dryRun && f.lines > 0) stdout(`${f.payload.replace(/^/gm, "    ").trimEnd()}\n`);
    if (f.failure !== undefined) {
      failed++;
      stderr(`portmap-hostip reconcile: ${at}: ${f.failure}\n`);
    }
    if (f.droppedUdp > 0) stdout(`${at}: ${droppedLine(f)}\n`);
  }
  return failed > 0 ? 1 : 0;
}
