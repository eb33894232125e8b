// The model test's state: every pod of the run (live or deleted) and, per family, the set of rule states
// (coverage keys, policy.ts) its rules may be in now. A step narrows or moves those sets as the node must
// move (an ADD, a DEL, a flush, a restore, reconcile, gc); while the keeper runs, any live pod may have been
// healed and any dead pod's rules deleted at any moment, so those states are added. After each step the node
// is read and every pod's rules must be one of its states; the sets then collapse to what was read. Pure.
import {
  claim,
  claimsMeet,
  coverageKey,
  decided,
  FAMILIES,
  type Family,
  type Mapping,
  type NetworkSpec,
  type NodeAddresses,
  type PodAddresses,
  type PodAsk,
  type RuleTable,
  unscoped,
} from "./policy.js";

/** The keeper's grace for dead pods' rules that take no live pod's traffic (src/cli/install.ts). */
export const KEEPER_GRACE_MS = 30_000;
/** How long an "added" record protects a container's rules from gc and the keeper (host/liveness.ts). */
export const ADD_RECORD_TTL_MS = 5 * 60_000;
/**
 * How long after the node's addresses change a keeper pass that read them before may still write what they gave
 * (the change's event then brings the pass that scopes by the new ones).
 */
const PASS_IN_FLIGHT_MS = 10_000;

export interface ModelPod {
  /** Short name ("p12"); its server answers `pod-<name>`. */
  name: string;
  id: string;
  net: NetworkSpec;
  ask: PodAsk;
  ips: PodAddresses;
  /** Whether its ADD ran with our entry in the conflist. */
  withEntry: boolean;
  /** The plugin's record of the container: ADD with our entry leaves "added", DEL with it "deleted". */
  record: { state: "added" | "deleted"; at: number } | undefined;
  live: boolean;
  /** Per family, the rule states its rules may be in now (in its network's table). */
  allowed: Record<Family, Set<string>>;
  /** For a deleted pod: when its rules came back (an old table restored). */
  since: number;
}

/** One family's rules of one pod as read from the node. */
export type Observed = Map<string, Record<Family, string>>;

export interface Violation {
  pod: string;
  what: string;
}

export class Model {
  node: { 4: string[]; 6: string[] };
  /** The addresses before the last change, until a pass that read them must have written. */
  private before: { node: NodeAddresses; until: number } | undefined;
  keeper = { running: false, since: 0 };
  /** Our entry in the managed conflist: "maybe" while a running keeper may have put it back. */
  entryOnDisk: "present" | "absent" | "maybe" = "present";
  readonly pods: ModelPod[] = [];
  /** Per network, since when it has had a live pod (again). */
  readonly namedSince = new Map<string, number>();

  constructor(node: NodeAddresses) {
    this.node = { 4: [...node[4]], 6: [...node[6]] };
  }

  live(): ModelPod[] {
    return this.pods.filter((p) => p.live);
  }

  /** The node's addresses of a family change (a step adds or removes one). */
  setAddresses(family: Family, addresses: string[], now: number): void {
    this.before = { node: { 4: [...this.node[4]], 6: [...this.node[6]] }, until: now + PASS_IN_FLIGHT_MS };
    this.node[family] = addresses;
  }

  /** The rules the policy gives a live pod now with our entry (or the keeper's): undefined when it refuses it. */
  healed(pod: ModelPod, family: Family, node: NodeAddresses = this.node): string | undefined {
    const d = decided(pod.net, pod.ask, pod.ips, family, node);
    return d === "refused" ? undefined : d;
  }

  /** Whether `ask` on network `net` would share an address and port with a live pod (or a Service, for "any"). */
  collides(net: NetworkSpec, ask: PodAsk, families: readonly Family[], unscoped: boolean): boolean {
    const mine = (m: Mapping) => (unscoped && m.hostIP === "" ? new Set(["*"]) : claim(net, ask, m, families));
    return ask.mappings.some((m) =>
      this.live().some((p) =>
        p.ask.mappings.some(
          (o) => o.proto === m.proto && o.hostPort === m.hostPort && claimsMeet(mine(m), this.claimNow(p, o)),
        ),
      ),
    );
  }

