// Garbage collection of dead pods' rules: `portmap-hostip gc` (the result cache is the set of live attachments)
// is the keeper's pass rebuilding nothing, run twice around the grace; CNI GC (the runtime names the valid
// attachments of one network) deletes that network's other chains at once.
import * as z from "zod/mini";
import type { RuleBackend } from "../backends/backend.js";
import { parseEnvelope, parseShape } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { readResultCache } from "../host/cache.js";
import { keeperPass, newMemory, type PassReport } from "./pass.js";

export interface GcFlags {
  cacheDir: string;
  stateDir: string;
  dryRun: boolean;
  /** Only these networks' chains (none: every network the cache names, and portmap's nftables rules). */
  networks: readonly string[];
  graceSeconds: number;
}

/**
 * A pass finds the dead pods' rules; a second one, --grace seconds later and under the keeper lock as every
 * pass, deletes those still dead then (a pod whose ADD is running has its rules before libcni caches its
 * result). A chain is never deleted while its container's ADD may be running or its cache file is unreadable.
 * Undefined when no network is named, by --network or the cache: nothing says which chains are dead.
 */
export async function gc(backends: readonly RuleBackend[], flags: GcFlags): Promise<PassReport | undefined> {
  const cache = await readResultCache(flags.cacheDir);
  // A wrong --cache-dir must not make every chain of a --network look dead.
  if (!cache.present)
    throw new Error(`no result cache at ${cache.dir} (--cache-dir): refusing to judge which chains are dead`);
  if (flags.networks.length === 0 && cache.attachments.length === 0) return undefined;
  const memory = newMemory();
  const graceMs = flags.dryRun ? 0 : flags.graceSeconds * 1000;
  const pass = () =>
    keeperPass(backends, { cacheDir: flags.cacheDir, stateDir: flags.stateDir }, memory, {
      dryRun: flags.dryRun,
      rebuild: false,
      networks: flags.networks,
      scope: "cached",
      managed: undefined,
      graceMs,
      conflictsFirst: false,
      // Rebuilding nothing, it never runs portmap, nor asks where a pod without rules would go.
      cniBinDir: "",
      cniIptables: undefined,
    });
  const first = await pass();
  if (first.dead === 0 || graceMs === 0) return first;
  await new Promise((r) => setTimeout(r, graceMs));
  return pass();
}

const AttachmentsSchema = z.array(z.looseObject({ containerID: z.string(), ifname: z.optional(z.string()) }));
const GcConfSchema = z.looseObject({
  "cni.dev/valid-attachments": z.optional(AttachmentsSchema),
  "cni.dev/attachments": z.optional(AttachmentsSchema),
});

/**
 * CNI GC: delete this network's chains whose container is in no valid attachment. Never another network's, and
 * never portmap's nftables rules (they name no network).
 */
export async function cniGc(backends: readonly RuleBackend[], json: unknown): Promise<void> {
  const { name } = parseEnvelope(json);
  const conf = parseShape(GcConfSchema, json);
  const valid = conf["cni.dev/valid-attachments"] ?? conf["cni.dev/attachments"];
  // Without the list, nothing says which attachments are dead.
  if (valid === undefined) return;
  const live = new Set(valid.map((a) => a.containerID));
  const problems: string[] = [];
  let read = 0;
  for (const backend of backends.filter((b) => b.kind === "iptables")) {
    const rules = await backend.read();
    problems.push(...rules.problems);
    read += rules.families.length;
    const collected = await rules.collect(
      (network, id) => (network === name && !live.has(id) ? "dead" : "live"),
      false,
    );
    problems.push(...collected.flatMap((c) => c.leftAlone));
  }
  if (read === 0) throw new CniError(Code.IoFailure, problems.join("; "));
  for (const line of problems) process.stderr.write(`portmap-hostip GC: ${line}\n`);
}
