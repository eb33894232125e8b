// The node's keeper (`install --watch --cache-dir DIR`): beside the installer's conflist watch, it keeps every
// cached pod's hostPort rules as they must be. A pass (ops/pass.ts) runs
//   - at start, once the installer has first read the conflist it manages, and every --resync seconds
//     (iptables-legacy tells nobody about changes: this is its poll) — unless nothing it reads can have changed
//     since a pass that found everything in place (quiet.ts);
//   - when the kernel says something changed: a node address (`ip -o monitor address`), the nat table of
//     iptables-nft or portmap's nftables tables (`nft monitor ruleset`);
//   - when the installer has put our entry back (pods started meanwhile are scoped by this entry), or found the
//     conflist it manages name another network;
//   - CONFIRM_MS after a pass that left a container unconfirmed.
// Passes never overlap; events during one coalesce into one more, at most one per MIN_GAP_MS.
// Every change is one line on stdout (text, or JSON: log.ts); SIGTERM (the signal) lets the running pass finish
// and ends it. What a pass did also goes to its observers, each loaded only when asked for: the Prometheus metrics
// (metrics.ts) and Kubernetes Events (events.ts), which also get the node's mappings after the pass (status' rows).
// Over 300 lines: the Keeper class is one state machine (triggers, coalescing, quiet resyncs, the heartbeat, the
// observers); split, each part would need the others' state.
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type ManagedList, type NodeRules, type RuleBackend, sameItems } from "../backends/backend.js";
import { nodeBackends } from "../backends/registry.js";
import { type KubePod, kubePod } from "../core/names.js";
import type { IptablesVariant } from "../core/node.js";
import { attachmentLabel } from "../host/cache.js";
import { monitor } from "../host/monitor.js";
import { type Refusal, recordsDir, refusalsDir } from "../host/record.js";
import { run } from "../host/run.js";
import { takeRefusals } from "../host/state.js";
import { CONFIRM_MS, keeperPass, newMemory, type PassReport } from "../ops/pass.js";
import { changes, droppedLine, familyLabel, settled } from "../ops/report.js";
import { type StatusRow, status } from "../ops/status.js";
import type { Out } from "./args.js";
import { keeperLog, type Log, type LogFormat } from "./log.js";
import { Quiet } from "./quiet.js";

export interface KeeperSettings {
  cacheDir: string;
  stateDir: string;
  resyncMs: number;
  /** Dead chains that take no live pod's port go after this long. */
  graceMs: number;
  /** The conflist the installer manages, as it last read it (PassOptions.managed). */
  managed: () => ManagedList | undefined;
  /** The node's CNI plugins (portmap's ADD runs again from here for pods of its nftables backend). */
  cniBinDir: string;
  /** Which iptables those plugins run, as far as the command line says (--iptables). */
  cniIptables: IptablesVariant | undefined;
  logFormat: LogFormat;
}

/** What started a pass, as the metrics name it (the log's lines keep their words). */
export type Trigger = "start" | "resync" | "address" | "firewall" | "conflist" | "confirming";
const TRIGGERS: Readonly<Record<string, Trigger>> = {
  start: "start",
  resync: "resync",
  "node address changed": "address",
  "rules changed": "firewall",
  "entry put back": "conflist",
  "conflist read": "conflist",
  confirming: "confirming",
};

/** A repair, by what it put right. */
export type RepairCause = "chain_rebuilt" | "rescoped_address" | "dead_chain_removed" | "entry_put_back";
/**
 * A failure, by what failed: a whole pass, a backend's read, a family's write, one pod's rules, the heartbeat, a
 * Kubernetes Event.
 */
export type FailureKind = "pass" | "read" | "write" | "pod" | "heartbeat" | "event";

/** One pass as the observers (metrics, Kubernetes Events) see it. */
export interface ObservedPass {
  trigger: Trigger;
  seconds: number;
  /** Undefined when the pass failed as a whole. */
  report: PassReport | undefined;
  repairs: Array<{ cause: RepairCause; pod: KubePod | undefined; family: 4 | 6 | undefined; place: string }>;
  failures: FailureKind[];
  /** Pods whose ADD was refused since the last pass (code 100: what they asked for can never be met). */
  refused: Refusal[];
  /** The node's hostPort mappings after the pass (status' rows), when an observer asked for them. */
  rows: StatusRow[] | undefined;
  /** Of `rows`, the closed ones that were not closed after the pass before. */
  closed: StatusRow[];
  /** Whether the pass completed (the heartbeat was written). */
  ok: boolean;
}

