// The model test's runner: draws the steps of a seed, runs them against a fresh real node and the model side by
// side, reads the node after every step and checks the invariants, probes with real packets at the quiescent
// points, and on a failure prints the seed, the steps and a shrunk list of steps that still fails (each try on
// a fresh node), with the environment that replays either.
import { whoAnswers } from "../traffic.js";
import { ModelNode, type PodRuntime, RESYNC_SECONDS, type SavedTables } from "./node.js";
import type { NodeRead, PodRef } from "./observe.js";
import {
  type Annotation,
  annotationText,
  CONTAINER_PORT,
  claim,
  coverageKey,
  covers,
  decided,
  FAMILIES,
  type Family,
  familyOf,
  INITIAL_ADDRESSES,
  LOCALHOST,
  type Mapping,
  NETWORKS,
  type NetworkSpec,
  nothingToScope,
  OPTIONAL_ADDRESS,
  PORTS,
  type PodAsk,
  type Proto,
  probeAddresses,
  REFUSED_ADDRESSES,
  SERVICES,
  unscoped,
  VARIANT_TABLE,
} from "./policy.js";
import { entriesOf, Model, type ModelPod, newPod, show, type Violation } from "./state.js";
import { chooser, drawStep, type Step, type StepWeights, stepText } from "./steps.js";

export interface ModelConfig {
  /** What the replay line names (the test file). */
  file: string;
  seed: number;
  /** How many steps the seed draws. */
  steps: number;
  /** Only these step indices (a shrunk list); all when undefined. */
  keep?: readonly number[];
  weights: StepWeights;
  /** The networks the runtime starts pods on (default: every one of NETWORKS). */
  networks?: readonly NetworkSpec[];
  runtime: (node: ModelNode) => Promise<PodRuntime>;
  /** How long a failure may be shrunk (0: not at all). */
  shrinkSeconds: number;
  log: (line: string) => void;
}

export interface ModelResult {
  ok: boolean;
  /** The report: the steps run, and on a failure the seed, the failure, the shrunk steps and how to replay. */
  report: string;
}

/** A broken invariant at a step: what broke, with the node's tables for the report. */
class ModelFailure extends Error {
  constructor(
    readonly at: number,
    message: string,
  ) {
    super(message);
  }
}

// With the keeper running, how long a quiescent point waits for it to have done its work.
const SETTLE_MS = 30_000;
// A dead pod's rules may outlive the keeper's grace by this much (passes every RESYNC_SECONDS, a busy machine).
const GRACE_SLACK_MS = 3 * RESYNC_SECONDS * 1000 + 10_000;
const PROBE_CONCURRENCY = 4;
const SAMPLED_PODS = 2;
const PROGRESS_EVERY = 50;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The seed of step `i`: each step depends on the seed and its index only, so a prefix replays alone. */
const stepSeed = (seed: number, i: number) => (Math.imul(seed ^ 0x5bd1e995, 0x01000193) + i * 0x9e3779b1) | 0;

/** The run's steps: `count` drawn from `seed`. */
export function modelSteps(seed: number, count: number, weights: StepWeights): Step[] {
  return Array.from({ length: count }, (_, i) => drawStep(stepSeed(seed, i), weights));
}

interface Ctx {
  node: ModelNode;
  runtime: PodRuntime;
  model: Model;
  saved: SavedTables | undefined;
  /** The node's foreign rules as they were after setup. */
  foreign: string[];
  stats: Map<string, number>;
  /** What the last operator command printed, for a failure right after it. */
  last: string;
  networks: readonly NetworkSpec[];
}

const podRefs = (model: Model): PodRef[] =>
  model.pods.map((p) => ({ name: p.name, id: p.id, network: p.net.name, table: p.net.table }));

