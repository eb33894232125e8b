// ADD: scope portmap's rules of this pod, all families or none, then pass prevResult on.
import type { NetConf } from "../cni/config.js";
import { type CniEnv, podLabel } from "../cni/env.js";
import { CniError, Code } from "../cni/errors.js";
import { convertResult } from "../cni/result.js";
import { writeChain } from "../iptables/backend.js";
import { RulesChanged, applyBatch } from "../nftables/backend.js";
import { applyRewrites, podRules, rewriteBatch, udpDnats } from "../nftables/rules.js";
import type { Rewrite as UdpRewrite } from "../ops/conntrack.js";
import { type ChainPlan, type FamilyPlan, type NftPlan, changed, planPodChains } from "./plan.js";

/** Rewrites of the nftables rules tried before giving up on a pod whose rules keep changing under us. */
const NFT_ATTEMPTS = 3;

export async function cmdAdd(conf: NetConf, env: CniEnv): Promise<Record<string, unknown>> {
  if (!conf.prevResult) {
    throw new CniError(Code.InvalidConfig, "no prevResult: portmap-hostip must run after portmap in a plugin chain");
  }
  // Computed before anything is written: a result we could not print must not follow a rewrite.
  const result = convertResult(conf.prevResult, conf.cniVersion);
  const { all, udp } = await write(conf, env);
  for (const { family, closed } of all) {
    // Not an error (the policy says so), but a pod that is unreachable over one family should be visible.
    for (const s of closed) {
      process.stderr.write(`portmap-hostip: hostPort ${s.hostPort}/${s.protocol} of pod ${podLabel(env)} has no IPv${family} host IP: no IPv${family} rules\n`);
    }
  }
  // A UDP flow keeps the NAT decision of its first datagram: those made by portmap's unscoped rule in the
  // moment before our rewrite must go. Only pods with UDP mappings load and run this.
  if (udp.length > 0 && conf.portMappings.some((m) => m.protocol === "udp")) {
    const { dropStaleUdp } = await import("../ops/conntrack.js");
    const warn = (text: string) => void process.stderr.write(`portmap-hostip: pod ${podLabel(env)}: ${text}\n`);
    await Promise.all(udp.map(({ family, rewrite }) => dropStaleUdp(family, [rewrite], warn).catch((err: Error) => warn(err.message))));
  }
  return result;
}

interface Written {
  all: FamilyPlan[];
  /** What changed, per family, for the conntrack step. */
  udp: Array<{ family: FamilyPlan["family"]; rewrite: UdpRewrite }>;
}

async function write(conf: NetConf, env: CniEnv): Promise<Written> {
  for (let attempt = 1; ; attempt++) {
    const all = await planPodChains(conf, env);
    const written = all.filter(changed);
    const chains = written.filter((p): p is ChainPlan => p.backend === "iptables");
    const nft = written.filter((p): p is NftPlan => p.backend === "nftables");
    try {
      // nftables: both families in one batch, all or nothing.
      if (nft.length > 0) await applyBatch(rewriteBatch(env.containerId, nft.flatMap((p) => p.rewrites)));
    } catch (err) {
      // A concurrent DEL (or ADD) of this pod removed rules between our read and our batch, which then
      // changed nothing: read again.
      if (!(err instanceof RulesChanged)) throw err;
      if (attempt < NFT_ATTEMPTS) continue;
      throw new CniError(Code.TryAgainLater, `the nftables rules of pod ${podLabel(env)} changed during each of ${NFT_ATTEMPTS} rewrites`, err.details);
    }
    await writeChains(chains);
    const udp = [
      ...chains.map((p) => ({ family: p.family, rewrite: { before: p.current, after: p.desired } })),
      ...nft.map((p) => {
        const before = podRules(p.rules, env.containerId);
        return { family: p.family, rewrite: { before: udpDnats(before.map((r) => r.expr)), after: udpDnats(applyRewrites(before, p.rewrites)) } };
      }),
    ];
    return { all, udp };
  }
}

/** iptables: one transaction per family, both at once; if one fails, the other is put back so the pod is never half-scoped. */
async function writeChains(written: readonly ChainPlan[]): Promise<void> {
  const outcomes = await Promise.allSettled(written.map((plan) => writeChain(plan.family, plan.chain, plan.desired)));
  const failure = outcomes.find((o) => o.status === "rejected");
  if (failure) {
    const done = written.filter((_, i) => outcomes[i]?.status === "fulfilled");
    await Promise.allSettled(done.map((plan) => writeChain(plan.family, plan.chain, plan.current)));
    throw failure.reason;
  }
}
