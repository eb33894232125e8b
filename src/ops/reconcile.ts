// `portmap-hostip reconcile`: the keeper's pass, once, without the grace-delayed gc (dead pods' rules that take a
// live pod's port go, others are gc's): every cached attachment of our networks whose rules are missing or wrong is
// rebuilt (after a firewall reload or a flush), with the shared chains portmap needs, one transaction per family.
import type { FamilyOutcome, ManagedList, Removed, RuleBackend } from "../backends/backend.js";
import type { IptablesVariant } from "../core/node.js";
import { CONFIRM_MS, keeperPass, newMemory, type PassReport } from "./pass.js";

export interface ReconcileFlags {
  cacheDir: string;
  stateDir: string;
  dryRun: boolean;
  /** Only these networks' attachments (none: every network of ours). */
  networks: readonly string[];
  /** The installed conflist (PassOptions.managed). */
  managed: ManagedList | undefined;
  /** Where the node's portmap is (PassOptions.cniBinDir). */
  cniBinDir: string;
  /** Which iptables the node's CNI plugins run, as --iptables states it (PassOptions.cniIptables). */
  cniIptables: IptablesVariant | undefined;
}

/** One family's changes over every pass of a reconcile. */
export interface ReconcileFamily extends FamilyOutcome {
  /** How many transactions were written (a dry run: how many a real run writes). */
  transactions: number;
}

export interface ReconcileReport extends Omit<PassReport, "families"> {
  families: ReconcileFamily[];
}

/**
 * What needs a second look (a container without a record whose rules need a rebuild, a dead chain without a
 * record of its DEL that takes a live pod's port) gets it from later passes, at most three; the report holds the
 * changes of every pass.
 */
export async function reconcile(backends: readonly RuleBackend[], flags: ReconcileFlags): Promise<ReconcileReport> {
  const memory = newMemory();
  const options = {
    dryRun: flags.dryRun,
    rebuild: true,
    networks: flags.networks,
    scope: "ours" as const,
    managed: flags.managed,
    graceMs: Infinity,
    conflictsFirst: true,
    cniBinDir: flags.cniBinDir,
    cniIptables: flags.cniIptables,
  };
  const dirs = { cacheDir: flags.cacheDir, stateDir: flags.stateDir };
  const reports = [await keeperPass(backends, dirs, memory, options)];
  for (let look = 0; reports.at(-1)?.pending && look < 3; look++) {
    await new Promise((r) => setTimeout(r, CONFIRM_MS));
    reports.push(await keeperPass(backends, dirs, memory, options));
  }
  return mergePasses(reports, flags.dryRun);
}

const unique = <T>(items: readonly T[], key: (item: T) => string = String): T[] => {
  const seen = new Set<string>();
  return items.filter((item) => !seen.has(key(item)) && seen.add(key(item)));
};

/**
 * The passes of one reconcile as one report: each family's changes in the order they were made. A dry run writes
 * nothing, so each of its later passes plans again what the earlier ones planned (shared chains, pods with a
 * record) beside what its second look adds: only what is new counts, and its last plan is everything a real run
 * writes over all its passes.
 */
export function mergePasses(reports: readonly PassReport[], dryRun: boolean): ReconcileReport {
  const last = reports.at(-1) as PassReport;
  const byFamily = new Map<string, FamilyOutcome[]>();
  for (const report of reports)
    for (const f of report.families) {
      const key = `${f.backend}\n${f.family}`;
      byFamily.set(key, [...(byFamily.get(key) ?? []), f]);
    }
  const families = [...byFamily.values()].map((passes): ReconcileFamily => {
    const final = passes.at(-1) as FamilyOutcome;
    const all = <T>(pick: (f: FamilyOutcome) => readonly T[]): T[] => passes.flatMap(pick);
    const removedKey = (r: Removed) => JSON.stringify(r);
    const changes = (f: FamilyOutcome) => [...f.removed.map(removedKey), ...f.actions];
    const seen = new Set<string>();
    // The passes whose changes are new: a real run's writes, a dry run's looks that found more.
    const writing = passes.filter((f) => {
      const fresh = changes(f).filter((c) => !seen.has(c));
      for (const c of fresh) seen.add(c);
      return dryRun ? fresh.length > 0 : f.lines > 0 && f.failure === undefined;
    });
    const earlier = passes.slice(0, -1).reduce((n, f) => n + f.rebuilt, 0);
    return {
      ...final,
      removed: dryRun
        ? unique(
            all((f) => f.removed),
            removedKey,
          )
        : all((f) => f.removed),
      leftAlone: unique(all((f) => f.leftAlone)),
      actions: dryRun ? unique(all((f) => f.actions)) : all((f) => f.actions),
      // Pods rebuilt by an earlier pass are among the last pass's correct ones.
      correct: dryRun ? final.correct : Math.max(0, final.correct - earlier),
      rebuilt: dryRun ? final.rebuilt : earlier + final.rebuilt,
      lines: dryRun ? final.lines : passes.reduce((n, f) => n + f.lines, 0),
      payload: dryRun ? final.payload : passes.map((f) => f.payload).join(""),
      skipped: unique(all((f) => f.skipped)),
      failure: unique(all((f) => (f.failure === undefined ? [] : [f.failure]))).join("\n") || undefined,
      droppedUdp: passes.reduce((n, f) => n + f.droppedUdp, 0),
      transactions: writing.length,
    };
  });
  return { ...last, families, problems: unique(reports.flatMap((r) => r.problems)) };
}