/** Runs the steps at `indices` (and a final quiescent point with the keeper) on a fresh node. */
async function runOnce(
  cfg: ModelConfig,
  steps: readonly Step[],
  indices: readonly number[],
  log: (line: string) => void,
): Promise<{ failure?: ModelFailure; lines: string[] }> {
  const lines: string[] = [];
  const started = Date.now();
  const node = await ModelNode.create();
  let runtime: PodRuntime | undefined;
  try {
    runtime = await cfg.runtime(node);
    await node.startKeeper();
    const model = new Model(INITIAL_ADDRESSES);
    model.keeper = { running: true, since: Date.now() };
    const ctx: Ctx = {
      node,
      runtime,
      model,
      saved: undefined,
      foreign: [],
      stats: new Map(),
      last: "",
      networks: cfg.networks ?? NETWORKS,
    };
    ctx.foreign = (await node.read([])).foreign;
    const todo = [...indices.map((i) => ({ i, step: steps[i] as Step })), ...finalSteps(steps.length)];
    for (const { i, step } of todo) {
      let text: string;
      try {
        ctx.last = "";
        text = await execute(ctx, step, i);
        // Whatever the step did, a running keeper may have acted on it by the time the node is read.
        model.keeperMayAct();
        await checkInvariants(ctx, i);
      } catch (err) {
        const failure = err instanceof ModelFailure ? err : new ModelFailure(i, (err as Error).stack ?? String(err));
        // A pass under way says what it did when it ends.
        if (node.keeper) await sleep(2000);
        failure.message += `\n--- keeper output (last lines)\n${(node.keeper?.output() ?? "(not running)").split("\n").slice(-40).join("\n")}`;
        lines.push(`#${i} ${stepText(step)}: FAILED`);
        return { failure, lines };
      }
      lines.push(`#${i} ${stepText(step)}: ${text}`);
      if (lines.length % PROGRESS_EVERY === 0)
        log(
          `model: ${lines.length} of ${todo.length} steps, ${model.live().length} live pods, ${Math.round((Date.now() - started) / 1000)} s`,
        );
    }
    log(`model: ${[...ctx.stats].map(([k, v]) => `${k} ${v}`).join(", ")}`);
    return { lines };
  } finally {
    await runtime?.destroy().catch(() => {});
    await node.destroy();
  }
}

/** Every run ends with the keeper running and a quiescent point: whatever the steps left, it must heal. */
const finalSteps = (n: number): Array<{ i: number; step: Step }> => [
  { i: n, step: { kind: "keeper-start" } },
  { i: n + 1, step: { kind: "quiesce", pick: 0 } },
];

const count = (ctx: Ctx, what: string) => ctx.stats.set(what, (ctx.stats.get(what) ?? 0) + 1);

