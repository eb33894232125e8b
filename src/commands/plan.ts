// What ADD and CHECK share: read the node's network and the pod's chains, and run the scoping pipeline on them.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { NodeNetwork } from "../core/node.js";
import { podFamilies } from "../core/result.js";
import { type Rule, sameRules } from "../core/rule.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { readNodeNetwork } from "../host/network.js";
import { readChain } from "../iptables/backend.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { podScoping, resolvePod, scopeFamily } from "../pipeline/pod.js";
import type { FamilyScope } from "../policy/resolve.js";

export interface ChainPlan {
  family: Family;
  chain: string;
  current: Rule[];
  desired: Rule[];
  /** Mappings whose host IPs are all of the other family: they get no rules in this one. */
  closed: FamilyScope[];
}

const FAMILY_NAME: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

export async function planPodChains(conf: NetConf, env: CniEnv): Promise<ChainPlan[]> {
  if (conf.portMappings.length === 0) return [];
  const pod = podLabel(env);
  const scoping = podScoping(conf, pod, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return [];
  // Only the families where some mapping may need scoping; read them while the node's addresses are listed.
  const chain = portmapChainName(conf.name, env.containerId);
  const [network, ...chains] = await Promise.all<[Promise<NodeNetwork>, ...Promise<Rule[] | undefined>[]]>([
    readNodeNetwork(),
    ...scoping.families.map((f) => readChain(f, chain)),
  ]);
  const resolved = resolvePod(scoping, network);
  return scoping.families.map((family, i) => {
    const current = chains[i] ?? [];
    const { rules, missing, closed } = scopeFamily(resolved, family, current);
    const first = missing[0];
    if (first) {
      throw new CniError(
        Code.PortmapRulesMissing,
        `no portmap rule for hostPort ${first.hostPort}/${first.protocol} of pod ${pod} in ${FAMILY_NAME[family]} nat chain ${chain}: portmap-hostip must come after portmap in the plugin list`,
      );
    }
    return { family, chain, current, desired: rules, closed };
  });
}

export const changed = (plan: ChainPlan): boolean => !sameRules(plan.current, plan.desired);
