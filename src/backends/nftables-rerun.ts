// The keeper's (and so `reconcile`'s) work on one attachment of portmap's nftables backend (nftables-node.ts).
// After a wiped table there is nothing left to read, and what portmap writes there depends on its version
// (v1.6.0, v1.6.1–v1.8 and v1.9 lay the tables out differently; the nftables backend also ignores options the
// iptables one has): instead of rebuilding that, run the node's own portmap ADD again from the cached
// attachment, as the runtime ran it, then scope its rules exactly as our ADD does. A pod whose rules are all
// still there is only re-scoped (portmap's ADD would append its rules a second time).

import type { NetConf } from "../core/config.js";
import { CniError, Code, RulesChanged } from "../core/errors.js";
import { FAMILIES, type Family } from "../core/ip.js";
import { type CniEnv, podLabel } from "../core/names.js";
import type { NodeNetwork } from "../core/node.js";
import { podFamilies } from "../core/result.js";
import { commentOf, type Rule, ruleKey } from "../core/rule.js";
import type { CachedAttachment } from "../host/cache.js";
import { run } from "../host/run.js";
import { batch, deleteCommand, hostportsPlace, MASQ_CHAIN, NEVER, podRules } from "../nftables/json.js";
import { applyBatch, readHostports } from "../nftables/nft.js";
import { entryConf, ourConf } from "../pipeline/attachment.js";
import { dropStaleUdp } from "../pipeline/conntrack.js";
import { changed, planScoped } from "../pipeline/plan.js";
import { podScoping } from "../pipeline/pod.js";
import type { ChainPlan, RuleBackend } from "./backend.js";
import { planPodChains, scopePod } from "./scope-pod.js";

// portmap's ADD takes milliseconds; a portmap that hangs must not hold the whole reconcile.
const PORTMAP_LIMIT_MS = 30_000;

const portmapEntry = (a: CachedAttachment) => a.plugins.find((p) => p.type === "portmap");

/** The sandbox's namespace path, as the cached result's interface names it (libcni's cache has no CNI_NETNS). */
function sandboxOf(a: CachedAttachment): string {
  const interfaces = (a.result?.["interfaces"] ?? []) as Array<{ name?: unknown; sandbox?: unknown }>;
  const sandbox = interfaces.find((i) => i.name === a.ifname && typeof i.sandbox === "string")?.sandbox;
  if (typeof sandbox !== "string" || sandbox === "")
    throw new Error(`the cached result names no sandbox for interface ${a.ifname}`);
  return sandbox;
}

function attachmentEnv(a: CachedAttachment): CniEnv {
  return { command: "ADD", containerId: a.containerId, netns: sandboxOf(a), ifname: a.ifname, args: a.cniArgs };
}

async function runPortmapAdd(a: CachedAttachment, cniBinDir: string): Promise<void> {
  const env = attachmentEnv(a);
  const result = await run(`${cniBinDir}/portmap`, [], {
    input: JSON.stringify(entryConf(a, portmapEntry(a) as Record<string, unknown>)),
    env: {
      PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: env.containerId,
      CNI_NETNS: env.netns,
      CNI_IFNAME: env.ifname,
      CNI_ARGS: [...a.cniArgs].map(([k, v]) => `${k}=${v}`).join(";"),
      CNI_PATH: cniBinDir,
    },
    timeoutMs: PORTMAP_LIMIT_MS,
  });
  // On failure its CNI error is the last JSON on stdout (it may print a result first).
  if (result.code !== 0)
    throw new Error(
      `portmap ADD failed (exit ${result.code}): ${(/\{[^{]*\}\s*$/.exec(result.stdout)?.[0] ?? result.stderr).replace(/\s+/g, " ").trim()}`,
    );
}

/**
 * portmap's ADD again appends the pod's masquerading rules beside those a flush of `hostports` (or a deleted
 * table of the other family) left: one copy of each stays. A batch that lost a race (the pod's DEL) is left
 * to the next pass.
 */
async function dropRepeatedMasquerade(containerId: string): Promise<void> {
  const commands = (
    await Promise.all(
      FAMILIES.map(async (family) => {
        const seen = new Set<string>();
        const mine = ((await readHostports(family, MASQ_CHAIN)) ?? []).filter((r) => commentOf(r) === containerId);
        return mine.flatMap((r) => {
          const key = ruleKey(r);
          if (!seen.has(key)) {
            seen.add(key);
            return [];
          }
          return [deleteCommand(family, r)];
        });
      }),
    )
  ).flat();
  if (commands.length === 0) return;
  await applyBatch(batch(commands)).catch((err: unknown) => {
    if (!(err instanceof RulesChanged)) throw err;
  });
}

const only = (backend: RuleBackend) => async () => [backend];