  /** A live pod's claim on a mapping: its policy's, or every address while its rules may be unscoped. */
  private claimNow(p: ModelPod, m: Mapping): Set<string> {
    const families = FAMILIES.filter((f) => p.ips[f] !== undefined);
    const open = FAMILIES.some((f) => [...p.allowed[f]].some((c) => c.includes(`${m.proto}/${m.hostPort}@*`)));
    return open ? new Set(["*"]) : claim(p.net, p.ask, m, families);
  }

  /** Rules of a dead pod that take traffic a live pod may be given: they must go first. */
  harmful(family: Family, coverage: string): boolean {
    const mine = entriesOf(coverage);
    return this.live().some((p) => {
      const theirs = [...p.allowed[family], this.healed(p, family) ?? ""].flatMap(entriesOf);
      return mine.some((a) =>
        theirs.some((b) => a.port === b.port && (a.dest === "*" || b.dest === "*" || a.dest === b.dest)),
      );
    });
  }

  /**
   * Whether the keeper, reconcile and gc may delete a dead pod's rules now: judged (portmap's nftables rules
   * always; a chain when its network still has a live pod or its DEL is recorded) and not protected by an
   * "added" record young enough that its ADD may still be running.
   */
  mayGo(p: ModelPod, now: number): boolean {
    if (p.record?.state === "added" && now - p.record.at < ADD_RECORD_TTL_MS) return false;
    return p.net.table === "nftables" || p.record?.state === "deleted" || this.live().some((l) => l.net === p.net);
  }

  /**
   * After a step, while the keeper runs: it may have healed any live pod and deleted any dead pod's rules. It
   * heals a pod of portmap's nftables backend whose rules are gone by running portmap's ADD again, then scoping
   * what it wrote: meanwhile the pod also has portmap's own rules, beside what was left of its own.
   */
  keeperMayAct(): void {
    if (!this.keeper.running) return;
    const before = this.before && Date.now() < this.before.until ? this.before.node : undefined;
    for (const p of this.pods)
      for (const f of FAMILIES) {
        const h = p.live ? this.healed(p, f) : "";
        if (p.live && p.net.table === "nftables") {
          const bare = unscoped(p.ask, p.ips, f);
          for (const c of [...p.allowed[f]]) p.allowed[f].add(coverageKey([...entryList(c), ...entryList(bare)]));
        }
        if (h !== undefined) p.allowed[f].add(h);
        // A pass that read the addresses before their change may write what they gave, until the next one.
        const stale = p.live && before ? this.healed(p, f, before) : undefined;
        if (stale !== undefined) p.allowed[f].add(stale);
      }
  }

  /** A pod's rules in these families of its table are now exactly `to(pod, family)`. */
  set(
    pods: readonly ModelPod[],
    table: RuleTable,
    families: readonly Family[],
    to: (p: ModelPod, f: Family) => string,
  ) {
    for (const p of pods.filter((x) => x.net.table === table))
      for (const f of families) p.allowed[f] = new Set([to(p, f)]);
  }

  /** A firewall reload (nat flush) or a deleted nftables table: every pod's rules there are gone. */
  flushed(table: RuleTable, families: readonly Family[]): void {
    this.set(this.pods, table, families, () => "");
  }

  /**
   * An old table restored: the rules each pod had when it was saved (`saved`), none for pods added since; a
   * deleted pod's rules coming back count as new from `now` for the keeper's grace.
   */
  restored(table: RuleTable, families: readonly Family[], saved: Observed, now: number): void {
    this.set(this.pods, table, families, (p, f) => saved.get(p.id)?.[f] ?? "");
    for (const p of this.pods)
      if (!p.live && p.net.table === table && families.some((f) => (saved.get(p.id)?.[f] ?? "") !== "")) p.since = now;
  }

  /**
   * reconcile: every live pod the policy allows is rebuilt (a pod added without our entry by the installed
   * conflist's entry, or with none there as portmap alone wrote it); a dead pod's rules that take a live pod's
   * traffic go, others may go.
   */
  reconciled(fallback: boolean | "maybe", now: number): void {
    for (const p of this.pods)
      for (const f of FAMILIES) {
        if (p.live) {
          const h = this.healed(p, f);
          // Without our entry in its cached conflist or the installed one, its rules are portmap's own again.
          const bare = unscoped(p.ask, p.ips, f);
          if (p.withEntry || fallback === true) {
            if (h !== undefined) p.allowed[f] = new Set([h]);
          } else if (fallback === false) p.allowed[f] = new Set([bare]);
          else for (const c of [h, bare]) if (c !== undefined) p.allowed[f].add(c);
        } else if (this.mayGo(p, now)) {
          const harmful = [...p.allowed[f]].some((c) => c !== "" && this.harmful(f, c));
          if (harmful) p.allowed[f] = new Set([""]);
          else p.allowed[f].add("");
        }
      }
  }