/** Does one step on the node and in the model; returns what it did, in a few words. */
async function execute(ctx: Ctx, step: Step, at: number): Promise<string> {
  const { node, model } = ctx;
  count(ctx, step.kind);
  switch (step.kind) {
    case "add":
      return addPod(ctx, step, at);
    case "del": {
      const pod = pickLive(model, step.pick);
      if (!pod) return "skipped: no live pod";
      const r = await ctx.runtime.del(pod.name);
      pod.live = false;
      if (r.withEntry) pod.record = { state: "deleted", at: Date.now() };
      for (const f of FAMILIES) pod.allowed[f] = new Set([""]);
      return `deleted ${pod.name}${r.withEntry ? "" : " (without our entry)"}`;
    }
    case "check":
      return checkPod(ctx, step.pick, at);
    case "quiesce":
      return quiesce(ctx, step.pick, at);
    case "flush-nat":
      await node.flushNat(step.variant);
      model.flushed(VARIANT_TABLE[step.variant], FAMILIES);
      return `firewall reload: the nat tables of iptables-${step.variant} replaced`;
    case "flush-nft":
      await node.flushNft(step.family, step.how);
      model.flushed("nftables", [step.family]);
      return `nft: ${step.how === "table" ? "deleted the table" : "flushed hostports"} (IPv${step.family})`;
    case "save":
      ctx.saved = await node.save(podRefs(model));
      return "saved the nat and nftables tables";
    case "restore-nat":
      if (!ctx.saved) return "skipped: nothing saved";
      await node.restoreNat(ctx.saved, step.variant);
      model.restored(VARIANT_TABLE[step.variant], FAMILIES, ctx.saved.read.coverage, Date.now());
      return `restored the saved nat tables of iptables-${step.variant}`;
    case "restore-nft":
      if (!ctx.saved) return "skipped: nothing saved";
      await node.restoreNft(ctx.saved, step.family);
      model.restored("nftables", [step.family], ctx.saved.read.coverage, Date.now());
      return `restored the saved nftables table (IPv${step.family})`;
    case "reconcile": {
      const r = await node.reconcile();
      // A pod added without our entry has a policy only by the installed entry.
      const entry = model.entryOnDisk;
      const judged = (p: ModelPod) => p.withEntry || entry === "present";
      const refused = model
        .live()
        .filter((p) => FAMILIES.some((f) => model.healed(p, f) === undefined) && (judged(p) || entry === "maybe"));
      const expected = refused.some(judged) ? 1 : refused.length > 0 ? r.code : 0;
      if (r.code !== expected)
        throw new ModelFailure(
          at,
          `reconcile exited ${r.code}, expected ${expected}${refused.length > 0 ? ` (refused now: ${refused.map((p) => p.name).join(", ")})` : ""}\n${r.stdout}${r.stderr}`,
        );
      model.reconciled(model.entryOnDisk === "maybe" ? "maybe" : model.entryOnDisk === "present", Date.now());
      ctx.last = `reconcile:\n${r.stdout}${r.stderr}`;
      return `reconcile: exit ${r.code}`;
    }
    case "gc": {
      const r = await node.gc(step.grace);
      const expected = model.live().length > 0 ? 0 : 1;
      if (r.code !== expected)
        throw new ModelFailure(at, `gc exited ${r.code}, expected ${expected}\n${r.stdout}${r.stderr}`);
      if (expected === 0) model.collected(Date.now());
      ctx.last = `gc:\n${r.stdout}${r.stderr}`;
      return `gc --grace ${step.grace}: exit ${r.code}`;
    }
    case "rewrite-conflist":
      node.rewriteConflist();
      model.entryOnDisk = model.keeper.running ? "maybe" : "absent";
      return "the network plugin rewrote the conflist without our entry";
    case "address": {
      const ip = OPTIONAL_ADDRESS[step.family];
      const present = !model.node[step.family].includes(ip);
      await node.toggleAddress(step.family, present);
      model.setAddresses(
        step.family,
        present ? [...model.node[step.family], ip] : model.node[step.family].filter((x) => x !== ip),
        Date.now(),
      );
      return `${present ? "added" : "removed"} node address ${ip}`;
    }
    case "keeper-kill":
      if (!model.keeper.running) return "skipped: the keeper is not running";
      await node.killKeeper();
      // A restore it had started finishes or not; either is a state the model allows.
      await sleep(300);
      model.keeper.running = false;
      if (model.entryOnDisk === "maybe") model.entryOnDisk = node.hasEntryOnDisk() ? "present" : "absent";
      return "killed the keeper (SIGKILL)";
    case "keeper-start":
      if (model.keeper.running) return "skipped: the keeper is running";
      await node.startKeeper();
      model.keeper = { running: true, since: Date.now() };
      if (model.entryOnDisk === "absent") model.entryOnDisk = "maybe";
      return "started the keeper";
    case "pause":
      await sleep(step.ms);
      return `paused ${step.ms} ms`;
    case "containerd-restart":
      if (!ctx.runtime.restart) return "skipped: no runtime daemon";
      await ctx.runtime.restart();
      return "restarted containerd";
  }
}

function pickLive(model: Model, pick: number): ModelPod | undefined {
  const live = model.live();
  return live[pick % Math.max(1, live.length)];
}

/** A present uplink address of the family, by `pick`. */
const someAddress = (model: Model, family: Family, pick: number) =>
  model.node[family][pick % model.node[family].length] as string;