const isMissing = (err: unknown) => err instanceof CniError && err.code === Code.PortmapRulesMissing;

const correct: NftReconciled = { state: "correct", text: "correct, left alone" };

/** The node's addresses and the rules of every `hostports` chain, as a pass read them. */
export interface AsRead {
  network: NodeNetwork;
  hostports: ReadonlyMap<Family, readonly Rule[]>;
}

/** Pure: whether the pod's rules as read are what the policy makes of them (else the pod is planned anew). */
export function correctAsRead(ours: NetConf, env: CniEnv, read: AsRead): boolean {
  if (ours.portMappings.length === 0) return true;
  const pod = podLabel(env);
  const scoping = podScoping(ours, pod, podFamilies(ours.prevResult, env.ifname));
  if (!scoping) return true;
  const current = scoping.families.map((f) => podRules(read.hostports.get(f) ?? [], env.containerId));
  try {
    const target = { closedDestination: NEVER, where: hostportsPlace };
    return !planScoped(scoping, pod, read.network, current, target).plans.some(changed);
  } catch {
    return false; // rules missing in a family: planned anew, and portmap's ADD runs again
  }
}

/** What reconcileNft did (or would do): `waiting` when portmap's ADD must run again but may not yet. */
export interface NftReconciled {
  state: "correct" | "changed" | "waiting";
  text: string;
}

/**
 * Reconciles one attachment of portmap's nftables backend. portmap's ADD runs again when a family lacks the
 * pod's rules (`present`: the pod has rules in some family), if `mayRerun()` allows it (a pod without a
 * record of its ADD may be in its DEL: the keeper confirms first).
 */
export async function reconcileNft(
  backend: RuleBackend,
  a: CachedAttachment,
  present: boolean,
  opts: {
    cniBinDir: string;
    dryRun: boolean;
    fallback: Record<string, unknown> | undefined;
    mayRerun: () => boolean;
    warn: (text: string) => void;
    /** What the pass read: a pod found correct in it costs no nft call of its own. */
    read?: AsRead;
  },
): Promise<NftReconciled> {
  const ours = ourConf(a, opts.fallback);
  const env = attachmentEnv(a);
  if (present && ours && opts.read && correctAsRead(ours, env, opts.read)) return correct;
  const rerun = `portmap's ADD again (${opts.cniBinDir}/portmap: its nftables rules are gone)`;
  const waiting: NftReconciled = {
    state: "waiting",
    text: "its nftables rules are missing, and its DEL may be under way: confirmed by a second look",
  };
  const change = (text: string): NftReconciled => ({ state: "changed", text });
  if (opts.dryRun) {
    if (!present)
      return opts.mayRerun() ? change(`would run ${rerun}${ours ? ", then scope its rules" : ""}`) : waiting;
    try {
      const wrong = ours ? (await planPodChains(ours, env, only(backend))).plans.filter(changed) : [];
      return wrong.length > 0
        ? change(`would re-scope its nftables rules (IPv${wrong.map((p) => p.family).join(", IPv")})`)
        : correct;
    } catch (err) {
      if (!isMissing(err)) throw err;
      if (!opts.mayRerun()) return waiting;
      return change(`would run ${rerun.replace("are gone", "are gone in a family")}, then scope its rules`);
    }
  }
  let reran = !present;
  if (reran) {
    if (!opts.mayRerun()) return waiting;
    await runPortmapAdd(a, opts.cniBinDir);
    await dropRepeatedMasquerade(a.containerId);
  }
  let written: ChainPlan[] = [];
  if (ours) {
    try {
      written = (await scopePod(ours, env, only(backend))).written;
    } catch (err) {
      // Rules gone in one family only (a table deleted): portmap writes them again (and appends a second
      // copy in the other family, which scoping folds into one).
      if (reran || !isMissing(err)) throw err;
      if (!opts.mayRerun()) return waiting;
      reran = true;
      await runPortmapAdd(a, opts.cniBinDir);
      await dropRepeatedMasquerade(a.containerId);
      written = (await scopePod(ours, env, only(backend))).written;
    }
  }
  // As after ADD: UDP flows that the unscoped rules (or no rules) sent elsewhere meanwhile must go.
  let dropped = 0;
  for (const plan of written)
    dropped += await dropStaleUdp(plan.family, [{ before: plan.current, after: plan.desired }], opts.warn);
  const removed = dropped > 0 ? `, removed ${dropped} stale UDP conntrack entr${dropped === 1 ? "y" : "ies"}` : "";
  const scoped =
    written.length > 0
      ? `re-scoped its nftables rules (IPv${written.map((p) => p.family).join(", IPv")})${removed}`
      : "";
  if (reran) return change(`ran portmap's ADD again (its nftables rules were gone)${scoped ? `, ${scoped}` : ""}`);
  return scoped ? change(scoped) : correct;
}
