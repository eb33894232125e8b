// Load: 50 pods (real bridge + host-local + portmap + ours, each in its own namespace) added at once and
// deleted at once, while a kube-proxy-like writer runs `iptables-restore --noflush` of its own chains in a
// loop — for iptables-nft and iptables-legacy. Every ADD and DEL succeeds (or fails with code 11 and succeeds
// when retried, as a runtime retries); every live pod's chain is exactly what its policy says; deleted pods
// leave nothing; every rule that is neither a pod's nor the writer's is byte-identical to before; and the
// writer lost no rule.
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  type ChainRun,
  containerdMapping,
  describeRun,
  dnChainName,
  type Harness,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  natSave,
  POD_SUBNET,
  type Pod,
  podIPs,
  podRuntime,
  type RuntimeConf,
  rulesIn,
  scopedRules,
  withoutPlugin,
} from "../support/harness.js";
import { nsRun } from "../support/netns.js";
import { pluginPath } from "../support/paths.js";

const PODS = 50;
/** How many sandboxes the "runtime" sets up at a time before the CNI chain (netns + bridge). */
const SETUP_CONCURRENCY = 8;
const RETRIES = 5;
const WRITER_CHAINS = 4;
const WRITER_MAX_ITERATIONS = 2000;

async function inBatches<T, R>(items: readonly T[], size: number, f: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: size }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]!, i);
      }
    }),
  );
  return out;
}

/** The pod's policy: annotation for every mapping, the node default, or an annotation for one mapping only. */
function podPlan(i: number) {
  const tcp = 20000 + i;
  const udp = 21000 + i;
  const node = [NODE_IP1, NODE_IP2, "127.0.0.1"];
  switch (i % 3) {
    case 0:
      return { tcp, udp, annotation: NODE_IP2, ips: { tcp: [NODE_IP2], udp: [NODE_IP2] } };
    case 1:
      return { tcp, udp, annotation: undefined, ips: { tcp: node, udp: node } };
    default:
      return { tcp, udp, annotation: `${tcp}/tcp=${NODE_IP1}`, ips: { tcp: [NODE_IP1], udp: node } };
  }
}

/** A kube-proxy-like writer: whole-chain refills of its service chains plus one appended rule per round. */
class Writer {
  readonly succeeded: number[] = [];
  readonly failures: string[] = [];
  private stop = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly ns: string,
    private readonly path: string,
  ) {}

  private restore(input: string) {
    return nsRun(this.ns, "iptables-restore", ["-w", "--noflush"], { input, env: { ...process.env, PATH: this.path } });
  }

  async init(): Promise<void> {
    const chains = Array.from({ length: WRITER_CHAINS }, (_, k) => `:KUBE-SVC-LOAD${k} - [0:0]`);
    const jumps = Array.from(
      { length: WRITER_CHAINS },
      (_, k) => `-A KUBE-SERVICES -d 10.96.0.${60 + k}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-LOAD${k}`,
    );
    const r = await this.restore(
      [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-LOAD-LOG - [0:0]",
        ...chains,
        "-A PREROUTING -j KUBE-SERVICES",
        ...jumps,
        "COMMIT",
        "",
      ].join("\n"),
    );
    expect(r.code, r.stderr).toBe(0);
  }

  static svcRule(k: number, gen: number): string {
    return `-A KUBE-SVC-LOAD${k} -m comment --comment "gen ${gen}" -j DNAT --to-destination 10.244.9.${(gen % 250) + 1}`;
  }

  static logRule(gen: number): string {
    return `-A KUBE-LOAD-LOG -m comment --comment "iter ${gen}" -j RETURN`;
  }

  start(): void {
    this.loop = (async () => {
      for (let i = 0; !this.stop && i < WRITER_MAX_ITERATIONS; i++) {
        const k = i % WRITER_CHAINS;
        const r = await this.restore(
          ["*nat", `:KUBE-SVC-LOAD${k} - [0:0]`, Writer.svcRule(k, i), Writer.logRule(i), "COMMIT", ""].join("\n"),
        );
        if (r.code === 0) this.succeeded.push(i);
        else this.failures.push(`${i}: exit ${r.code} ${r.stderr.trim()}`);
      }
    })();
  }

  async finish(): Promise<void> {
    this.stop = true;
    await this.loop;
  }

  /** What the writer's chains must hold now. */
  expected(): { log: string[]; svc: string[][] } {
    const svc = Array.from({ length: WRITER_CHAINS }, (_, k) => {
      const last = this.succeeded.filter((i) => i % WRITER_CHAINS === k).at(-1);
      return last === undefined ? [] : [Writer.svcRule(k, last)];
    });
    return { log: this.succeeded.map(Writer.logRule), svc };
  }
}

const isWriterLine = (l: string) => /^-A KUBE-(SVC-LOAD\d|LOAD-LOG) /.test(l);

interface LivePod {
  pod: Pod;
  rt: RuntimeConf;
  chain: string;
  plan: ReturnType<typeof podPlan>;
  bridgeResult: Record<string, unknown>;
  result?: Record<string, unknown>;
  retries: number;
}

/** Runs `step` until it succeeds; a failure is retried (at most RETRIES times) only when its code is 11. */
async function withRetry(step: () => Promise<ChainRun>, pod: LivePod): Promise<ChainRun> {
  for (let attempt = 0; ; attempt++) {
    const run = await step();
    if (run.ok) return run;
    const code = run.failed?.output?.["code"];
    if (code !== 11 || attempt >= RETRIES) return run;
    pod.retries++;
  }
}