/** The annotation (or runtime hostIP) a pod asks for, by the step's `ask`; `refuse`: an address it may not have. */
function askOf(model: Model, step: Extract<Step, { kind: "add" }>): { annotation?: Annotation; hostIP?: string } {
  const v4 = someAddress(model, 4, step.pick);
  switch (step.ask) {
    case 5:
      return { annotation: { all: [v4], byPort: [] } };
    case 6:
      return { annotation: { all: [v4, someAddress(model, 6, step.pick)], byPort: [] } };
    case 7:
      return { annotation: { all: [], byPort: [{ port: 0, proto: "tcp", ips: [v4] }] } };
    case 8: {
      const absent = model.node[4].includes(OPTIONAL_ADDRESS[4]) ? [] : [OPTIONAL_ADDRESS[4]];
      const refused = [...REFUSED_ADDRESSES, ...absent];
      return { annotation: { all: [refused[step.pick % refused.length] as string], byPort: [] } };
    }
    case 9:
      return { hostIP: step.pick % 2 === 0 ? someAddress(model, 4, step.pick >> 1) : "0.0.0.0" };
    default:
      return {};
  }
}

/**
 * The pod's mappings: for each protocol, the first port (from a place `pick` chooses) where it shares no
 * address with a live pod; undefined when there is none. Pods whose policy opens every address ("any") keep
 * off the Services' ports.
 */
function resolveAsk(model: Model, net: NetworkSpec, step: Extract<Step, { kind: "add" }>): PodAsk | undefined {
  const families: Family[] = net.subnet6 ? [4, 6] : [4];
  const asked = askOf(model, step);
  let annotation = asked.annotation;
  const maybeUnscoped = net.managed && model.entryOnDisk !== "present";
  const mappings: Mapping[] = [];
  // Two hostPorts of one protocol in one dual-stack pod on iptables-legacy: portmap writes only the first in IPv6
  // (ip6tables-legacy 1.8.9's `-C` finds a rule of the other port) and our ADD refuses the pod (102), as
  // test/e2e/mixed-node.test.ts shows; the model draws one hostPort per protocol there.
  const skips = net.table === "iptables-legacy" && net.subnet6 !== undefined;
  for (const [k, proto] of (skips ? [...new Set(step.protos)] : step.protos).entries()) {
    const pool = PORTS[proto];
    let chosen: { m: Mapping; annotation: Annotation | undefined } | undefined;
    for (let j = 0; j < pool.length && !chosen; j++) {
      const port = pool[(step.pick + j) % pool.length] as number;
      if (mappings.some((m) => m.proto === proto && m.hostPort === port)) continue;
      const hostIP = k === 0 ? (asked.hostIP ?? "") : "";
      const m: Mapping = { proto, hostPort: port, containerPort: CONTAINER_PORT[proto], hostIP };
      // The annotation's entry for one port names the first mapping's.
      const a =
        k === 0 && annotation
          ? { all: annotation.all, byPort: annotation.byPort.map((e) => ({ ...e, port, proto })) }
          : annotation;
      const ask: PodAsk = { mappings: [m], ...(a ? { annotation: a } : {}) };
      const open = claim(net, ask, m, families).has("*");
      const service = SERVICES.some((s) => (s[proto] as readonly number[]).includes(port));
      if (open && service) continue;
      if (!model.collides(net, ask, families, maybeUnscoped)) chosen = { m, annotation: a };
    }
    if (!chosen) return undefined;
    mappings.push(chosen.m);
    annotation = chosen.annotation;
  }
  return { mappings, ...(annotation ? { annotation } : {}) };
}

