// portmap v1.9.1's nftables backend, what only it has: portmap's own CHECK (it counts the pod's rules per
// family) and DEL (by comment) on our rewritten rules, concurrent ADDs, a batch racing a DEL and ADD of the
// same pod, and hostile inputs that never reach nft. Runs in the 1.9.1-nftables run of
// scripts/test-portmap-matrix (the other scenarios of that run are the backend-neutral files).
import { rmSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  IS_ROOT,
  keepConntrackOn,
  type NatSnapshot,
  NEVER_MATCHING_IP,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  nftPodRules,
  nftPortmapRule,
  PLUGIN_TYPE,
  type PortMapping,
  podIPs,
  podRuntime,
  podTraces,
  portmapVariant,
  REPO_ROOT,
  type RuntimeConf,
  snapshot,
  whoAnswers,
  withoutPlugin,
} from "../support/harness.js";
import { cases, type Json, withAnnotation } from "../support/hostile-cases.js";
import { nsRunOk, spawnInNs, stopChild } from "../support/netns.js";
import { racingNft } from "../support/nftables.js";
import { pluginPath } from "../support/paths.js";
import { CRASH_TRACE, createStandins, invocations, type RawRun, runPluginRaw } from "../support/standins.js";

const NFTABLES = process.env["PMH_PORTMAP"] === "1.9.1-nftables";
if (!NFTABLES)
  console.warn("nftables.test.ts runs with PMH_PORTMAP=1.9.1-nftables (scripts/test-portmap-matrix): skipped here");
const describeNft = describe.skipIf(!IS_ROOT || !NFTABLES);

