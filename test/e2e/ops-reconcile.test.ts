// reconcile after a firewall reload (nat table flushed, chains deleted): the rules come back byte for byte
// and traffic flows exactly as before (hairpin included); UDP flows that keep sending across a pod
// re-creation or a flush + reconcile reach the pod again (stale conntrack entries removed).
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterEach, beforeAll, expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLIENT_IP,
  CLUSTER_IP,
  containerdMapping,
  describeRun,
  type Harness,
  keepConntrackOn,
  type NatSnapshot,
  NODE_IP1,
  NODE_IP2,
  NODE_IP6,
  natSave,
  REPO_ROOT,
  stateDirFor,
  whoAnswers,
} from "../support/harness.js";
import { nsRun, nsRunOk, spawnInNs, stopChild } from "../support/netns.js";

const UDP_STREAM = join(REPO_ROOT, "test/support/udp-stream.mjs");

async function snapshot(h: Harness): Promise<NatSnapshot> {
  return { v4: await natSave(h.topo.node, 4), v6: await natSave(h.topo.node, 6) };
}

/** What a firewall reload does to a nat table it does not know: every rule and user chain gone. */
async function flushNat(h: Harness): Promise<void> {
  for (const tool of ["iptables", "ip6tables"]) {
    await nsRunOk(h.topo.node, tool, ["-w", "-t", "nat", "-F"]);
    await nsRunOk(h.topo.node, tool, ["-w", "-t", "nat", "-X"]);
  }
}

async function reconcile(h: Harness, ...extra: string[]) {
  const r = await h.operator([
    "reconcile",
    "--cache-dir",
    h.cacheDir!,
    "--state-dir",
    stateDirFor(h.topo.ipamDataDir),
    ...extra,
  ]);
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describeAsRoot("reconcile after the nat table was flushed", () => {
  const h = useHarness({ libcniCache: true });
  const probes: Array<[string, "tcp" | "udp", string, number]> = [];
  let answers: Array<string | null>;
  let before: NatSnapshot;
  const probeAll = () => Promise.all(probes.map(([ns, proto, host, port]) => whoAnswers(ns, proto, host, port)));

  beforeAll(async () => {
    const node = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true });
    const any = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "any" } });
    const nosnat = bridgeConflist({
      dataDir: h.topo.ipamDataDir,
      dualStack: true,
      portmap: { snat: false, markMasqBit: undefined },
    });
    const a = await h.startPod("a", node, {
      portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")],
      serve: { tcp: [80], udp: [53] },
    });
    const b = await h.startPod("b", node, {
      portMappings: [containerdMapping(8081, 80)],
      hostIPAnnotation: "192.0.2.11",
      serve: { tcp: [80] },
    });
    const c = await h.startPod("c", any, { portMappings: [containerdMapping(8082, 80)], serve: { tcp: [80] } });
    const d = await h.startPod("d", nosnat, {
      portMappings: [containerdMapping(8083, 80)],
      hostIPAnnotation: "192.0.2.10",
      serve: { tcp: [80] },
    });
    for (const p of [a, b, c, d]) if (!p.add.ok) throw new Error(describeRun(p.add));
    await h.topo.serveService({ tcp: [8080, 8082] });
    await h.topo.settleIPv6();
    const client = h.topo.client;
    for (const host of [NODE_IP1, NODE_IP2, CLUSTER_IP, NODE_IP6])
      for (const port of [8080, 8081, 8082, 8083]) probes.push([client, "tcp", host, port]);
    probes.push([client, "udp", NODE_IP1, 5353], [client, "udp", CLUSTER_IP, 5353]);
    // Hairpin (a pod reaching itself through the node) and localhost, which need portmap's masquerade marks.
    probes.push(
      [a.pod.ns, "tcp", NODE_IP1, 8080],
      [b.pod.ns, "tcp", NODE_IP2, 8081],
      [h.topo.node, "tcp", "127.0.0.1", 8080],
    );
    answers = await probeAll();
    before = await snapshot(h);
  });

  it("answers as the policy says before (a sanity check of the probes)", () => {
    const at = (ns: string, host: string, port: number) =>
      answers[probes.findIndex(([n, , hh, p]) => n === ns && hh === host && p === port)];
    expect(at(h.topo.client, NODE_IP1, 8080)).toBe("pod-a");
    expect(at(h.topo.client, CLUSTER_IP, 8080)).toBe("service");
    expect(at(h.topo.client, CLUSTER_IP, 8082)).toBe("pod-c");
    expect(at(h.topo.client, NODE_IP2, 8081)).toBe("pod-b");
    // Hairpin and localhost: portmap's masquerade marks at work (checked again after the rebuild).
    expect(answers.slice(-3)).toEqual(["pod-a", "pod-b", "pod-a"]);
  });

  it("--dry-run shows the plan and changes nothing", async () => {
    await flushNat(h);
    const flushed = await snapshot(h);
    const out = await reconcile(h, "--dry-run");
    expect(out).toMatch(/IPv4: created chain CNI-HOSTPORT-DNAT\n/);
    expect(out).toMatch(/IPv4: default\/a \(cbr0, \S+\): created \(\d+ rules\) CNI-DN-/);
    expect(out).toMatch(/would write \d+ lines in one transaction/);
    expect(out).toContain("    *nat\n");
    expect(await snapshot(h)).toEqual(flushed);
    expect((await probeAll()).filter((x) => x?.startsWith("pod-"))).toEqual([]);
  });

  it("rebuilds every chain, jump and shared rule byte for byte, and traffic flows exactly as before", async () => {
    const out = await reconcile(h);
    expect(out).toMatch(
      /IPv4: 0 attachment\(s\) correct, left alone; 4 rebuilt \(wrote \d+ lines in one transaction\)/,
    );
    expect(await snapshot(h)).toEqual(before);
    expect(await probeAll()).toEqual(answers);
  });

  it("leaves correct chains alone: a second run writes nothing", async () => {
    const out = await reconcile(h);
    expect(out).toContain("IPv4: 4 attachment(s) correct, left alone; 0 rebuilt\n");
    expect(out).toContain("IPv6: 4 attachment(s) correct, left alone; 0 rebuilt\n");
  });

  it("repairs one wrong chain (portmap's unscoped rules back) and nothing else", async () => {
    const chainA = before.v4
      .find((l) => l.startsWith("-A CNI-HOSTPORT-DNAT") && l.includes("--dports 8080 -j"))!
      .split(" -j ")[1]!;
    await nsRunOk(h.topo.node, "iptables", ["-w", "-t", "nat", "-F", chainA]);
    await nsRunOk(h.topo.node, "iptables", [
      "-w",
      "-t",
      "nat",
      "-A",
      chainA,
      "-p",
      "tcp",
      "--dport",
      "8080",
      "-j",
      "DNAT",
      "--to-destination",
      "10.244.1.250:80",
    ]);
    const out = await reconcile(h);
    expect(out).toMatch(/IPv4: 3 attachment\(s\) correct, left alone; 1 rebuilt/);
    expect(await snapshot(h)).toEqual(before);
  });
});

