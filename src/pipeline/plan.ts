// The scoping pipeline on the node, for ADD, CHECK and reconcile: read the node's network and the pod's rules
// where portmap wrote them (its iptables chain `CNI-DN-…`, or its rules in nftables `cni_hostport hostports`:
// whichever holds them says which backend portmap used), run the pure pipeline on them, and write.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import { podFamilies } from "../core/result.js";
import { type Rule, sameRules } from "../core/rule.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { readNodeNetwork } from "../host/network.js";
import { readChain, writeChain } from "../iptables/backend.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { RulesChanged, applyBatch, readHostports } from "../nftables/backend.js";
import { CHAIN, NEVER, NFT_FAMILY, TABLE, batch, podRules, rewriteCommands } from "../nftables/json.js";
import { podScoping, resolvePod, scopeFamily } from "./pod.js";
import type { FamilyScope } from "../policy/resolve.js";

export interface ChainPlan {
  backend: "iptables" | "nftables";
  family: Family;
  /** Where the rules are: the pod's nat chain, or `ip cni_hostport hostports` (the pod's rules in it). */
  chain: string;
  /** iptables: the whole chain; nftables: the pod's rules, with their handles. */
  current: Rule[];
  desired: Rule[];
  /** Mappings whose host IPs are all of the other family: no rules (iptables), a never-matching one (nftables). */
  closed: FamilyScope[];
}

const FAMILY_NAME: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

export async function planPodChains(conf: NetConf, env: CniEnv): Promise<ChainPlan[]> {
  if (conf.portMappings.length === 0) return [];
  const pod = podLabel(env);
  const scoping = podScoping(conf, pod, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return [];
  // Only the families where some mapping may need scoping, both backends at once, while the node's
  // addresses are listed.
  const chain = portmapChainName(conf.name, env.containerId);
  const [network, chains, nft] = await Promise.all([
    readNodeNetwork(),
    Promise.all(scoping.families.map((f) => readChain(f, chain))),
    Promise.all(scoping.families.map(async (f) => podRules((await readHostports(f)) ?? [], env.containerId))),
  ]);
  const nftables = nft.some((rules) => rules.length > 0);
  if (nftables && chains.some((c) => c !== undefined)) {
    throw new CniError(Code.InvalidConfig, `pod ${pod} has portmap rules both in iptables chain ${chain} and in nftables table ${TABLE}: two portmap entries with different backends?`);
  }
  const resolved = resolvePod(scoping, network);
  return scoping.families.map((family, i): ChainPlan => {
    const where = `nftables chain ${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`;
    const current = (nftables ? nft[i] : chains[i]) ?? [];
    // portmap's nftables CHECK counts the pod's rules per family: a family without host IPs keeps its rules,
    // matching nothing.
    const { rules, missing, closed } = scopeFamily(resolved, family, current, nftables ? NEVER[family] : undefined);
    const first = missing[0];
    if (first) {
      throw new CniError(
        Code.PortmapRulesMissing,
        `no portmap rule for hostPort ${first.hostPort}/${first.protocol} of pod ${pod} in ${nftables ? where : `${FAMILY_NAME[family]} nat chain ${chain} (nor in ${where})`}: portmap-hostip must come after portmap in the plugin list`,
      );
    }
    return { backend: nftables ? "nftables" : "iptables", family, chain: nftables ? where : chain, current, desired: rules, closed };
  });
}

export const changed = (plan: ChainPlan): boolean => !sameRules(plan.current, plan.desired);

/** Rewrites of a pod's nftables rules tried before giving up on rules that keep changing under us. */
const NFT_ATTEMPTS = 3;

/**
 * Plans the pod's rules and writes what changed: nftables, both families in one batch (read again and
 * retried when a concurrent DEL or ADD of the pod changed its rules in between); iptables, one transaction
 * per family, the other put back if one fails. Returns every plan and the written ones.
 */
export async function scopePod(conf: NetConf, env: CniEnv): Promise<{ all: ChainPlan[]; written: ChainPlan[] }> {
  for (let attempt = 1; ; attempt++) {
    const all = await planPodChains(conf, env);
    const written = all.filter(changed);
    const nft = written.filter((p) => p.backend === "nftables");
    try {
      if (nft.length > 0) await applyBatch(batch(nft.flatMap((p) => rewriteCommands(p.family, p.current, p.desired))));
    } catch (err) {
      if (!(err instanceof RulesChanged)) throw err;
      if (attempt < NFT_ATTEMPTS) continue;
      throw new CniError(Code.TryAgainLater, `the nftables rules of pod ${podLabel(env)} changed during each of ${NFT_ATTEMPTS} rewrites`, err.details);
    }
    await writeChains(written.filter((p) => p.backend === "iptables"));
    return { all, written };
  }
}

async function writeChains(written: readonly ChainPlan[]): Promise<void> {
  const outcomes = await Promise.allSettled(written.map((plan) => writeChain(plan.family, plan.chain, plan.desired)));
  const failure = outcomes.find((o) => o.status === "rejected");
  if (failure) {
    const done = written.filter((_, i) => outcomes[i]?.status === "fulfilled");
    await Promise.allSettled(done.map((plan) => writeChain(plan.family, plan.chain, plan.current)));
    throw failure.reason;
  }
}
