// One pod's rules where portmap wrote them, for ADD, CHECK and the keeper: read the node's network and the pod's
// rules from the first backend that holds them (its iptables chain `CNI-DN-…`, else its rules in nftables
// `cni_hostport hostports`: whichever holds them says which backend portmap used), plan them (pipeline/plan.ts)
// and write what changed. A container's first ADD takes portmap's rules as portmap writes them and swaps them
// unread, where the backend can.
import type { NetConf } from "../core/config.js";
import { CniError, Code, RulesChanged } from "../core/errors.js";
import { type CniEnv, podLabel } from "../core/names.js";
import type { NodeNetwork } from "../core/node.js";
import { podFamilies } from "../core/result.js";
import { type Rule, sameRule } from "../core/rule.js";
import { noteReadsFirst, readFirstHint } from "../host/record.js";
import type { Runner } from "../host/run.js";
import { changed, type PodPlan, planScoped } from "../pipeline/plan.js";
import { type PodScoping, podScoping } from "../pipeline/pod.js";
import { judgedIps, type ResolvedMapping } from "../policy/resolve.js";
import type { ChainPlan, PodRef, RuleBackend } from "./backend.js";

/** A pod with hostPorts none of which is to be scoped: every mapping stays "any", nothing is read. */
const unscoped = (conf: NetConf): PodPlan<ChainPlan> => ({
  resolved: conf.portMappings.map(
    (mapping): ResolvedMapping => ({ mapping, source: "any", ips: undefined, leftOut: [], closed: false }),
  ),
  plans: [],
  notes: [],
});

/** Loaded only when a pod has hostPorts to scope: most pods never pay for child_process. */
const loadHost = () => Promise.all([import("../host/network.js"), import("../host/run.js")]);

/** The backends to look in, in order; loaded only when a pod has something to scope. */
export type Backends = () => Promise<readonly RuleBackend[]>;

/**
 * The plan from the node's network (read, unless `network` is given) and the pod's rules as read from the first
 * of `backends` that holds them (portmap's iptables backend is by far the common case: it goes first, and the
 * others are read only when it holds nothing).
 */
