// What ADD and CHECK share: resolve the pod's host IPs, read what portmap wrote for the pod (iptables chain
// `CNI-DN-…`, or its rules in nftables `cni_hostport hostports`: whichever holds them says which backend
// portmap used) and compute, per family, the rules as they must be.
import type { NetConf } from "../cni/config.js";
import { type CniEnv, podLabel } from "../cni/env.js";
import { CniError, Code } from "../cni/errors.js";
import { podFamilies } from "../cni/result.js";
import { readNodeNetwork } from "../host/network.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { readChain } from "../iptables/backend.js";
import { sameRules, scopeChain } from "../iptables/rules.js";
import { readHostports } from "../nftables/backend.js";
import { CHAIN, NFT_FAMILY, type NftRule, type Rewrite, TABLE, podRules, scopeHostports } from "../nftables/rules.js";
import { parseAnnotation } from "../policy/annotation.js";
import type { Family } from "../policy/ip.js";
import { type FamilyScope, hostIpSource, mappingFamilies, resolveMappings, scopesForFamily } from "../policy/resolve.js";

interface PlanBase {
  family: Family;
  /** Mappings whose host IPs are all of the other family: they get no rules (iptables) or a never-matching one (nftables). */
  closed: FamilyScope[];
}

/** portmap's iptables backend: the pod's nat chain, as it is and as it must be. */
export interface ChainPlan extends PlanBase {
  backend: "iptables";
  chain: string;
  current: string[];
  desired: string[];
}

/** portmap's nftables backend: the family's `hostports` chain as read, and the rewrites of the pod's rules. */
export interface NftPlan extends PlanBase {
  backend: "nftables";
  rules: NftRule[];
  rewrites: Rewrite[];
}

export type FamilyPlan = ChainPlan | NftPlan;

const FAMILY_NAME: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

export async function planPodChains(conf: NetConf, env: CniEnv): Promise<FamilyPlan[]> {
  if (conf.portMappings.length === 0) return [];
  const pod = podLabel(env);
  const annotation = conf.annotationValue === undefined ? undefined : parseAnnotation(conf.annotationValue, conf.policy.annotation, pod);
  const sources = conf.portMappings.map((m) => hostIpSource(m, conf.policy, annotation));
  if (sources.every((s) => s.kind === "any")) return [];

  // Only families where the pod has an address and some mapping may need scoping; read both backends of
  // them while the node's addresses are listed.
  const pods = podFamilies(conf.prevResult, env.ifname);
  const families = ([4, 6] as const).filter(
    (f) => pods.has(f) && conf.portMappings.some((m, i) => sources[i]?.kind !== "runtime" && mappingFamilies(m).includes(f)),
  );
  const chain = portmapChainName(conf.name, env.containerId);
  const [network, chains, nft] = await Promise.all([
    readNodeNetwork(),
    Promise.all(families.map((f) => readChain(f, chain))),
    Promise.all(families.map((f) => readHostports(f))),
  ]);
  const nftables = nft.some((rules) => rules !== undefined && podRules(rules, env.containerId).length > 0);
  if (nftables && chains.some((c) => c !== undefined)) {
    throw new CniError(
      Code.InvalidConfig,
      `pod ${pod} has portmap rules both in iptables chain ${chain} and in nftables table ${TABLE}: two portmap entries with different backends?`,
    );
  }

  const resolved = resolveMappings(conf.portMappings, conf.policy, annotation, network, pod);
  return families.map((family, i): FamilyPlan => {
    const scopes = scopesForFamily(resolved, family);
    const closed = scopes.filter((s) => s.ips.length === 0);
    const missingError = (s: FamilyScope, where: string) =>
      new CniError(
        Code.PortmapRulesMissing,
        `no portmap rule for hostPort ${s.hostPort}/${s.protocol} of pod ${pod} in ${where}: portmap-hostip must come after portmap in the plugin list`,
      );
    if (nftables) {
      const rules = nft[i] ?? [];
      const { rewrites, missing } = scopeHostports(rules, env.containerId, family, scopes);
      if (missing[0]) throw missingError(missing[0], `nftables chain ${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`);
      return { backend: "nftables", family, rules, rewrites, closed };
    }
    const current = chains[i] ?? [];
    const { rules, missing } = scopeChain(current, scopes);
    if (missing[0]) {
      throw missingError(missing[0], `${FAMILY_NAME[family]} nat chain ${chain} (nor in nftables chain ${NFT_FAMILY[family]} ${TABLE} ${CHAIN})`);
    }
    return { backend: "iptables", family, chain, current, desired: rules, closed };
  });
}

export const changed = (plan: FamilyPlan): boolean =>
  plan.backend === "iptables" ? !sameRules(plan.current, plan.desired) : plan.rewrites.length > 0;
