// portmap's iptables backend as a RuleBackend: one nat chain per pod (`CNI-DN-…`, named after the network and the
// container), reached by jumps in CNI-HOSTPORT-DNAT. The binaries are those on PATH (the ones portmap ran), or one
// variant's by name where the operator commands read both.
import type { Family } from "../core/ip.js";
import type { IptablesVariant } from "../core/node.js";
import { podAddresses } from "../core/result.js";
import type { Rule } from "../core/rule.js";
import { portmapChainName } from "../iptables/chain-name.js";
import { nat } from "../iptables/nat.js";
import { PORTMAP_DEFAULTS, podNet, portmapChainRules } from "../iptables/portmap.js";
import { formatRule } from "../iptables/text.js";
import type { ChainPlan, PodRef, RuleBackend } from "./backend.js";

const TOOL: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

const chainOf = (pod: PodRef): string => portmapChainName(pod.network, pod.containerId);

const backends = new Map<IptablesVariant | undefined, RuleBackend>();

/** The backend of `variant`'s binaries; without one, of the binaries on PATH. */
export function iptablesBackend(variant?: IptablesVariant): RuleBackend {
  const known = backends.get(variant);
  if (known) return known;
  const table = nat(variant);
  const suffix = variant ? `-${variant}` : "";
  const backend: RuleBackend = {
    name: `iptables${suffix}`,
    kind: "iptables",
    ...(variant ? { variant } : {}),
    tool: `iptables${suffix}`,
    closedDestination: undefined,
    where: (family, pod) => `${TOOL[family]}${suffix} nat chain ${chainOf(pod)}`,
    describe: (_family, rule) => formatRule(rule),
    readPod: (pod, families, runner) => Promise.all(families.map((f) => table.readChain(f, chainOf(pod), runner))),
    writePod: (plans, runner) =>
      writeChains(plans, (plan, rules) => table.writeChain(plan.family, chainOf(plan.pod), rules, runner)),
    unread: {
      portmapRules(pod, prevResult, ifname, mappings, families) {
        const addresses = podAddresses(prevResult, ifname);
        return families.map((f) => {
          const net = podNet(addresses.get(f) ?? "");
          return net && portmapChainRules(chainOf(pod), net, mappings, PORTMAP_DEFAULTS);
        });
      },
      swap: (family, from, to, runner) => table.swapRules(family, from, to, runner),
    },
    usable: () => table.checkUsable(),
    async read() {
      const { readNat } = await import("./iptables-node.js");
      return readNat(backend, table);
    },
  };
  backends.set(variant, backend);
  return backend;
}

/**
 * Writes each family's chain in its own transaction, all side by side: a family that fails puts the others
 * back. (Side by side only in name: the runner of ADD is spawnSync, one family after the other, which was faster
 * here both on an empty table and at 20,000 rules, and needs no async spawn.)
 */
async function writeChains(
  plans: readonly ChainPlan[],
  write: (plan: ChainPlan, rules: readonly Rule[]) => Promise<void>,
): Promise<void> {
  const outcomes = await Promise.allSettled(plans.map((plan) => write(plan, plan.desired)));
  const failure = outcomes.find((o) => o.status === "rejected");
  if (failure) {
    const done = plans.filter((_, i) => outcomes[i]?.status === "fulfilled");
    await Promise.allSettled(done.map((plan) => write(plan, plan.current)));
    throw failure.reason;
  }
}