/** Loaded only when asked for (--metrics-address, an in-cluster service account): nothing else waits on them. */
export interface PassObserver {
  /** Whether it needs the node's status rows after every pass. */
  readonly wantsRows: boolean;
  /** The keeper watches; the nat tables it reads are of these iptables variants. */
  watching(variants: readonly IptablesVariant[]): void;
  passed(pass: ObservedPass): void;
  entryPutBack(): void;
}

// Events come in bursts (an address change is several netlink messages, a firewall reload many rule events).
const MIN_GAP_MS = 1_000;
const HEARTBEAT = "keeper.alive";
// `nft monitor` lines that touch what portmap writes: its chains, the built-in chains holding its jumps, the
// nat table as a whole (a flush, a restore), or portmap's own nftables tables (`ip`/`ip6 cni_hostport`: a
// rule, a chain, the table; `nft flush chain` shows as one deleted rule each). kube-proxy rewrites its KUBE-*
// chains all the time: those events alone start no pass.
export const NAT_EVENT = /\bip6? nat (?:CNI-|PREROUTING\b|OUTPUT\b|POSTROUTING\b)|\btable ip6? nat\b|\bcni_hostport\b/;

export class Keeper {
  private readonly memory = newMemory();
  private running: Promise<void> | undefined;
  private again: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastPass = 0;
  private lastProblems = "";
  private lastOthers = "";
  private closed = new Set<string>();
  private lastRows: { text: string; objects: readonly object[]; rows: StatusRow[] } | undefined;
  private stopped = false;
  private readonly log: Log;
  /** Whether a resync may skip its pass (quiet.ts); set up by run(). */
  private quiet: Quiet | undefined;
  /** The backends whose changes `nft monitor` reports (the keeper follows it): their rules need no resync read. */
  private observable = new Set<string>();
  /** The last full pass, said again by a resync that skips its own. */
  private lastObserved: ObservedPass | undefined;

  constructor(
    private readonly settings: KeeperSettings,
    stdout: Out,
    stderr: Out,
    private readonly observers: readonly PassObserver[] = [],
  ) {
    this.log = keeperLog(settings.logFormat, stdout, stderr);
  }

  /** The installer put our conflist entry back: a repair, and a pass for the pods started meanwhile. */
  entryPutBack(): void {
    for (const o of this.observers) o.entryPutBack();
    this.trigger("entry put back");
  }

