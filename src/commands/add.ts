// ADD: scope portmap's rules of this pod, all families or none, then pass prevResult on.
import type { NetConf } from "../core/config.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { CniError, Code } from "../core/errors.js";
import { convertResult } from "../core/result.js";
import { writeChain } from "../iptables/backend.js";
import { RulesChanged, applyBatch } from "../nftables/backend.js";
import { batch, rewriteCommands } from "../nftables/json.js";
import { type ChainPlan, changed, planPodChains } from "./plan.js";

/** Rewrites of a pod's nftables rules tried before giving up on rules that keep changing under us. */
const NFT_ATTEMPTS = 3;

export async function cmdAdd(conf: NetConf, env: CniEnv): Promise<Record<string, unknown>> {
  if (!conf.prevResult) {
    throw new CniError(Code.InvalidConfig, "no prevResult: portmap-hostip must run after portmap in a plugin chain");
  }
  // Computed before anything is written: a result we could not print must not follow a rewrite.
  const result = convertResult(conf.prevResult, conf.cniVersion);
  const { all, written } = await write(conf, env);
  for (const { family, closed } of all) {
    // Not an error (the policy says so), but a pod that is unreachable over one family should be visible.
    for (const s of closed) {
      process.stderr.write(`portmap-hostip: hostPort ${s.hostPort}/${s.protocol} of pod ${podLabel(env)} has no IPv${family} host IP: not reachable over IPv${family}\n`);
    }
  }
  // A UDP flow keeps the NAT decision of its first datagram: those made by portmap's unscoped rule in the
  // moment before our rewrite must go. Only pods with UDP mappings load and run this.
  if (written.length > 0 && conf.portMappings.some((m) => m.protocol === "udp")) {
    const { dropStaleUdp } = await import("../pipeline/conntrack.js");
    const warn = (text: string) => void process.stderr.write(`portmap-hostip: pod ${podLabel(env)}: ${text}\n`);
    await Promise.all(written.map((plan) => dropStaleUdp(plan.family, [{ before: plan.current, after: plan.desired }], warn).catch((err: Error) => warn(err.message))));
  }
  return result;
}

/** Plans and writes; a pod's nftables rules that changed between the read and the batch are read again. */
async function write(conf: NetConf, env: CniEnv): Promise<{ all: ChainPlan[]; written: ChainPlan[] }> {
  for (let attempt = 1; ; attempt++) {
    const all = await planPodChains(conf, env);
    const written = all.filter(changed);
    const nft = written.filter((p) => p.backend === "nftables");
    try {
      // Both families in one batch, all or nothing.
      if (nft.length > 0) await applyBatch(batch(nft.flatMap((p) => rewriteCommands(p.family, p.current, p.desired))));
    } catch (err) {
      // A concurrent DEL (or ADD) of this pod removed rules between our read and our batch, which then
      // changed nothing.
      if (!(err instanceof RulesChanged)) throw err;
      if (attempt < NFT_ATTEMPTS) continue;
      throw new CniError(Code.TryAgainLater, `the nftables rules of pod ${podLabel(env)} changed during each of ${NFT_ATTEMPTS} rewrites`, err.details);
    }
    await writeChains(written.filter((p) => p.backend === "iptables"));
    return { all, written };
  }
}

/** One iptables-restore per family, both at once; if one fails, the other is put back so the pod is never half-scoped. */
async function writeChains(written: readonly ChainPlan[]): Promise<void> {
  const outcomes = await Promise.allSettled(written.map((plan) => writeChain(plan.family, plan.chain, plan.desired)));
  const failure = outcomes.find((o) => o.status === "rejected");
  if (failure) {
    const done = written.filter((_, i) => outcomes[i]?.status === "fulfilled");
    await Promise.allSettled(done.map((plan) => writeChain(plan.family, plan.chain, plan.current)));
    throw failure.reason;
  }
}
