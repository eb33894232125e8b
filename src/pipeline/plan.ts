// The scoping pipeline on the node, for ADD, CHECK and reconcile: read the node's network and the pod's rules
// where portmap wrote them (its iptables chain `CNI-DN-…`, or its rules in nftables `cni_hostport hostports`:
// whichever holds them says which backend portmap used), run the pure pipeline on them, and write. A
// container's first ADD takes portmap's iptables rules as portmap writes them and swaps them unread.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import { type CniEnv, podLabel } from "../core/names.js";
import type { NodeNetwork } from "../core/node.js";
import { podAddresses, podFamilies } from "../core/result.js";
import { type Rule, sameRule, sameRules } from "../core/rule.js";
import { noteReadsFirst, readsFirst } from "../host/record.js";
import type { Runner } from "../host/run.js";
import { batch, CHAIN, NEVER, NFT_FAMILY, podRules, rewriteCommands, TABLE } from "../nftables/json.js";
import { type FamilyScope, judgedIps, type ResolvedMapping, resolutionNotes } from "../policy/resolve.js";
import { neverReceiving, type PodScoping, podScoping, resolvePod, scopeFamily } from "./pod.js";

export interface ChainPlan {
  backend: "iptables" | "nftables";
  family: Family;
  /** Where the rules are: the pod's nat chain, or `ip cni_hostport hostports` (the pod's rules in it). */
  chain: string;
  /** iptables: the whole chain; nftables: the pod's rules, with their handles. */
  current: Rule[];
  desired: Rule[];
  /** Mappings left with no host IP in this family: no rules (iptables), a never-matching one (nftables). */
  closed: FamilyScope[];
}

const FAMILY_NAME: Record<Family, string> = { 4: "iptables", 6: "ip6tables" };

/** What ADD and CHECK work from: the host IPs decided, the plan per family, and what to say on stderr. */
export interface PodPlan {
  /** Every mapping with the host IPs decided for it (for the log file). */
  resolved: ResolvedMapping[];
  /** Per family whose rules may need scoping. */
  plans: ChainPlan[];
  /** What the default left out, and mappings it left closed: for stderr. */
  notes: string[];
}

/** A pod with hostPorts none of which is to be scoped: every mapping stays "any", nothing is read. */
const unscoped = (conf: NetConf): PodPlan => ({
  resolved: conf.portMappings.map(
    (mapping): ResolvedMapping => ({ mapping, source: "any", ips: undefined, leftOut: [], closed: false }),
  ),
  plans: [],
  notes: [],
});