async function addPod(ctx: Ctx, step: Extract<Step, { kind: "add" }>, at: number): Promise<string> {
  const { model } = ctx;
  const net = ctx.networks[step.net % ctx.networks.length] as NetworkSpec;
  const ask = resolveAsk(model, net, step);
  if (!ask) return `skipped: no free port on ${net.name}`;
  const name = `p${at}`;
  const r = await ctx.runtime.add(name, net, ask);
  const what = `${name} on ${net.name}: ${ask.mappings.map((m) => `${m.proto}/${m.hostPort}${m.hostIP ? ` hostIP ${m.hostIP}` : ""}`).join(", ")}${ask.annotation ? ` annotation "${annotationText(ask.annotation)}"` : ""}`;
  const entryExpected =
    !net.managed || model.entryOnDisk === "present" ? true : model.entryOnDisk === "absent" ? false : undefined;
  if (entryExpected !== undefined && r.withEntry !== entryExpected)
    throw new ModelFailure(
      at,
      `${what}: the conflist ${r.withEntry ? "had" : "lacked"} our entry, the model says otherwise`,
    );
  // A refusal does not depend on the pod's address: judge it with stand-ins of its families.
  const stand = { 4: "0.0.0.0", ...(net.subnet6 ? { 6: "::" } : {}) };
  const refused = r.withEntry && FAMILIES.some((f) => decided(net, ask, stand, f, model.node) === "refused");
  if (refused) {
    if (r.ok || r.code !== 100)
      throw new ModelFailure(
        at,
        `${what}: expected a refusal (code 100), got ${r.ok ? "success" : `code ${r.code}`}\n${r.text}`,
      );
    // Nothing of it may be left: it counts as a deleted pod that never had rules.
    model.pods.push({
      ...newPod(
        { name, id: r.id, net, ask, ips: {}, withEntry: true, record: undefined },
        { 4: "", 6: "" },
        Date.now(),
      ),
      live: false,
    });
    count(ctx, "refused");
    return `${what}: refused (code 100)`;
  }
  if (!r.ok) throw new ModelFailure(at, `${what}: ADD failed\n${r.text}`);
  const coverage = {
    4: r.withEntry ? (decided(net, ask, r.ips, 4, model.node) as string) : unscoped(ask, r.ips, 4),
    6: r.withEntry ? (decided(net, ask, r.ips, 6, model.node) as string) : unscoped(ask, r.ips, 6),
  };
  const record = r.withEntry ? { state: "added" as const, at: Date.now() } : undefined;
  if (!model.live().some((p) => p.net === net)) model.namedSince.set(net.name, Date.now());
  model.pods.push(
    newPod({ name, id: r.id, net, ask, ips: r.ips, withEntry: r.withEntry, record }, coverage, Date.now()),
  );
  return `${what}${r.withEntry ? "" : " (without our entry)"}: ${FAMILIES.map((f) => `IPv${f} ${show(coverage[f])}`).join(", ")}`;
}

async function checkPod(ctx: Ctx, pick: number, at: number): Promise<string> {
  const { model } = ctx;
  const pod = pickLive(model, pick);
  if (!pod || !ctx.runtime.check) return "skipped";
  const r = await ctx.runtime.check(pod.name);
  const code = r.code === 0 ? 0 : (JSON.parse(r.stdout || "{}") as { code?: number }).code;
  if (model.keeper.running) {
    // The keeper may be rewriting the rules meanwhile: either answer, but no other failure.
    if (code !== 0 && ![100, 102, 103].includes(code ?? -1))
      throw new ModelFailure(at, `CHECK of ${pod.name}: exit ${r.code}\n${r.stdout}${r.stderr}`);
    return `CHECK ${pod.name}: ${code === 0 ? "ok" : `code ${code}`}`;
  }
  // CHECK compares the families and mappings the policy scopes; a runtime's own hostIP is portmap's business.
  const runtime = new Set(
    pod.ask.mappings.filter((m) => !["", "0.0.0.0"].includes(m.hostIP)).map((m) => `${m.proto}/${m.hostPort}`),
  );
  const scoped = (c: string) =>
    coverageKey(
      entriesOf(c)
        .filter((e) => !runtime.has(e.port))
        .map((e) => `${e.port}@${e.dest}>${e.target}`),
    );
  const right = FAMILIES.every((f) => {
    const h = model.healed(pod, f);
    return h !== undefined && pod.allowed[f].size === 1 && scoped([...pod.allowed[f]][0] as string) === scoped(h);
  });
  const ok = nothingToScope(pod.net, pod.ask) || right;
  if ((code === 0) !== ok)
    throw new ModelFailure(
      at,
      `CHECK of ${pod.name}: ${code === 0 ? "passed" : `failed (code ${code})`}, expected it to ${ok ? "pass" : "fail"}; rules ${FAMILIES.map((f) => `IPv${f} ${[...pod.allowed[f]].map(show).join("|")}`).join(", ")}\n${r.stdout}${r.stderr}`,
    );
  return `CHECK ${pod.name}: ${code === 0 ? "ok" : `code ${code}`}`;
}

