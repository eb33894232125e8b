// What ADD and CHECK share: resolve the pod's host IPs and compute, per family, the pod chain as it must be.
import type { NetConf } from "../cni/config.js";
import { type CniEnv, podLabel } from "../cni/env.js";
import { CniError, Code } from "../cni/errors.js";
import { podFamilies } from "../cni/result.js";
import { type NodeNetwork, readNodeNetwork } from "../host/network.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { readChain } from "../iptables/backend.js";
import { sameRules, scopeChain } from "../iptables/rules.js";
import { parseAnnotation } from "../policy/annotation.js";
import type { Family } from "../policy/ip.js";
import { type FamilyScope, hostIpSource, mappingFamilies, resolutionNotes, resolveMappings, scopesForFamily } from "../policy/resolve.js";

export interface ChainPlan {
  family: Family;
  chain: string;
  current: string[];
  desired: string[];
  /** Mappings whose host IPs are all of the other family: they get no rules in this one. */
  closed: FamilyScope[];
}

const FAMILY_NAME: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

export interface PodPlan {
  plans: ChainPlan[];
  /** What the default left out, and mappings it left closed: for stderr. */
  notes: string[];
}

const NOTHING: PodPlan = { plans: [], notes: [] };

export async function planPodChains(conf: NetConf, env: CniEnv): Promise<PodPlan> {
  if (conf.portMappings.length === 0) return NOTHING;
  const pod = podLabel(env);
  const annotation = conf.annotationValue === undefined ? undefined : parseAnnotation(conf.annotationValue, conf.policy.annotation, pod);
  const sources = conf.portMappings.map((m) => hostIpSource(m, conf.policy, annotation));
  if (sources.every((s) => s.kind === "any")) return NOTHING;

  // Only families where the pod has an address and some mapping may need scoping; read them while the
  // node's addresses are listed.
  const pods = podFamilies(conf.prevResult, env.ifname);
  const families = ([4, 6] as const).filter(
    (f) => pods.has(f) && conf.portMappings.some((m, i) => sources[i]?.kind !== "runtime" && mappingFamilies(m).includes(f)),
  );
  const chain = portmapChainName(conf.name, env.containerId);
  const [network, ...chains] = await Promise.all<[Promise<NodeNetwork>, ...Promise<string[] | undefined>[]]>([
    readNodeNetwork(families),
    ...families.map((f) => readChain(f, chain)),
  ]);

  const resolved = resolveMappings(conf.portMappings, conf.policy, annotation, network, pod, pods);
  const plans = families.map((family, i) => {
    const current = chains[i] ?? [];
    const scopes = scopesForFamily(resolved, family);
    const { rules, missing } = scopeChain(current, scopes);
    const first = missing[0];
    if (first) {
      throw new CniError(
        Code.PortmapRulesMissing,
        `no portmap rule for hostPort ${first.hostPort}/${first.protocol} of pod ${pod} in ${FAMILY_NAME[family]} nat chain ${chain}: portmap-hostip must come after portmap in the plugin list`,
      );
    }
    return { family, chain, current, desired: rules, closed: scopes.filter((s) => s.ips.length === 0) };
  });
  return { plans, notes: resolutionNotes(resolved, pod) };
}

export const changed = (plan: ChainPlan): boolean => !sameRules(plan.current, plan.desired);
