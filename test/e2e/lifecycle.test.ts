// What ADD leaves alone, repeated ADD, CHECK, and DEL (full chain, twice, both cniVersion families), with
// either of portmap's backends.
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  NODE_IP2,
  outside,
  PLUGIN_TYPE,
  podRulesIn,
  podTraces,
  portmapVariant,
  snapshot,
  withoutPlugin,
} from "../support/harness.js";

const mappings = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];

describeAsRoot("ADD leaves everything else alone", () => {
  const h = useHarness();

  it("only the pod's rules differ after our ADD (IPv4 and IPv6)", async () => {
    // Another pod handled by portmap alone, with unscoped rules on the same ports, must keep them.
    const other = await h.startPod(
      "other",
      withoutPlugin(bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true })),
      {
        portMappings: [containerdMapping(7070, 70), containerdMapping(5353, 53, "udp")],
      },
    );
    expect(other.add.ok, describeRun(other.add)).toBe(true);

    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const started = await h.startPodObserved("a", list, { portMappings: mappings });
    expect(started.ours.code, describeRun(started.add)).toBe(0);
    const id = started.pod.containerID;
    // The pod's rules did change (in both families) …
    for (const family of [4, 6] as const) {
      expect(podRulesIn(started.after, list.name, id, family)).not.toEqual(
        podRulesIn(started.before, list.name, id, family),
      );
    }
    // … and nothing else did, line for line.
    expect(outside(started.after, list.name, id)).toEqual(outside(started.before, list.name, id));
  });
});

describeAsRoot.each(["0.3.1", "1.0.0"])("lifecycle, cniVersion %s", (cniVersion) => {
  const h = useHarness();

  it("repeated ADD (portmap re-appends its rules) ends in the same chain as one ADD", async () => {
    const list = bridgeConflist({
      dataDir: h.topo.ipamDataDir,
      cniVersion,
      dualStack: true,
      hostip: { defaultHostIP: "node" },
    });
    const { pod, add, rt } = await h.startPod("a", list, { portMappings: mappings, hostIPAnnotation: NODE_IP2 });
    expect(add.ok, describeRun(add)).toBe(true);
    const once = await snapshot(h.topo, h.iptables);

    // The runtime retries ADD: bridge's result is the same, portmap puts its unscoped rules back …
    const bridgeResult = add.runs[0]!.output!;
    const portmapAgain = await h.cni.add(list, rt, { from: 1, to: 2, prevResult: bridgeResult });
    expect(portmapAgain.ok, describeRun(portmapAgain)).toBe(true);
    const again = await snapshot(h.topo, h.iptables);
    expect(podRulesIn(again, list.name, pod.containerID, 4).length).toBeGreaterThan(
      podRulesIn(once, list.name, pod.containerID, 4).length,
    );
    // … and ours makes it the same as after one ADD again.
    const oursAgain = await h.cni.add(list, rt, { from: 2, prevResult: portmapAgain.result! });
    expect(oursAgain.ok, describeRun(oursAgain)).toBe(true);
    const now = await snapshot(h.topo, h.iptables);
    for (const family of [4, 6] as const)
      expect(podRulesIn(now, list.name, pod.containerID, family)).toEqual(
        podRulesIn(once, list.name, pod.containerID, family),
      );
    // portmap's iptables backend appends only missing rules: the whole table is as after one ADD. Its
    // nftables backend appends its masquerading rules again (portmap's, left to its DEL).
    if (portmapVariant().backend === "iptables") expect(now).toEqual(once);
  });

  it.skipIf(cniVersion < "0.4.0")("CHECK passes on scoped rules and fails once unscoped rules are back", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, cniVersion, hostip: { defaultHostIP: "node" } });
    const { add, rt } = await h.startPod("c", list, { portMappings: mappings, hostIPAnnotation: NODE_IP2 });
    expect(add.ok, describeRun(add)).toBe(true);
    const ours = list.plugins.find((p) => p.type === PLUGIN_TYPE)!;
    const cached = h.cni.cachedResult(list, rt)!;

    const good = await h.cni.invoke("CHECK", list, ours, rt, cached);
    expect(good.code, `${good.stdout}${good.stderr}`).toBe(0);
    expect(good.stdout.trim()).toBe("");

    const portmapAgain = await h.cni.add(list, rt, { from: 1, to: 2, prevResult: add.runs[0]!.output! });
    expect(portmapAgain.ok, describeRun(portmapAgain)).toBe(true);
    const bad = await h.cni.invoke("CHECK", list, ours, rt, cached);
    expect(bad.code).not.toBe(0);
    expect(bad.output).toMatchObject({ cniVersion, msg: expect.any(String) });
  });

  it("full DEL (ours, portmap, bridge) removes every trace of the pod; DEL twice succeeds", async () => {
    const list = bridgeConflist({
      dataDir: h.topo.ipamDataDir,
      cniVersion,
      dualStack: true,
      hostip: { defaultHostIP: "node" },
    });
    const { pod, add, rt } = await h.startPod("d", list, { portMappings: mappings });
    expect(add.ok, describeRun(add)).toBe(true);
    for (const family of [4, 6] as const)
      expect(podRulesIn(await snapshot(h.topo, h.iptables), list.name, pod.containerID, family)).not.toEqual([]);

    const del = await h.cni.del(list, rt);
    expect(del.ok, describeRun(del)).toBe(true);
    expect(del.runs.map((r) => r.type)).toEqual([PLUGIN_TYPE, "portmap", "bridge"]);
    const ourDel = del.runs[0]!;
    expect("prevResult" in ourDel.stdin).toBe(cniVersion >= "0.4.0");
    expect(podTraces(await snapshot(h.topo, h.iptables), list.name, pod.containerID)).toEqual([]);

    const again = await h.cni.del(list, rt);
    expect(again.ok, describeRun(again)).toBe(true);
    await h.topo.removePod(pod);
    const afterGone = await h.cni.del(list, rt);
    expect(afterGone.ok, describeRun(afterGone)).toBe(true);
  });
});