  /** Starts the event sources and the resync; resolves once `signal` aborted and the running pass ended. */
  async run(signal: AbortSignal): Promise<void> {
    const log = (message: string) => this.log("warning", `keeper: ${message}`, { event: "monitor" });
    // Only global addresses are node IPs to the policy; a pod's veth gets a link-local one at every start.
    monitor(
      "ip",
      ["-o", "monitor", "address"],
      (line) => !/ scope (link|host)\b/.test(line) && this.trigger("node address changed"),
      signal,
      log,
    );
    const [nft, variants] = await Promise.all([hasNft(), natVariants()]);
    const { cacheDir, stateDir } = this.settings;
    // ADD and DEL make these when they first write; made here, they can be watched from the start.
    const state = [recordsDir(stateDir), refusalsDir(stateDir)];
    await Promise.all(state.map((dir) => mkdir(dir, { recursive: true, mode: 0o700 }).catch(() => {})));
    this.quiet = new Quiet([join(cacheDir, "results"), ...state], signal);
    if (nft) {
      const iptables = (await nodeBackends()).filter((b) => b.kind === "iptables");
      this.observable = new Set(["nftables", ...iptables.filter((_, i) => variants[i] === "nft").map((b) => b.name)]);
    }
    // portmap's nftables tables (a flush, a deleted table, its rules) and the nat table of iptables-nft both
    // show in `nft monitor`; iptables-legacy tells nobody about changes: the resync is its poll.
    if (nft)
      monitor(
        "nft",
        ["monitor", "ruleset"],
        (line) => NAT_EVENT.test(line) && this.trigger("rules changed"),
        signal,
        log,
      );
    const watched = [
      "node addresses",
      ...(nft && variants.includes("nft") ? ["the nat table (iptables-nft)"] : []),
      ...(nft ? ["portmap's nftables tables"] : []),
    ];
    const legacy = !nft || variants.includes("legacy") ? "; iptables-legacy sends no events" : "";
    for (const o of this.observers) o.watching(variants);
    this.log(
      "info",
      `keeper: watching ${watched.join(", ")}${legacy}: resync every ${this.settings.resyncMs / 1000} s`,
      { event: "watching" },
    );
    if (variants.length > 1)
      this.log("info", `keeper: ${bothVariantsLine(this.settings.cniIptables)}`, { event: "watching" });
    // The first pass ("start") comes when the installer has first read the conflist (its network is ours).
    const resync = setInterval(() => this.trigger("resync"), this.settings.resyncMs);
    await new Promise<void>((resolve) =>
      signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    this.stopped = true;
    clearInterval(resync);
    clearTimeout(this.timer);
    await this.running;
    // A keeper that ended is none: `install --uninstall` need not wait for its heartbeat to grow old.
    await rm(join(this.settings.stateDir, HEARTBEAT), { force: true });
  }

  /** Asks for a pass soon; one runs at a time, at most one per MIN_GAP_MS. */
  trigger(reason: string): void {
    if (reason !== "resync") this.quiet?.changed();
    // A pass already scheduled will see this change too; one running may have read before it.
    if (this.stopped || this.timer) return;
    if (reason === "resync" && !this.running && this.lastObserved && this.quiet?.skip()) {
      void this.quietPass(this.lastObserved);
      return;
    }
    if (this.running) {
      this.again ??= reason;
      return;
    }
    const wait = Math.max(0, this.lastPass + MIN_GAP_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass(reason).finally(() => {
        this.running = undefined;
        const next = this.again;
        this.again = undefined;
        if (next !== undefined) this.trigger(next);
      });
    }, wait);
  }

  private async pass(reason: string): Promise<void> {
    this.lastPass = Date.now();
    const begun = this.quiet?.begin();
    const started = performance.now();
    const trigger = TRIGGERS[reason] ?? "resync";
    const { cacheDir, stateDir, graceMs, managed, cniBinDir, cniIptables } = this.settings;
    const observed: ObservedPass = {
      trigger,
      seconds: 0,
      report: undefined,
      repairs: [],
      failures: [],
      refused: await takeRefusals(stateDir).catch(() => []),
      rows: undefined,
      closed: [],
      ok: false,
    };
    for (const r of observed.refused) {
      const pod = `${r.pod.namespace}/${r.pod.name}`;
      this.log("warning", `keeper: pod ${pod} refused: ${r.message}`, { event: "refused", trigger, pod });
    }
    let backends: readonly RuleBackend[] = [];
    try {
      backends = await nodeBackends();
      observed.report = await keeperPass(backends, { cacheDir, stateDir }, this.memory, {
        dryRun: false,
        rebuild: true,
        conflictsFirst: true,
        networks: [],
        scope: "ours",
        managed: managed(),
        graceMs,
        cniBinDir,
        cniIptables,
      });
    } catch (err) {
      this.problems([(err as Error).message]);
      observed.failures.push("pass");
    }
    const report = observed.report;
    if (report) {
      observed.ok = this.said(reason, trigger, report, observed);
      this.problems(report.problems);
      const others = report.otherNetworks.join(", ");
      if (others !== this.lastOthers && others !== "")
        this.log("info", `keeper: leaves alone network(s) ${others}: no portmap-hostip entry in their conflist`, {
          event: "left-alone",
        });
      this.lastOthers = others;
      if (report.pending) setTimeout(() => this.trigger("confirming"), CONFIRM_MS).unref();
      if (observed.ok && !(await this.heartbeat())) {
        observed.failures.push("heartbeat");
        observed.ok = false;
      }
      if (this.observers.some((o) => o.wantsRows)) {
        observed.rows = await this.rowsAfter(report, backends).catch((err: Error) => {
          this.problems([`status of the node's mappings: ${err.message}`]);
          return undefined;
        });
        if (observed.rows) observed.closed = this.newlyClosed(observed.rows, trigger);
      }
    }
    observed.seconds = (performance.now() - started) / 1000;
    for (const o of this.observers) o.passed(observed);
    this.lastObserved = observed;
    const read = report?.seen?.rules ?? [];
    // A place that reports no changes (iptables-legacy) is quiet only while it holds no nat table at all.
    const observable = read.every((r) => this.observable.has(r.backend.name) || !r.tablesExist);
    if (begun) this.quiet?.passed(begun, observed.ok && report !== undefined && settled(report), observable);
  }