describeNft("portmap's nftables backend", () => {
  const h = useHarness();

  beforeAll(() => {
    expect(portmapVariant().backend).toBe("nftables");
  });

  /** Bridge and portmap through the invoker, then our plugin alone with `PATH` (e.g. an nft stand-in first). */
  async function oursWithPath(name: string, path: string, portMappings: PortMapping[], hostIPAnnotation: string) {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
    const pod = await h.topo.addPod(name);
    const rt = podRuntime(pod, { portMappings, hostIPAnnotation });
    const base = await h.cni.add(list, rt, { to: at });
    if (!base.ok) throw new Error(describeRun(base));
    const stdin = h.cni.pluginStdin(list, list.plugins[at]!, rt, base.result);
    const env = h.cni.pluginEnv("ADD", rt, path);
    const run = await runPluginRaw(h.topo.node, { env, input: JSON.stringify(stdin) });
    return { list, rt, run, podIP: podIPs(base.result).v4! };
  }

  it("portmap's own CHECK passes on our rules, a family left without host IPs included; DEL through the chain leaves nothing", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const mappings = [containerdMapping(8090, 80), containerdMapping(5390, 53, "udp")];
    const { pod, add, rt } = await h.startPod("check", list, {
      portMappings: mappings,
      hostIPAnnotation: NODE_IP2,
      serve: { tcp: [80], udp: [53] },
    });
    expect(add.ok, describeRun(add)).toBe(true);
    const ips = podIPs(add.result);
    const tcp = { hostPort: 8090, containerPort: 80, containerID: pod.containerID };
    const udp = { hostPort: 5390, containerPort: 53, protocol: "udp" as const, containerID: pod.containerID };
    expect(await nftPodRules(h.topo.node, 4, pod.containerID)).toEqual([
      nftPortmapRule({ ...tcp, family: 4, podIP: ips.v4! }, NODE_IP2),
      nftPortmapRule({ ...udp, family: 4, podIP: ips.v4! }, NODE_IP2),
    ]);
    // No IPv6 host IP: each mapping keeps one IPv6 rule that matches nothing, so portmap's count holds.
    expect(await nftPodRules(h.topo.node, 6, pod.containerID)).toEqual([
      nftPortmapRule({ ...tcp, family: 6, podIP: ips.v6! }, NEVER_MATCHING_IP[6]),
      nftPortmapRule({ ...udp, family: 6, podIP: ips.v6! }, NEVER_MATCHING_IP[6]),
    ]);

    const check = await h.cni.check(list, rt);
    expect(check.ok, describeRun(check)).toBe(true);
    expect(check.runs.map((r) => r.type)).toEqual(["bridge", "portmap", PLUGIN_TYPE]);

    const c = h.topo.client;
    expect(await whoAnswers(c, "tcp", NODE_IP2, 8090)).toBe("pod-check");
    expect(await whoAnswers(c, "udp", NODE_IP2, 5390)).toBe("pod-check");
    expect(await whoAnswers(c, "tcp", NODE_IP1, 8090)).toBeNull();
    await h.topo.settleIPv6();
    expect(await whoAnswers(c, "tcp", NODE_IP6, 8090)).toBeNull();

    const del = await h.cni.del(list, rt);
    expect(del.ok, describeRun(del)).toBe(true);
    expect(podTraces(await snapshot(h.topo, h.iptables), list.name, pod.containerID)).toEqual([]);
  });

  it("pods added at once all end scoped, each with its own rules", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const ports = [8101, 8102, 8103, 8104, 8105, 8106];
    const started = await Promise.all(
      ports.map((port, i) =>
        h.startPod(`p${i}`, list, { portMappings: [containerdMapping(port, 80)], serve: { tcp: [80] } }),
      ),
    );
    for (const [i, { pod, add }] of started.entries()) {
      expect(add.ok, describeRun(add)).toBe(true);
      const spec = {
        family: 4 as const,
        podIP: podIPs(add.result).v4!,
        hostPort: ports[i]!,
        containerPort: 80,
        containerID: pod.containerID,
      };
      expect(await nftPodRules(h.topo.node, 4, pod.containerID)).toEqual(
        [NODE_IP1, NODE_IP2, "127.0.0.1"].map((ip) => nftPortmapRule(spec, ip)),
      );
    }
    // Three rules where portmap wrote one: its CHECK (at least as many as it wrote) passes.
    const check = await h.cni.check(list, started[0]!.rt);
    expect(check.ok, describeRun(check)).toBe(true);
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP1, ports[0]!)).toBe("pod-p0");
    expect(await whoAnswers(h.topo.client, "tcp", NODE_IP2, ports[5]!)).toBe("pod-p5");
  });

  it("a batch that races a DEL and ADD of the pod (its rules back under new handles) is read again and retried", async () => {
    const nft = racingNft(h.topo.tmpDir, 1);
    const { rt, run, podIP } = await oursWithPath(
      "race1",
      `${nft.dir}:${pluginPath()}`,
      [containerdMapping(8110, 80)],
      NODE_IP2,
    );
    expect(run.code, run.stdout).toBe(0);
    expect(nft.racesLeft()).toBe(0);
    expect(await nftPodRules(h.topo.node, 4, rt.containerID)).toEqual([
      nftPortmapRule({ family: 4, podIP, hostPort: 8110, containerPort: 80, containerID: rt.containerID }, NODE_IP2),
    ]);
  });

  it("a batch that loses every race ends in code 11 with portmap's rules in place", async () => {
    const nft = racingNft(h.topo.tmpDir, 100);
    const { rt, run, podIP } = await oursWithPath(
      "race2",
      `${nft.dir}:${pluginPath()}`,
      [containerdMapping(8111, 80)],
      NODE_IP2,
    );
    expect(run.code).toBe(1);
    expect(run.output).toMatchObject({ code: 11, msg: expect.stringMatching(/changed during each of 3 rewrites/) });
    expect(await nftPodRules(h.topo.node, 4, rt.containerID)).toEqual([
      nftPortmapRule({ family: 4, podIP, hostPort: 8111, containerPort: 80, containerID: rt.containerID }),
    ]);
  });

  describe("reconcile", () => {
    const r = useHarness({ libcniCache: true });

    it("after the tables were deleted: runs portmap's ADD again from the cache, scopes it, and the ruleset is as before", async () => {
      const list = bridgeConflist({ dataDir: r.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
      const { add } = await r.startPod("wiped", list, {
        portMappings: [containerdMapping(8120, 80)],
        hostIPAnnotation: NODE_IP2,
        serve: { tcp: [80] },
      });
      expect(add.ok, describeRun(add)).toBe(true);
      const before = await snapshot(r.topo, r.iptables);
      for (const family of ["ip", "ip6"])
        await nsRunOk(r.topo.node, "nft", ["delete", "table", family, "cni_hostport"]);
      expect(await whoAnswers(r.topo.client, "tcp", NODE_IP2, 8120)).toBeNull();

      const run = await r.operator(["reconcile", "--cache-dir", r.cacheDir!, "--cni-bin-dir", r.cni.cniPath[0]!]);
      expect(run.code, run.stdout.slice(-700) + run.stderr).toBe(0);
      expect(run.stdout).toMatch(/nftables: .*ran portmap's ADD again .*re-scoped its nftables rules/);
      expect((await snapshot(r.topo, r.iptables)).nft).toEqual(before.nft);
      expect(await whoAnswers(r.topo.client, "tcp", NODE_IP2, 8120)).toBe("pod-wiped");
      expect(await whoAnswers(r.topo.client, "tcp", NODE_IP1, 8120)).toBeNull();

      const again = await r.operator(["reconcile", "--cache-dir", r.cacheDir!, "--cni-bin-dir", r.cni.cniPath[0]!]);
      expect(again.stdout).toMatch(/nftables: .*correct, left alone/);
      expect((await snapshot(r.topo, r.iptables)).nft).toEqual(before.nft);
    });

    it("after deleted tables, a UDP flow that started during the outage reaches the pod again", async () => {
      const list = bridgeConflist({ dataDir: r.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      const { add } = await r.startPod("udp", list, {
        portMappings: [containerdMapping(5353, 53, "udp")],
        serve: { udp: [53] },
      });
      expect(add.ok, describeRun(add)).toBe(true);
      await keepConntrackOn(r.topo.node);
      await nsRunOk(r.topo.node, "nft", ["delete", "table", "ip", "cni_hostport"]);
      const heard: string[] = [];
      const stream = await spawnInNs(
        r.topo.client,
        process.execPath,
        [join(REPO_ROOT, "test/support/udp-stream.mjs"), NODE_IP1, "5353", "100", "40055"],
        "ready",
      );
      try {
        stream.stdout!.on("data", (d: Buffer) => heard.push(...d.toString().split("\n")));
        await new Promise((done) => setTimeout(done, 500));
        const run = await r.operator(["reconcile", "--cache-dir", r.cacheDir!, "--cni-bin-dir", r.cni.cniPath[0]!]);
        // portmap's own ADD deletes the port's conntrack entries (the one made during the outage too); ours
        // then finds none that the scoped rules would send elsewhere.
        expect(run.stdout).toMatch(
          /nftables: default\/udp .*ran portmap's ADD again .*re-scoped its nftables rules \(IPv4\)\n/,
        );
        // The first test's dual-stack pod lost only its IPv4 rules with that table: written again, scoped.
        expect(run.stdout).toMatch(
          /nftables: default\/wiped .*ran portmap's ADD again .*re-scoped its nftables rules \(IPv4, IPv6\)\n/,
        );
        expect(run.code, run.stdout + run.stderr).toBe(0);
        const deadline = Date.now() + 8000;
        while (!heard.includes("pod-udp")) {
          if (Date.now() > deadline)
            throw new Error(`the flow did not reach the pod; heard: ${heard.slice(-5).join(", ")}`);
          await new Promise((done) => setTimeout(done, 100));
        }
      } finally {
        await stopChild(stream);
      }
    });

    it("re-scopes a pod whose unscoped rules are back (portmap's ADD again), without running portmap", async () => {
      const list = bridgeConflist({ dataDir: r.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
      const { add, rt, pod } = await r.startPod("unscoped", list, {
        portMappings: [containerdMapping(8121, 80)],
        hostIPAnnotation: NODE_IP2,
      });
      expect(add.ok, describeRun(add)).toBe(true);
      const scoped = await nftPodRules(r.topo.node, 4, pod.containerID);
      const portmapAgain = await r.cni.add(list, rt, { from: 1, to: 2, prevResult: add.runs[0]!.output! });
      expect(portmapAgain.ok, describeRun(portmapAgain)).toBe(true);
      expect(await nftPodRules(r.topo.node, 4, pod.containerID)).not.toEqual(scoped);

      const dry = await r.operator(["reconcile", "--cache-dir", r.cacheDir!, "--dry-run"]);
      expect(dry.stdout).toMatch(/nftables: .*unscoped.*would re-scope its nftables rules \(IPv4\)/);
      const run = await r.operator(["reconcile", "--cache-dir", r.cacheDir!]);
      expect(run.code, run.stdout + run.stderr).toBe(0);
      expect(await nftPodRules(r.topo.node, 4, pod.containerID)).toEqual(scoped);

      // status reads the same rules: the pod's mapping, scoped to the annotated IP.
      const st = await r.operator(["status", "--cache-dir", r.cacheDir!, "--json"]);
      expect(st.code, st.stderr).toBe(0);
      const rows = (JSON.parse(st.stdout) as { mappings: Array<Record<string, unknown>> }).mappings.filter(
        (m) => m["containerId"] === pod.containerID,
      );
      expect(rows).toEqual([
        expect.objectContaining({
          family: 4,
          pod: "default/unscoped",
          chain: "ip cni_hostport hostports",
          hostPort: 8121,
          destinations: [NODE_IP2],
          state: "scoped",
        }),
      ]);
    });
  });

  describe("gc", () => {
    const g = useHarness({ libcniCache: true });

    it("deletes the rules of a container no cached attachment has, and leaves the live pod's alone", async () => {
      const list = bridgeConflist({ dataDir: g.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
      const live = await g.startPod("live", list, { portMappings: [containerdMapping(8130, 80)] });
      const dead = await g.startPod("dead", list, { portMappings: [containerdMapping(8131, 80)] });
      expect(live.add.ok && dead.add.ok, describeRun(dead.add)).toBe(true);
      // Its attachment is gone without portmap's DEL (a runtime that lost it): its rules are orphans.
      rmSync(g.cni.cacheFilePath(list, dead.rt));
      const before = await snapshot(g.topo, g.iptables);

      const dry = await g.operator(["gc", "--cache-dir", g.cacheDir!, "--dry-run"]);
      expect(dry.stdout).toMatch(
        new RegExp(`nftables: would delete \\d+ rule\\(s\\) of container ${dead.pod.containerID}`),
      );
      expect(await snapshot(g.topo, g.iptables)).toEqual(before);

      const run = await g.operator(["gc", "--cache-dir", g.cacheDir!, "--grace", "0"]);
      expect(run.code, run.stdout + run.stderr).toBe(0);
      expect(podTraces(await snapshot(g.topo, g.iptables), list.name, dead.pod.containerID)).toEqual([]);
      expect(podTraces(await snapshot(g.topo, g.iptables), list.name, live.pod.containerID)).toEqual(
        podTraces(before, list.name, live.pod.containerID),
      );
    });
  });

  describe("hostile and broken input", () => {
    let rt: RuntimeConf;
    let list: NetConfList;
    let base: Json;
    let original: NatSnapshot;
    const nft = { path: "", logDir: "", dir: "" };

    beforeAll(async () => {
      list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
      const mappings = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];
      const started = await h.startPod("victim", withoutPlugin(list), { portMappings: mappings });
      expect(started.add.ok, describeRun(started.add)).toBe(true);
      rt = podRuntime(started.pod, { portMappings: mappings });
      base = h.cni.pluginStdin(list, list.plugins.find((p) => p.type === PLUGIN_TYPE)!, rt, started.add.result);
      Object.assign(nft, createStandins(h.topo.tmpDir, {}, undefined, ["nft"]));
      original = await snapshot(h.topo, h.iptables);
      expect(await nftPodRules(h.topo.node, 4, rt.containerID)).toHaveLength(2);
    });

    function runCase(stdin: unknown, env: Record<string, string | undefined> = {}): Promise<RawRun> {
      const all: Record<string, string> = {};
      const given = { ...h.cni.pluginEnv("ADD", rt, nft.path), ...env };
      for (const [k, v] of Object.entries(given)) if (v !== undefined) all[k] = v;
      return runPluginRaw(h.topo.node, {
        env: all,
        input: typeof stdin === "string" || Buffer.isBuffer(stdin) ? stdin : JSON.stringify(stdin),
      });
    }

    it.each(cases)("$what → CNI error $code, no nft batch, no change", async (c) => {
      const before = invocations(nft).length;
      const stdin = c.stdin ?? base;
      const r = await runCase(typeof stdin === "function" ? stdin(structuredClone(base)) : stdin, c.env);
      const calls = invocations(nft).slice(before);
      expect(r.code, r.stdout.slice(0, 500)).toBe(1);
      expect(r.stderr).not.toMatch(CRASH_TRACE);
      expect([c.code].flat(), r.stdout.slice(0, 500)).toContain(r.output?.["code"]);
      // Only fixed listings, never a batch.
      for (const call of calls) expect(call.argv.join(" ")).toMatch(/^-a -j list chain ip6? cni_hostport hostports$/);
      expect(await snapshot(h.topo, h.iptables)).toEqual(original);
    });

    it("a valid ADD hands nft one batch: validated host IPs only, the pod's comment, handles it read", async () => {
      const before = invocations(nft).length;
      const r = await runCase(withAnnotation(structuredClone(base), `::ffff:${NODE_IP2}, 5353/UDP = ${NODE_IP1}`));
      expect(r.code, r.stdout).toBe(0);
      const batches = invocations(nft)
        .slice(before)
        .filter((c) => c.argv[0] === "-j");
      expect(batches).toHaveLength(1);
      expect(batches[0]!.argv).toHaveLength(2);
      const doc = JSON.parse(batches[0]!.argv[1]!) as { nftables: Array<Record<string, { rule: Json }>> };
      for (const command of doc.nftables) {
        const [verb, { rule }] = Object.entries(command)[0]!;
        expect(["insert", "replace", "delete"]).toContain(verb);
        expect(rule).toMatchObject({ table: "cni_hostport", chain: "hostports", handle: expect.any(Number) });
        if (verb === "delete") continue;
        expect(rule["comment"]).toBe(rt.containerID);
        const daddr = JSON.stringify(rule["expr"]).match(/"field":"daddr"}},"right":"([^"]+)"/)?.[1];
        expect([NODE_IP1, NODE_IP2, NEVER_MATCHING_IP[6]]).toContain(daddr);
      }
    });
  });
});