describeAsRoot("UDP flows that keep sending", () => {
  const h = useHarness({ libcniCache: true });
  let stream: ChildProcess | undefined;
  let heard: string[] = [];
  afterEach(async () => {
    if (stream) await stopChild(stream);
    stream = undefined;
  });

  async function startStream(sourcePort: number): Promise<void> {
    heard = [];
    stream = await spawnInNs(
      h.topo.client,
      process.execPath,
      [UDP_STREAM, NODE_IP1, "5353", "100", String(sourcePort)],
      "ready",
    );
    stream.stdout!.on("data", (d: Buffer) =>
      heard.push(
        ...d
          .toString()
          .split("\n")
          .filter((l) => l !== "" && l !== "ready"),
      ),
    );
  }

  async function eventuallyHears(identity: string, ms = 8000): Promise<void> {
    const deadline = Date.now() + ms;
    const from = heard.length;
    while (!heard.slice(from).includes(identity)) {
      if (Date.now() > deadline)
        throw new Error(`the flow did not reach ${identity}; heard: ${heard.slice(-5).join(", ")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const conntrackFor = async () =>
    (await nsRun(h.topo.node, "conntrack", ["-L", "-p", "udp", "--orig-port-dst", "5353"])).stdout;

  it("reach the new pod after the pod is deleted and re-created with a new IP", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir });
    const mapping = { portMappings: [containerdMapping(5353, 53, "udp")], serve: { udp: [53] } };
    const first = await h.startPod("u1", list, mapping);
    expect(first.add.ok, describeRun(first.add)).toBe(true);
    await startStream(40053);
    await eventuallyHears("pod-u1");

    const del = await h.cni.del(list, first.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    await h.topo.removePod(first.pod);
    // The old pod is gone; the flow's conntrack entry still points at its address.
    expect(await conntrackFor()).toMatch(
      new RegExp(`src=${CLIENT_IP} dst=${NODE_IP1} sport=40053 dport=5353 (\\[UNREPLIED\\] )?src=10\\.244\\.1\\.\\d+`),
    );

    const second = await h.startPod("u2", list, mapping);
    expect(second.add.ok, describeRun(second.add)).toBe(true);
    await eventuallyHears("pod-u2");
  });

  it("reach the pod after a flush and reconcile (the entry made during the outage is removed)", async () => {
    await keepConntrackOn(h.topo.node);
    await flushNat(h);
    // A flow that starts during the outage (flows already under way keep their NAT decision): its datagrams
    // make an entry to the node itself, refreshed every 100 ms, that would outlive the rules' return.
    await startStream(40054);
    await new Promise((r) => setTimeout(r, 500));
    expect(await conntrackFor()).toMatch(
      new RegExp(`sport=40054 dport=5353 \\[UNREPLIED\\] src=${NODE_IP1} dst=${CLIENT_IP} sport=5353`),
    );
    const out = await reconcile(h);
    expect(out).toContain("IPv4: removed 1 stale UDP conntrack entry\n");
    await eventuallyHears("pod-u2");
  });
});
