// `portmap-hostip reconcile`: the keeper's pass, once, without the grace-delayed gc (dead pods' rules that take a
// live pod's port go, others are gc's): every cached attachment whose rules are missing or wrong is rebuilt
// (after a firewall reload or a flush), with the shared chains portmap needs, one transaction per family.
import type { RuleBackend } from "../backends/backend.js";
import type { IptablesVariant } from "../core/node.js";
import { CONFIRM_MS, keeperPass, newMemory, type PassReport } from "./pass.js";

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
  /** Which iptables the node's CNI plugins run, as --iptables states it (PassOptions.cniIptables). */
  cniIptables: IptablesVariant | undefined;
}

/**
 * What needs a second look (a container without a record whose rules need a rebuild, a dead chain without a
 * record of its DEL that takes a live pod's port) gets it from later passes, at most three.
 */
export async function reconcile(backends: readonly RuleBackend[], flags: ReconcileFlags): Promise<PassReport> {
  const memory = newMemory();
  const options = {
    dryRun: flags.dryRun,
    rebuild: true,
    networks: flags.networks,
    fallbackEntry: flags.fallbackEntry,
    graceMs: Infinity,
    conflictsFirst: true,
    cniBinDir: flags.cniBinDir,
    cniIptables: flags.cniIptables,
  };
  const dirs = { cacheDir: flags.cacheDir, stateDir: flags.stateDir };
  let report = await keeperPass(backends, dirs, memory, options);
  for (let look = 0; report.pending && look < 3; look++) {
    await new Promise((r) => setTimeout(r, CONFIRM_MS));
    report = await keeperPass(backends, dirs, memory, options);
  }
  return report;
}
