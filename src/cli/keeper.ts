// The node's keeper (`install --watch --cache-dir DIR`): beside the installer's conflist watch, it keeps every
// cached pod's hostPort rules as they must be. A pass (ops/pass.ts) runs
//   - at start, and every --resync seconds (iptables-legacy tells nobody about changes: this is its poll);
//   - when the kernel says something changed: a node address (`ip -o monitor address`), the nat table of
//     iptables-nft or portmap's nftables tables (`nft monitor ruleset`);
//   - when the installer has put our entry back (pods started meanwhile are scoped by this entry);
//   - CONFIRM_MS after a pass that left a container unconfirmed.
// Passes never overlap; events during one coalesce into one more, at most one per MIN_GAP_MS.
// Every change is one line on stdout; SIGTERM (the signal) lets the running pass finish and ends it.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { nodeBackends } from "../backends/registry.js";
import type { IptablesVariant } from "../core/node.js";
import { monitor } from "../host/monitor.js";
import { run } from "../host/run.js";
import { CONFIRM_MS, keeperPass, newMemory, type PassReport } from "../ops/pass.js";
import { changeLines, droppedLine, familyLabel } from "../ops/report.js";
import type { Out } from "./args.js";

export interface KeeperSettings {
  cacheDir: string;
  stateDir: string;
  resyncMs: number;
  /** Dead chains that take no live pod's port go after this long. */
  graceMs: number;
  /** Our entry, for pods whose cached conflist lacks it. */
  entry: Record<string, unknown>;
  /** The node's CNI plugins (portmap's ADD runs again from here for pods of its nftables backend). */
  cniBinDir: string;
  /** Which iptables those plugins run, as far as the command line says (--iptables). */
  cniIptables: IptablesVariant | undefined;
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
  private stopped = false;

  constructor(
    private readonly settings: KeeperSettings,
    private readonly stdout: Out,
    private readonly stderr: Out,
  ) {}

  /** Starts the event sources and the resync; resolves once `signal` aborted and the running pass ended. */
  async run(signal: AbortSignal): Promise<void> {
    const log = (message: string) => this.stderr(`keeper: ${message}\n`);
    // Only global addresses are node IPs to the policy; a pod's veth gets a link-local one at every start.
    monitor(
      "ip",
      ["-o", "monitor", "address"],
      (line) => !/ scope (link|host)\b/.test(line) && this.trigger("node address changed"),
      signal,
      log,
    );
    const [nft, variants] = await Promise.all([hasNft(), natVariants()]);
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
    this.stdout(`keeper: watching ${watched.join(", ")}${legacy}: resync every ${this.settings.resyncMs / 1000} s\n`);
    if (variants.length > 1) this.stdout(`keeper: ${bothVariantsLine(this.settings.cniIptables)}\n`);
    const resync = setInterval(() => this.trigger("resync"), this.settings.resyncMs);
    this.trigger("start");
    await new Promise<void>((resolve) =>
      signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    this.stopped = true;
    clearInterval(resync);
    clearTimeout(this.timer);
    await this.running;
  }

  /** Asks for a pass soon; one runs at a time, at most one per MIN_GAP_MS. */
  trigger(reason: string): void {
    // A pass already scheduled will see this change too; one running may have read before it.
    if (this.stopped || this.timer) return;
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
    const { cacheDir, stateDir, graceMs, entry, cniBinDir, cniIptables } = this.settings;
    let report: PassReport;
    try {
      report = await keeperPass(await nodeBackends(), { cacheDir, stateDir }, this.memory, {
        dryRun: false,
        rebuild: true,
        conflictsFirst: true,
        networks: [],
        fallbackEntry: entry,
        graceMs,
        cniBinDir,
        cniIptables,
      });
    } catch (err) {
      this.problems([(err as Error).message]);
      return;
    }
    let failed = false;
    for (const f of report.families) {
      const at = `keeper (${reason}): ${familyLabel(f)}`;
      for (const action of [
        ...changeLines(f),
        ...f.skipped.map((s) => `skipped ${s}`),
        ...(f.droppedUdp > 0 ? [droppedLine(f)] : []),
      ])
        this.stdout(`${at}: ${action}\n`);
      if (f.failure !== undefined) {
        failed = true;
        this.stderr(`${at}: write failed: ${f.failure}\n`);
      }
    }
    this.problems(report.problems);
    if (report.pending) setTimeout(() => this.trigger("confirming"), CONFIRM_MS).unref();
    if (!failed)
      await writeFile(
        join(stateDir, HEARTBEAT),
        JSON.stringify({ at: Date.now(), resyncMs: this.settings.resyncMs }),
      ).catch((err: Error) => this.problems([err.message]));
  }

  /** Problems are said when they change, not at every pass. */
  private problems(list: string[]): void {
    const text = list.map((p) => `keeper: ${p}\n`).join("");
    if (text !== this.lastProblems && text !== "") this.stderr(text);
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