export async function planPodChains(
  conf: NetConf,
  env: CniEnv,
  load: Backends,
  network?: NodeNetwork,
): Promise<PodPlan<ChainPlan>> {
  if (conf.portMappings.length === 0) return { resolved: [], plans: [], notes: [] };
  const label = podLabel(env);
  const scoping = podScoping(conf, label, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return unscoped(conf);
  const [[host, { runBlocking: runner }], backends] = await Promise.all([loadHost(), load()]);
  // The reads run one after the other with spawnSync, also for two families: each takes a few milliseconds
  // (`iptables -S` of one chain stays small at 20,000 rules with iptables-nft, and iptables-legacy serialises
  // its calls on the xtables lock anyway), less than the first async spawn costs.
  const pod: PodRef = { network: conf.name, containerId: env.containerId };
  const node = network ?? (await readPodNetwork(host, scoping, runner));
  let holder: RuleBackend | undefined;
  let rules: Array<Rule[] | undefined> = [];
  for (const backend of backends) {
    rules = await backend.readPod(pod, scoping.families, runner);
    if (rules.some((r) => r !== undefined)) {
      holder = backend;
      break;
    }
  }
  // Held nowhere: planned as the first backend, where a missing rule is an error naming every place looked in.
  const target = holder ?? (backends[0] as RuleBackend);
  const places = backends.slice(backends.indexOf(target));
  const current = scoping.families.map((_, i) => (holder ? rules[i] : undefined) ?? []);
  const plan = planScoped(scoping, label, node, current, {
    closedDestination: target.closedDestination,
    where: (family) => {
      const [first, ...rest] = places.map((b) => b.where(family, pod));
      return `${first}${rest.length > 0 ? ` (nor in ${rest.join(", ")})` : ""}`;
    },
  });
  return withBackend(plan, target, pod);
}

const withBackend = (plan: PodPlan, backend: RuleBackend, pod: PodRef): PodPlan<ChainPlan> => ({
  ...plan,
  plans: plan.plans.map((p) => ({ ...p, backend, pod })),
});

/**
 * ADD right after portmap's first ADD of the container: its rules are exactly those portmap writes for these
 * mappings with its default options, so each family's are swapped for the scoped ones without reading them
 * first, in one transaction that deletes each (and fails, changing nothing, if one is not there) and appends
 * the scoped rules: the rules the rewrite of the read ones gives. When a family's transaction is refused (other
 * portmap options, its nftables backend, rules changed since), the families already swapped are swapped back
 * and `done` is undefined: the caller plans from the rules as read, on `network`. Any other failure is thrown,
 * after the same putting back. On a node with many local addresses nothing is tried: `done` is undefined.
 */
async function swapPortmapRules(
  conf: NetConf,
  env: CniEnv,
  load: Backends,
): Promise<{ done: (PodPlan<ChainPlan> & { written: ChainPlan[] }) | undefined; network?: NodeNetwork }> {
  const label = podLabel(env);
  const scoping = podScoping(conf, label, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return { done: { ...unscoped(conf), written: [] } };
  const [[host, { runBlocking: runner }], [backend]] = await Promise.all([loadHost(), load()]);
  if (!backend) throw new Error("no backend to scope the pod's rules in");
  const unread = backend.unread;
  const pod: PodRef = { network: conf.name, containerId: env.containerId };
  const portmap = unread?.portmapRules(pod, conf.prevResult, env.ifname, conf.portMappings, scoping.families);
  // xtables parses each port of a restore's line with getaddrinfo, which has glibc dump every local address:
  // the swap's deletions double those lines, so on a node with many one `iptables -S` per family costs less
  // (10,000 Service IPs on kube-ipvs0: the swap took 193 ms, reading first 165).
  const many = host.manyLocalAddresses();
  const network = await readPodNetwork(host, scoping, runner, many);
  if (!unread || !portmap || many || portmap.some((rules) => rules === undefined)) return { done: undefined, network };
  const plan = withBackend(
    planScoped(scoping, label, network, portmap as Rule[][], {
      closedDestination: backend.closedDestination,
      where: (family) => backend.where(family, pod),
    }),
    backend,
    pod,
  );
  // A family left as portmap wrote it would not be checked by a swap: the read decides then.
  if (!plan.plans.every(changed)) return { done: undefined, network };
  // One family after the other; one whose rules are not portmap's as assumed (or that fails) puts the
  // families before it back.
  const swapped: ChainPlan[] = [];
  const putBack = () => Promise.allSettled(swapped.map((p) => unread.swap(p.family, p.desired, p.current, runner)));
  for (const p of plan.plans) {
    let applied: boolean;
    try {
      applied = await unread.swap(p.family, p.current, p.desired, runner);
    } catch (err) {
      await putBack();
      throw err;
    }
    if (!applied) {
      await putBack();
      return { done: undefined, network };
    }
    swapped.push(p);
  }
  return { done: { ...plan, written: plan.plans } };
}

/** Whether the swap would have taken the rules as read: each family's rules hold portmap's defaults. */
function swappable(conf: NetConf, env: CniEnv, plans: readonly ChainPlan[]): boolean {
  const backend = plans[0]?.backend;
  const portmap = backend?.unread?.portmapRules(
    { network: conf.name, containerId: env.containerId },
    conf.prevResult,
    env.ifname,
    conf.portMappings,
    plans.map((p) => p.family),
  );
  return (
    portmap !== undefined &&
    plans.every(
      (p, i) => p.backend === backend && portmap[i]?.every((rule) => p.current.some((r) => sameRule(r, rule))),
    )
  );
}

/**
 * The node's network as the pod's policy needs it. On a node with many local addresses (kube-proxy IPVS: every
 * Service IP on kube-ipvs0, which is down) only the up interfaces' addresses are listed, then, of the
 * interfaces that are down, only the addresses the policy judges for this pod: the same decisions, without
 * megabytes of JSON. An interface the policy takes addresses from that is down: everything is listed.
 */
async function readPodNetwork(
  host: typeof import("../host/network.js"),
  scoping: PodScoping,
  runner: Runner,
  many = host.manyLocalAddresses(),
): Promise<NodeNetwork> {
  const { readNodeNetwork, readHolders } = host;
  const first = await readNodeNetwork(scoping.families, runner, many);
  if (first.down.length === 0) return first;
  const { policy } = scoping.conf;
  const sources = policy.nodeInterfaces ?? [...first.defaultRouteInterfaces[4], ...first.defaultRouteInterfaces[6]];
  if (sources.some((i) => first.down.includes(i))) return readNodeNetwork(scoping.families, runner);
  const ips = judgedIps(scoping.conf.portMappings, policy, scoping.annotation, first);
  const held = ips.length > 0 ? await readHolders(ips, runner) : [];
  return { ...first, addresses: [...first.addresses, ...held.filter((a) => first.down.includes(a.ifname))] };
}

/** Rewrites of a pod's rules tried before giving up on rules that keep changing under us (nftables). */
const ATTEMPTS = 3;

/**
 * Plans the pod's rules and has the backend holding them write what changed (read again and retried when a
 * concurrent DEL or ADD of the pod changed its rules in between). `portmapJustWrote` (ADD, the container's
 * first): portmap's rules are swapped for the scoped ones without reading them, as long as they are all there,
 * unless the network's portmap wrote others (its nftables backend, other options) the last time a first ADD
 * read them (a hint under stateDir, set and cleared here). Returns the plan and the written families.
 */
export async function scopePod(
  conf: NetConf,
  env: CniEnv,
  load: Backends,
  portmapJustWrote = false,
): Promise<PodPlan<ChainPlan> & { written: ChainPlan[] }> {
  const hint = portmapJustWrote ? readFirstHint(conf.stateDir, conf.name) : undefined;
  const swap =
    portmapJustWrote && hint === undefined && conf.portMappings.length > 0
      ? await swapPortmapRules(conf, env, load)
      : undefined;
  if (swap?.done) return swap.done;
  // The backend that held the network's pods last time is read first (its nftables backend: no iptables -S).
  const ordered: Backends = async () => {
    const all = await load();
    return [...all.filter((b) => b.name === hint), ...all.filter((b) => b.name !== hint)];
  };
  for (let attempt = 1; ; attempt++) {
    const plan = await planPodChains(conf, env, hint ? ordered : load, swap?.network);
    // A first ADD that read says whether the swap would have taken portmap's rules, and else where they were:
    // the network's next first ADDs try the swap, or read there at once (a refused swap costs a process).
    if (portmapJustWrote && plan.plans.length > 0) {
      const next = swappable(conf, env, plan.plans) ? undefined : (plan.plans[0] as ChainPlan).backend.name;
      if (next !== hint) noteReadsFirst(conf.stateDir, conf.name, next !== undefined, next);
    }
    const written = plan.plans.filter(changed);
    if (written.length === 0) return { ...plan, written };
    const { runBlocking } = await import("../host/run.js");
    try {
      await (written[0] as ChainPlan).backend.writePod(written, runBlocking);
      return { ...plan, written };
    } catch (err) {
      if (!(err instanceof RulesChanged)) throw err;
      if (attempt < ATTEMPTS) continue;
      throw new CniError(
        Code.TryAgainLater,
        `the rules of pod ${podLabel(env)} changed during each of ${ATTEMPTS} rewrites`,
        err.details,
      );
    }
  }
}