describeAsRoot.each([
  { variant: "iptables-nft", legacy: false },
  { variant: "iptables-legacy", legacy: true },
])("load, $variant", ({ legacy }) => {
  const h: Harness = useHarness({ legacyIptables: legacy });

  it(`${PODS} pods added at once and deleted at once, a kube-proxy-like writer running all along`, {
    timeout: 300_000,
  }, async () => {
    const path = h.iptables.path ?? pluginPath();
    const list: NetConfList = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const writer = new Writer(h.topo.node, path);
    await writer.init();

    // A pod of portmap alone whose unscoped rules must survive everything, and portmap's shared chains.
    const sentinel = await h.startPod("sentinel", withoutPlugin(list), {
      portMappings: [containerdMapping(7070, 70), containerdMapping(20001, 1)],
    });
    expect(sentinel.add.ok, describeRun(sentinel.add)).toBe(true);
    const before = { v4: await natSave(h.topo.node, 4, h.iptables), v6: await natSave(h.topo.node, 6, h.iptables) };

    // Sandboxes and bridge, a few at a time, as a runtime sets them up.
    const pods: LivePod[] = await inBatches(
      Array.from({ length: PODS }, (_, i) => i),
      SETUP_CONCURRENCY,
      async (i) => {
        const plan = podPlan(i);
        const pod = await h.topo.addPod(`p${i}`);
        const rt = podRuntime(pod, {
          portMappings: [containerdMapping(plan.tcp, 80), containerdMapping(plan.udp, 53, "udp")],
          ...(plan.annotation === undefined ? {} : { hostIPAnnotation: plan.annotation }),
        });
        const bridge = await h.cni.add(list, rt, { to: 1 });
        expect(bridge.ok, describeRun(bridge)).toBe(true);
        return {
          pod,
          rt,
          chain: dnChainName(list.name, pod.containerID),
          plan,
          bridgeResult: bridge.result!,
          retries: 0,
        };
      },
    );

    writer.start();
    try {
      // portmap + ours for all pods at once.
      const adds = await Promise.all(
        pods.map((p) => withRetry(() => h.cni.add(list, p.rt, { from: 1, prevResult: p.bridgeResult }), p)),
      );
      adds.forEach((run, i) => {
        expect(run.ok, `ADD of pod ${i}:\n${describeRun(run)}`).toBe(true);
        pods[i]!.result = run.result!;
      });

      const during = { v4: await natSave(h.topo.node, 4, h.iptables), v6: await natSave(h.topo.node, 6, h.iptables) };
      for (const p of pods) {
        const podIP = podIPs(p.result).v4!;
        const spec = { chain: p.chain, family: 4 as const, podSubnet: POD_SUBNET, podIP };
        const expected = [
          ...scopedRules({ ...spec, hostPort: p.plan.tcp, containerPort: 80, protocol: "tcp" }, p.plan.ips.tcp),
          ...scopedRules({ ...spec, hostPort: p.plan.udp, containerPort: 53, protocol: "udp" }, p.plan.ips.udp),
        ];
        expect(rulesIn(during.v4, p.chain), `chain of ${p.pod.name}`).toEqual(expected);
      }
      // Everything that is neither a pod's nor the writer's is as before, line for line.
      const podLines = (l: string) =>
        pods.some((p) => l.includes(p.chain) || l.includes(`id: \\"${p.pod.containerID}\\"`));
      const others = (save: string[]) => save.filter((l) => !podLines(l) && !isWriterLine(l));
      expect(others(during.v4)).toEqual(others(before.v4));
      expect(others(during.v6)).toEqual(others(before.v6));

      // DEL of all pods at once (ours, portmap, bridge, in libcni's reverse order).
      const dels = await Promise.all(pods.map((p) => withRetry(() => h.cni.del(list, p.rt), p)));
      for (const [i, run] of dels.entries()) expect(run.ok, `DEL of pod ${i}:\n${describeRun(run)}`).toBe(true);
    } finally {
      await writer.finish();
    }

    const after = { v4: await natSave(h.topo.node, 4, h.iptables), v6: await natSave(h.topo.node, 6, h.iptables) };
    // Deleted pods leave nothing; the rest is byte-identical to before, the writer's chains aside …
    expect(after.v4.filter((l) => !isWriterLine(l))).toEqual(before.v4.filter((l) => !isWriterLine(l)));
    expect(after.v6).toEqual(before.v6);
    // … and those hold exactly what the writer wrote: no lost (or doubled) rule.
    const wrote = writer.expected();
    expect(writer.failures).toEqual([]);
    expect(writer.succeeded.length).toBeGreaterThan(5);
    expect(rulesIn(after.v4, "KUBE-LOAD-LOG")).toEqual(wrote.log);
    for (const [k, rules] of wrote.svc.entries()) expect(rulesIn(after.v4, `KUBE-SVC-LOAD${k}`)).toEqual(rules);

    const retried = pods.filter((p) => p.retries > 0).map((p) => `${p.pod.name}×${p.retries}`);
    console.log(
      `${legacy ? "legacy" : "nft"}: writer rounds ${writer.succeeded.length}; retried (code 11): ${retried.join(", ") || "none"}`,
    );

    await inBatches(pods, SETUP_CONCURRENCY, (p) => h.topo.removePod(p.pod));
  });
});