/** After each step: the node's tables, read, must be what the model allows. */
async function checkInvariants(ctx: Ctx, at: number, read?: NodeRead): Promise<NodeRead> {
  const { node, model } = ctx;
  const now = Date.now();
  const current = read ?? (await node.read(podRefs(model)));
  const problems: string[] = [...current.misplaced];
  if (model.keeper.running && node.keeper && node.keeper.child.exitCode !== null)
    problems.push(`the keeper exited (${node.keeper.child.exitCode}):\n${node.keeper.output().slice(-3000)}`);
  const foreignNow = current.foreign;
  if (JSON.stringify(foreignNow) !== JSON.stringify(ctx.foreign))
    problems.push(
      `rules that are neither portmap's nor ours changed:\n  before: ${ctx.foreign.filter((l) => !foreignNow.includes(l)).join("\n          ")}\n  now:    ${foreignNow.filter((l) => !ctx.foreign.includes(l)).join("\n          ")}`,
    );
  problems.push(...model.observe(current.coverage, now, GRACE_SLACK_MS).map(violationText));
  if (problems.length > 0) throw new ModelFailure(at, `${problems.join("\n")}\n--- ${ctx.last}\n${tables(current)}`);
  return current;
}

const violationText = (v: Violation) => `${v.pod}: ${v.what}`;

function tables(read: NodeRead): string {
  return Object.entries(read.dumps)
    .map(
      ([name, lines]) =>
        `--- ${name}\n${lines.filter((l) => /CNI-|cni_hostport|comment "|dnat/.test(l) || name.startsWith("nftables")).join("\n")}`,
    )
    .join("\n");
}

/**
 * A quiescent point: with the keeper running, it must have done its work within SETTLE_MS (every live pod as
 * the policy says now, dead pods' rules that take a live pod's traffic gone, our entry back); then real
 * packets: every Service's ClusterIP and port, and a sample of pods on every address of the node.
 */
async function quiesce(ctx: Ctx, pick: number, at: number): Promise<string> {
  const { node, model } = ctx;
  let read: NodeRead;
  if (model.keeper.running) {
    const deadline = Date.now() + SETTLE_MS;
    for (;;) {
      read = await node.read(podRefs(model));
      const waiting = [
        ...model.unsettled(read.coverage).map(violationText),
        ...(node.hasEntryOnDisk() ? [] : ["our entry is not back in the conflist"]),
      ];
      if (waiting.length === 0) break;
      if (Date.now() > deadline)
        throw new ModelFailure(
          at,
          `the keeper did not settle within ${SETTLE_MS} ms:\n${waiting.join("\n")}\n--- keeper output (last lines)\n${node.keeper?.output().slice(-4000)}\n${tables(read)}`,
        );
      await sleep(500);
    }
    model.entryOnDisk = "present";
  } else read = await node.read(podRefs(model));
  read = await checkInvariants(ctx, at, read);
  const probes = plannedProbes(ctx, read, pick);
  for (let round = 1; ; round++) {
    const wrong = await runProbes(ctx, probes);
    if (wrong.length === 0) break;
    // A pass that the keeper started before the read may still be writing: one more look, then it is a failure.
    if (round >= 2 || !model.keeper.running)
      throw new ModelFailure(at, `packets went elsewhere than the model says:\n${wrong.join("\n")}\n${tables(read)}`);
    await sleep(1500);
    read = await checkInvariants(ctx, at);
  }
  count(ctx, "probes");
  ctx.stats.set("packets", (ctx.stats.get("packets") ?? 0) + probes.length);
  return `quiescent: ${model.live().length} live pods, ${probes.length} probes as the model says`;
}

interface Probe {
  from: "client" | "node";
  proto: Proto;
  address: string;
  port: number;
  expect: string | null;
}