  /** A resync with nothing to do (quiet.ts): the heartbeat, and the observers told of a pass like the last. */
  private async quietPass(last: ObservedPass): Promise<void> {
    const ok = await this.heartbeat();
    if (!ok) this.quiet?.changed();
    const observed: ObservedPass = {
      ...last,
      trigger: "resync",
      seconds: 0,
      repairs: [],
      failures: ok ? [] : ["heartbeat"],
      refused: [],
      closed: [],
      ok,
    };
    for (const o of this.observers) o.passed(observed);
  }

  /**
   * Writes the heartbeat the exec probe reads (checkKeeper) through a rename, so a probe never reads a
   * truncated one; false when it could not.
   */
  private heartbeat(): Promise<boolean> {
    const beat = JSON.stringify({ at: Date.now(), resyncMs: this.settings.resyncMs });
    const file = join(this.settings.stateDir, HEARTBEAT);
    return writeFile(`${file}.tmp`, beat)
      .then(() => rename(`${file}.tmp`, file))
      .then(
        () => true,
        (err: Error) => {
          this.problems([err.message]);
          return false;
        },
      );
  }

  /** Says what the pass did, a line per change; collects its repairs and failures. False when a write failed. */
  private said(reason: string, trigger: Trigger, report: PassReport, observed: ObservedPass): boolean {
    let ok = true;
    observed.failures.push(...report.unread.map((): FailureKind => "read"));
    for (const f of report.families) {
      const at = `keeper (${reason}): ${familyLabel(f)}`;
      const family = f.family;
      for (const c of changes(f)) {
        const fields = { trigger, ...(family === undefined ? {} : { family }) };
        if (c.repaired) {
          const cause: RepairCause = trigger === "address" ? "rescoped_address" : "chain_rebuilt";
          const a = c.repaired.attachment;
          observed.repairs.push({ cause, pod: kubePod(a.cniArgs), family, place: c.repaired.place });
          this.log("info", `${at}: ${c.text}`, {
            event: c.event,
            ...fields,
            pod: attachmentLabel(a),
            chain: c.repaired.place,
            cause,
          });
        } else if (c.removed) {
          const chain = c.removed.chain?.name;
          observed.repairs.push({ cause: "dead_chain_removed", pod: undefined, family, place: chain ?? "" });
          this.log("info", `${at}: ${c.text}`, {
            event: c.event,
            ...fields,
            pod: c.removed.containerId,
            ...(chain === undefined ? {} : { chain }),
            cause: "dead_chain_removed",
          });
        } else this.log("info", `${at}: ${c.text}`, { event: c.event, ...fields });
      }
      for (const s of f.skipped) {
        observed.failures.push("pod");
        this.log("info", `${at}: skipped ${s}`, { event: "skipped", trigger });
      }
      if (f.droppedUdp > 0) this.log("info", `${at}: ${droppedLine(f)}`, { event: "conntrack", trigger });
      if (f.failure !== undefined) {
        ok = false;
        observed.failures.push("write");
        this.log("error", `${at}: write failed: ${f.failure}`, { event: "write-failed", trigger });
      }
    }
    return ok;
  }

