// What ADD and CHECK share: read the node's network and the pod's rules where portmap wrote them (its
// iptables chain `CNI-DN-…`, or its rules in nftables `cni_hostport hostports`: whichever holds them says
// which backend portmap used), and run the scoping pipeline on them.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import { podFamilies } from "../core/result.js";
import { type Rule, sameRules } from "../core/rule.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { readNodeNetwork } from "../host/network.js";
import { readChain } from "../iptables/backend.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { readHostports } from "../nftables/backend.js";
import { CHAIN, NEVER, NFT_FAMILY, TABLE, podRules } from "../nftables/json.js";
import { podScoping, resolvePod, scopeFamily } from "../pipeline/pod.js";
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