/** Who must answer at address:port now: the one live pod whose rules take it, else the Service there, else no one. */
function expectedAt(
  model: Model,
  read: NodeRead,
  proto: Proto,
  port: number,
  address: string,
): string | null | undefined {
  const f = familyOf(address);
  const takers = (pods: readonly ModelPod[]) =>
    pods.filter((p) =>
      entriesOf(read.coverage.get(p.id)?.[f] ?? "").some(
        (e) => e.port === `${proto}/${port}` && !e.target.endsWith("(unreachable)") && covers(e.dest, address),
      ),
    );
  // A dead pod's rules send the packet to an address no one has any more: nothing to learn from it.
  if (takers(model.pods.filter((p) => !p.live)).length > 0) return undefined;
  const live = takers(model.live());
  if (live.length > 1) return undefined;
  if (live.length === 1) return `pod-${(live[0] as ModelPod).name}`;
  const service = SERVICES.find((s) => s.ip === address && (s[proto] as readonly number[]).includes(port));
  return service ? service.identity : null;
}

function plannedProbes(ctx: Ctx, read: NodeRead, pick: number): Probe[] {
  const { model } = ctx;
  const probes: Probe[] = [];
  const add = (proto: Proto, address: string, port: number) => {
    const expect = expectedAt(model, read, proto, port, address);
    if (expect === undefined) return;
    probes.push({ from: address === LOCALHOST ? "node" : "client", proto, address, port, expect });
  };
  for (const s of SERVICES)
    for (const proto of ["tcp", "udp"] as const) for (const port of s[proto]) add(proto, s.ip, port);
  const choose = chooser(pick);
  const live = [...model.live()];
  for (let n = 0; n < SAMPLED_PODS && live.length > 0; n++) {
    const [pod] = live.splice(choose(live.length), 1) as [ModelPod];
    const families = FAMILIES.filter((f) => pod.ips[f] !== undefined);
    for (const m of pod.ask.mappings)
      for (const address of probeAddresses(model.node))
        if (families.includes(familyOf(address)) && !(address === LOCALHOST && m.proto === "udp"))
          add(m.proto, address, m.hostPort);
  }
  return probes;
}

/** Sends the probes (a few at a time); returns the ones answered otherwise than expected. */
async function runProbes(ctx: Ctx, probes: readonly Probe[]): Promise<string[]> {
  const wrong: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: PROBE_CONCURRENCY }, async () => {
      while (next < probes.length) {
        const p = probes[next++] as Probe;
        const ns = p.from === "node" ? ctx.node.ns : ctx.node.topo.client;
        const got = await whoAnswers(ns, p.proto, p.address, p.port);
        if (got !== p.expect)
          wrong.push(
            `${p.proto} ${p.address}:${p.port} from the ${p.from}: ${got ?? "no one"} answered, expected ${p.expect ?? "no one"}`,
          );
      }
    }),
  );
  return wrong;
}

/** Delta debugging over the steps that led to a failure: a smaller list that still fails (each try on a fresh node). */
async function shrink(cfg: ModelConfig, steps: readonly Step[], failing: number[], log: (line: string) => void) {
  const deadline = Date.now() + cfg.shrinkSeconds * 1000;
  let current = failing;
  let parts = 2;
  let tries = 0;
  while (current.length > 1 && Date.now() < deadline) {
    const size = Math.ceil(current.length / parts);
    let smaller: number[] | undefined;
    for (let k = 0; k < parts && !smaller && Date.now() < deadline; k++) {
      const candidate = current.filter((_, j) => j < k * size || j >= (k + 1) * size);
      if (candidate.length === 0) continue;
      tries++;
      const r = await runOnce(cfg, steps, candidate, () => {});
      if (r.failure) smaller = candidate;
    }
    if (smaller) {
      current = smaller;
      parts = Math.max(parts - 1, 2);
      log(`model: shrunk to ${current.length} steps (${tries} tries)`);
    } else if (parts >= current.length) break;
    else parts = Math.min(parts * 2, current.length);
  }
  return { kept: current, tries, finished: Date.now() < deadline };
}