  /** The node's mappings after the pass: from what it read when it wrote nothing, else read again. */
  private async rowsAfter(report: PassReport, backends: readonly RuleBackend[]): Promise<StatusRow[] | undefined> {
    const seen = report.seen;
    if (!seen) return undefined;
    const wrote = report.families.some((f) => f.lines > 0 || f.repaired.length > 0 || f.removed.length > 0);
    let rules: readonly NodeRules[] = seen.rules;
    if (wrote) {
      const again = await Promise.all(backends.map((b) => b.read().catch(() => undefined)));
      rules = again.flatMap((r) => r ?? []);
    }
    // A resync that read what the last one read (the same rules, addresses, parsed cache entries and records)
    // has the same rows: at 1,000 pods they cost more than the pass itself.
    const inputs = {
      text: JSON.stringify([rules.map((r) => [r.backend.name, r.text]), seen.view.network]),
      objects: [...seen.view.cache.attachments, ...seen.view.records.values()],
    };
    const last = this.lastRows;
    if (last && last.text === inputs.text && sameItems(last.objects, inputs.objects)) return last.rows;
    const rows = status(rules, seen.view.cache, seen.view.network, seen.verdict, this.settings.managed());
    this.lastRows = { ...inputs, rows };
    return rows;
  }

  /** The closed mappings (per pod, protocol and port) not closed at the pass before; each said once. */
  private newlyClosed(rows: readonly StatusRow[], trigger: Trigger): StatusRow[] {
    const now = new Map<string, StatusRow>();
    for (const row of rows)
      if (row.state === "closed") now.set(`${row.network}\n${row.containerId}\n${row.protocol}\n${row.hostPort}`, row);
    const fresh = [...now].filter(([key]) => !this.closed.has(key)).map(([, row]) => row);
    this.closed = new Set(now.keys());
    for (const row of fresh)
      this.log(
        "warning",
        `keeper: ${row.pod}: hostPort ${row.hostPort}/${row.protocol} answers on no address: ${row.reason}`,
        {
          event: "closed",
          trigger,
          pod: row.pod,
          family: row.family,
          chain: row.chain,
          cause: row.reason ?? "",
        },
      );
    return fresh;
  }

  /** Problems are said when they change, not at every pass. */
  private problems(list: string[]): void {
    const text = list.map((p) => `keeper: ${p}`).join("\n");
    if (text !== this.lastProblems && text !== "")
      for (const p of list) this.log("warning", `keeper: ${p}`, { event: "problem" });
    this.lastProblems = text;
  }
}

const answers = async (tool: string): Promise<string | undefined> => {
  const r = await run(tool, ["--version"], { timeoutMs: 5_000 }).catch(() => undefined);
  return r?.code === 0 ? r.stdout : undefined;
};

/** Whether `nft` runs here (`nft monitor` then reports changes to nftables, iptables-nft's included). */
const hasNft = async (): Promise<boolean> => (await answers("nft")) !== undefined;

/** The variants of the nat tables the keeper reads (the `iptables` on PATH says which it is when run). */
async function natVariants(): Promise<IptablesVariant[]> {
  const iptables = (await nodeBackends()).filter((b) => b.kind === "iptables");
  const onPath = async () => ((await answers("iptables"))?.includes("nf_tables") ? "nft" : "legacy");
  return Promise.all(iptables.map((b) => b.variant ?? onPath()));
}

/** What the keeper says at start on a node with both variants: where a pod whose rules are gone goes. */
function bothVariantsLine(stated: IptablesVariant | undefined): string {
  const rest = stated ? `else in iptables-${stated} (--iptables)` : "else where the node's other pods are";
  return `reading the nat tables of iptables-legacy and iptables-nft: each pod is kept where its rules are; one whose rules are gone, where its ADD ran, ${rest}`;
}

/**
 * The exec probe (`install --check`): the keeper finished a pass within three resync periods (and 30 s).
 * Throws an Error saying what is wrong.
 */
export async function checkKeeper(stateDir: string, now = Date.now()): Promise<string> {
  const file = join(stateDir, HEARTBEAT);
  let beat: { at?: unknown; resyncMs?: unknown };
  try {
    beat = JSON.parse(await readFile(file, "utf8")) as typeof beat;
  } catch (err) {
    throw new Error(`no keeper heartbeat in ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof beat.at !== "number" || typeof beat.resyncMs !== "number")
    throw new Error(`${file} is not a keeper heartbeat`);
  const age = now - beat.at;
  if (age > 3 * beat.resyncMs + 30_000)
    throw new Error(`the keeper's last complete pass was ${Math.round(age / 1000)} s ago`);
  return `keeper: last complete pass ${Math.round(age / 1000)} s ago`;
}