  /** gc: every dead pod's rules that may go, go. */
  collected(now: number): void {
    for (const p of this.pods.filter((x) => !x.live && this.mayGo(x, now)))
      for (const f of FAMILIES) p.allowed[f] = new Set([""]);
  }

  /** When a dead pod's rules must be gone at the latest with the keeper running (undefined: they may stay). */
  keeperDeadline(p: ModelPod, now: number): number | undefined {
    if (!this.mayGo(p, now)) return undefined;
    // The keeper counts the grace from when it first judged them: since they came back, it started, or their
    // network got a live pod again (without a recorded DEL, only then are they judged).
    const named = p.record?.state === "deleted" ? 0 : (this.namedSince.get(p.net.name) ?? 0);
    return Math.max(p.since, this.keeper.since, named) + KEEPER_GRACE_MS;
  }

  /**
   * Compares what was read with the allowed states; every pod's states then collapse to what was read (and
   * what a running keeper may still do). Returns what broke an invariant.
   */
  observe(read: Observed, now: number, slackMs: number): Violation[] {
    const out: Violation[] = [];
    for (const p of this.pods)
      for (const f of FAMILIES) {
        const actual = read.get(p.id)?.[f] ?? "";
        if (!p.allowed[f].has(actual))
          out.push({
            pod: p.name,
            what: `IPv${f} rules ${show(actual)}, expected ${[...p.allowed[f]].map(show).join(" or ")}`,
          });
        else if (!p.live && actual !== "" && this.keeper.running) {
          const deadline = this.keeperDeadline(p, now);
          if (deadline !== undefined && now > deadline + slackMs)
            out.push({
              pod: p.name,
              what: `IPv${f} rules of the deleted pod survive the keeper's grace by ${now - deadline} ms: ${show(actual)}`,
            });
        }
        p.allowed[f] = new Set([actual]);
      }
    this.keeperMayAct();
    return out;
  }

  /**
   * With the keeper running: what it must have done by now (each live pod healed, dead pods' rules that take a
   * live pod's traffic gone, our entry back). Empty once settled.
   */
  unsettled(read: Observed): Violation[] {
    const out: Violation[] = [];
    for (const p of this.pods)
      for (const f of FAMILIES) {
        const actual = read.get(p.id)?.[f] ?? "";
        if (p.live) {
          const h = this.healed(p, f);
          if (h !== undefined && actual !== h)
            out.push({ pod: p.name, what: `IPv${f} rules ${show(actual)}, the policy says ${show(h)}` });
        } else if (actual !== "" && this.harmful(f, actual) && this.mayGo(p, Date.now()))
          out.push({
            pod: p.name,
            what: `IPv${f} rules of the deleted pod take a live pod's traffic: ${show(actual)}`,
          });
      }
    return out;
  }
}

const entryList = (coverage: string): string[] => (coverage === "" ? [] : coverage.split(" "));

export const show = (coverage: string): string => (coverage === "" ? "(none)" : `[${coverage}]`);

/** The entries of a coverage key: port (`tcp/8080`), destination and target. */
export function entriesOf(coverage: string): Array<{ port: string; dest: string; target: string }> {
  if (coverage === "") return [];
  return coverage.split(" ").map((e) => {
    const at = e.indexOf("@");
    const to = e.indexOf(">");
    return { port: e.slice(0, at), dest: e.slice(at + 1, to), target: e.slice(to + 1) };
  });
}

/** A new pod's rule states: as the plugin scoped them, or as portmap alone wrote them. */
export function newPod(
  p: Omit<ModelPod, "allowed" | "since" | "live">,
  coverage: Record<Family, string>,
  now: number,
): ModelPod {
  const allowed = { 4: new Set([coverage[4]]), 6: new Set([coverage[6]]) };
  return { ...p, live: true, allowed, since: now };
}