/** Runs the model; on a failure shrinks it and reports how to replay both. */
export async function runModel(cfg: ModelConfig): Promise<ModelResult> {
  const steps = modelSteps(cfg.seed, cfg.steps, cfg.weights);
  const indices = cfg.keep ?? steps.map((_, i) => i);
  const aimed = process.env["PMH_MODEL_WEIGHTS"];
  const weights = aimed ? `PMH_MODEL_WEIGHTS=${aimed} ` : "";
  const replay = (keep?: readonly number[]) =>
    `${weights}PMH_MODEL_SEED=${cfg.seed} PMH_MODEL_STEPS=${cfg.steps}${keep ? ` PMH_MODEL_KEEP=${keep.join(",")}` : ""} npx vitest run --project e2e ${cfg.file}`;
  cfg.log(`model: seed ${cfg.seed}, ${indices.length} steps; replay: ${replay(cfg.keep)}`);
  const first = await runOnce(cfg, steps, indices, cfg.log);
  if (!first.failure) return { ok: true, report: first.lines.join("\n") };
  const failure = first.failure;
  const upTo = indices.filter((i) => i <= failure.at);
  const report = [
    `model: FAILED at step #${failure.at} of seed ${cfg.seed} (${cfg.steps} steps drawn)`,
    failure.message,
    `replay: ${replay(cfg.keep)}`,
    "steps run:",
    ...first.lines.map((l) => `  ${l}`),
  ];
  cfg.log(report.slice(0, 3).join("\n"));
  if (cfg.shrinkSeconds > 0 && upTo.length > 1) {
    const s = await shrink(cfg, steps, upTo, cfg.log);
    report.push(
      `shrunk to ${s.kept.length} of ${upTo.length} steps in ${s.tries} tries${s.finished ? "" : " (time was up)"}: ${replay(s.kept)}`,
      ...s.kept.map((i) => `  #${i} ${stepText(steps[i] as Step)}`),
    );
  }
  return { ok: false, report: report.join("\n") };
}

/**
 * Reads the model's settings from the environment: a seed (default: a random one), a step count, a shrunk list,
 * the shrinking time, and step weights (PMH_MODEL_WEIGHTS="add=4,flush-nft=3,…": only those kinds, to aim a run).
 */
export function modelSettings(defaults: { steps: number; weights: StepWeights }): {
  seed: number;
  steps: number;
  keep?: number[];
  shrinkSeconds: number;
  weights: StepWeights;
} {
  const env = process.env;
  const seed = env["PMH_MODEL_SEED"] ? Number(env["PMH_MODEL_SEED"]) : Math.floor(Math.random() * 2 ** 31);
  const steps = env["PMH_MODEL_STEPS"] ? Number(env["PMH_MODEL_STEPS"]) : defaults.steps;
  const keep = env["PMH_MODEL_KEEP"]?.split(",").map(Number);
  const shrinkSeconds = env["PMH_MODEL_SHRINK_SECONDS"] ? Number(env["PMH_MODEL_SHRINK_SECONDS"]) : 300;
  for (const [name, v] of [
    ["PMH_MODEL_SEED", seed],
    ["PMH_MODEL_STEPS", steps],
    ["PMH_MODEL_SHRINK_SECONDS", shrinkSeconds],
    ...(keep ?? []).map((k) => ["PMH_MODEL_KEEP", k] as const),
  ] as const)
    if (!Number.isInteger(v) || v < 0) throw new Error(`${name} must be whole numbers, got ${env[name]}`);
  const weights = env["PMH_MODEL_WEIGHTS"]
    ? Object.fromEntries(
        env["PMH_MODEL_WEIGHTS"].split(",").map((pair) => {
          const [kind, weight] = pair.split("=");
          if (!kind || !(kind in defaults.weights) || !(Number(weight) > 0))
            throw new Error(
              `PMH_MODEL_WEIGHTS: ${JSON.stringify(pair)} is not KIND=WEIGHT of ${Object.keys(defaults.weights).join(", ")}`,
            );
          return [kind, Number(weight)];
        }),
      )
    : defaults.weights;
  return { seed, steps, ...(keep ? { keep } : {}), shrinkSeconds, weights };
}