/** The plan from the node's network (read, unless `network` is given) and the pod's rules as read. */
export async function planPodChains(conf: NetConf, env: CniEnv, network?: NodeNetwork): Promise<PodPlan> {
  if (conf.portMappings.length === 0) return { resolved: [], plans: [], notes: [] };
  const pod = podLabel(env);
  const scoping = podScoping(conf, pod, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return unscoped(conf);
  // Loaded only now: a pod without hostPorts to scope (most pods) never pays for child_process.
  const [host, { runBlocking: runner }, { readChain }, { portmapChainName }, { readHostports }] = await Promise.all([
    import("../host/network.js"),
    import("../host/run.js"),
    import("../iptables/backend.js"),
    import("../iptables/chain-name.js"),
    import("../nftables/backend.js"),
  ]);
  // The reads run one after the other with spawnSync, also for two families: each takes a few milliseconds
  // (`iptables -S` of one chain stays small at 20,000 rules with iptables-nft, and iptables-legacy serialises
  // its calls on the xtables lock anyway), less than the first async spawn costs.
  // Only the families where some mapping may need scoping.
  const chain = portmapChainName(conf.name, env.containerId);
  const node = network ?? (await readPodNetwork(host, scoping, runner));
  const chains = await Promise.all(scoping.families.map((f) => readChain(f, chain, runner)));
  // portmap's nftables backend is read only when its iptables backend wrote no chain for the pod: the
  // iptables one is by far the common case, and an nft process costs every hostPort ADD ~3 ms.
  const nft = chains.every((c) => c === undefined)
    ? await Promise.all(
        scoping.families.map(async (f) => podRules((await readHostports(f, CHAIN, runner)) ?? [], env.containerId)),
      )
    : undefined;
  const nftables = nft?.some((rules) => rules.length > 0) === true;
  const current = scoping.families.map((_, i) => (nftables ? nft?.[i] : chains[i]) ?? []);
  return planScoped(scoping, pod, node, current, nftables ? undefined : chain);
}

/**
 * ADD right after portmap's first ADD of the container: its chain holds exactly the rules portmap writes for
 * these mappings (portmapChainRules, with portmap's default options), so each family's are swapped for the
 * scoped ones without reading them first, in one iptables-restore that deletes each (and fails, changing
 * nothing, if one is not there) and appends the scoped rules: the chain the rewrite of the read rules gives.
 * When a family's transaction is refused (other portmap options, its nftables backend, a chain changed
 * since), the families already swapped are swapped back and `done` is undefined: the caller plans from the
 * rules as read, on `network`. Any other failure is thrown, after the same putting back. On a node with many
 * local addresses nothing is tried: `done` is undefined.
 */
async function swapPortmapRules(
  conf: NetConf,
  env: CniEnv,
): Promise<{ done: (PodPlan & { written: ChainPlan[] }) | undefined; network?: NodeNetwork }> {
  const pod = podLabel(env);
  const scoping = podScoping(conf, pod, podFamilies(conf.prevResult, env.ifname));
  if (!scoping) return { done: { ...unscoped(conf), written: [] } };
  const [host, { runBlocking: runner }, { swapRules }, { portmapChainName }] = await Promise.all([
    import("../host/network.js"),
    import("../host/run.js"),
    import("../iptables/backend.js"),
    import("../iptables/chain-name.js"),
  ]);
  const chain = portmapChainName(conf.name, env.containerId);
  const portmap = await portmapDefaultRules(conf, env, scoping.families, chain);
  // xtables parses each port of a restore's line with getaddrinfo, which has glibc dump every local address:
  // the swap's deletions double those lines, so on a node with many one `iptables -S` per family costs less
  // (10,000 Service IPs on kube-ipvs0: the swap took 193 ms, reading first 165).
  const many = host.manyLocalAddresses();
  const network = await readPodNetwork(host, scoping, runner, many);
  if (many || portmap.some((rules) => rules === undefined)) return { done: undefined, network };
  const plan = planScoped(scoping, pod, network, portmap as Rule[][], chain);
  // A family left as portmap wrote it would not be checked by a swap: the read decides then.
  if (!plan.plans.every(changed)) return { done: undefined, network };
  // One family after the other; one whose rules are not portmap's as assumed (or that fails) puts the
  // families before it back.
  const swapped: ChainPlan[] = [];
  const putBack = () => Promise.allSettled(swapped.map((p) => swapRules(p.family, p.desired, p.current, runner)));
  for (const p of plan.plans) {
    let applied: boolean;
    try {
      applied = await swapRules(p.family, p.current, p.desired, runner);
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

/** Per family, the rules portmap writes in the pod's chain with its default options (undefined: no pod address). */
async function portmapDefaultRules(
  conf: NetConf,
  env: CniEnv,
  families: readonly Family[],
  chain: string,
): Promise<(Rule[] | undefined)[]> {
  const { podNet, portmapChainRules, PORTMAP_DEFAULTS } = await import("../iptables/portmap.js");
  const addresses = podAddresses(conf.prevResult, env.ifname);
  return families.map((f) => {
    const net = podNet(addresses.get(f) ?? "");
    return net && portmapChainRules(chain, net, conf.portMappings, PORTMAP_DEFAULTS);
  });
}

/** Whether the swap would have taken the rules as read: each family's iptables chain holds portmap's defaults. */
async function swappable(conf: NetConf, env: CniEnv, plans: readonly ChainPlan[]): Promise<boolean> {
  if (plans.some((p) => p.backend !== "iptables")) return false;
  const portmap = await portmapDefaultRules(
    conf,
    env,
    plans.map((p) => p.family),
    plans[0]?.chain ?? "",
  );
  return plans.every((p, i) => portmap[i]?.every((rule) => p.current.some((r) => sameRule(r, rule))) === true);
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

/**
 * Pure: the plan from the node's network and the pod's rules as read, per family of `scoping` (`iptablesChain`:
 * the chain they were read from; undefined: nftables, the pod's rules in `hostports`).
 */
export function planScoped(
  scoping: PodScoping,
  pod: string,
  network: NodeNetwork,
  current: readonly Rule[][],
  iptablesChain: string | undefined,
): PodPlan {
  const nftables = iptablesChain === undefined;
  const chain = iptablesChain ?? "";
  const resolved = resolvePod(scoping, network);
  // portmap's nftables CHECK counts the pod's rules per family: a family without host IPs keeps its rules,
  // matching nothing.
  const scoped = scoping.families.map((family, i) =>
    scopeFamily(resolved, family, current[i] as Rule[], nftables ? NEVER[family] : undefined),
  );
  const plans = scoped.map(({ family, rules, missing, closed }, i): ChainPlan => {
    const where = `nftables chain ${NFT_FAMILY[family]} ${TABLE} ${CHAIN}`;
    const first = missing[0];
    if (first) {
      throw new CniError(
        Code.PortmapRulesMissing,
        `no portmap rule for hostPort ${first.hostPort}/${first.protocol} of pod ${pod} in ${nftables ? where : `${FAMILY_NAME[family]} nat chain ${chain} (nor in ${where})`}: portmap-hostip must come after portmap in the plugin list`,
      );
    }
    return {
      backend: nftables ? "nftables" : "iptables",
      family,
      chain: nftables ? where : chain,
      current: current[i] as Rule[],
      desired: rules,
      closed,
    };
  });
  return { resolved, plans, notes: [...resolutionNotes(resolved, pod), ...neverReceiving(scoped, pod)] };
}

export const changed = (plan: ChainPlan): boolean => !sameRules(plan.current, plan.desired);

/** Rewrites of a pod's nftables rules tried before giving up on rules that keep changing under us. */
const NFT_ATTEMPTS = 3;

/**
 * Plans the pod's rules and writes what changed: nftables, both families in one batch (read again and
 * retried when a concurrent DEL or ADD of the pod changed its rules in between); iptables, one transaction
 * per family, the other put back if one fails. `portmapJustWrote` (ADD, the container's first): portmap's
 * iptables rules are swapped for the scoped ones without reading them, as long as they are all there, unless
 * the network's portmap wrote others (its nftables backend, other options) the last time a first ADD read
 * them (a hint under stateDir, set and cleared here). Returns the plan and the written families.
 */
export async function scopePod(
  conf: NetConf,
  env: CniEnv,
  portmapJustWrote = false,
): Promise<PodPlan & { written: ChainPlan[] }> {
  let readFirst = portmapJustWrote && readsFirst(conf.stateDir, conf.name);
  const swap =
    portmapJustWrote && !readFirst && conf.portMappings.length > 0 ? await swapPortmapRules(conf, env) : undefined;
  if (swap?.done) return swap.done;
  for (let attempt = 1; ; attempt++) {
    const plan = await planPodChains(conf, env, swap?.network);
    // A first ADD that read says whether the swap would have taken portmap's rules: the network's next first
    // ADDs try it, or read at once (a refused swap costs a restore process).
    if (portmapJustWrote && plan.plans.length > 0 && (await swappable(conf, env, plan.plans)) === readFirst) {
      readFirst = !readFirst;
      noteReadsFirst(conf.stateDir, conf.name, readFirst);
    }
    const written = plan.plans.filter(changed);
    if (written.length === 0) return { ...plan, written };
    const nft = written.filter((p) => p.backend === "nftables");
    // Loaded only when there is something to write (as is every host module of this pipeline).
    const [{ applyBatch, RulesChanged }, { runBlocking }] = await Promise.all([
      import("../nftables/backend.js"),
      import("../host/run.js"),
    ]);
    try {
      // Both families in one nft process: nothing to run beside it.
      if (nft.length > 0)
        await applyBatch(batch(nft.flatMap((p) => rewriteCommands(p.family, p.current, p.desired))), runBlocking);
    } catch (err) {
      if (!(err instanceof RulesChanged)) throw err;
      if (attempt < NFT_ATTEMPTS) continue;
      throw new CniError(
        Code.TryAgainLater,
        `the nftables rules of pod ${podLabel(env)} changed during each of ${NFT_ATTEMPTS} rewrites`,
        err.details,
      );
    }
    await writeChains(written.filter((p) => p.backend === "iptables"));
    return { ...plan, written };
  }
}

async function writeChains(written: readonly ChainPlan[]): Promise<void> {
  const [{ writeChain }, { runBlocking: runner }] = await Promise.all([
    import("../iptables/backend.js"),
    import("../host/run.js"),
  ]);
  // One family after the other, each with spawnSync: side by side was slower here, both on an empty table and
  // at 20,000 rules (iptables-nft commits serialise in the kernel, iptables-legacy on the xtables lock), and
  // needs the first async spawn (~4 ms).
  const outcomes = await Promise.allSettled(
    written.map((plan) => writeChain(plan.family, plan.chain, plan.desired, runner)),
  );
  const failure = outcomes.find((o) => o.status === "rejected");
  if (failure) {
    const done = written.filter((_, i) => outcomes[i]?.status === "fulfilled");
    await Promise.allSettled(done.map((plan) => writeChain(plan.family, plan.chain, plan.current, runner)));
    throw failure.reason;
  }
}
