// What ADD leaves alone, repeated ADD, CHECK, and DEL (full chain, twice, both cniVersion families).
import { expect, it } from "vitest";
import {
  NODE_IP2,
  PLUGIN_TYPE,
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  linesMentioning,
  natSave,
  outside,
  rulesIn,
  withoutPlugin,
} from "../support/harness.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";

const mappings = [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")];

describeAsRoot("ADD leaves everything else alone", () => {
  const h = useHarness();

  it("only the pod's CNI-DN chain differs after our ADD (IPv4 and IPv6)", async () => {
    // Another pod handled by portmap alone, with unscoped rules on the same ports, must keep them.
    const other = await h.startPod("other", withoutPlugin(bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true })), {
      portMappings: [containerdMapping(7070, 70), containerdMapping(5353, 53, "udp")],
    });
    expect(other.add.ok, describeRun(other.add)).toBe(true);

    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    const started = await h.startPodObserved("a", list, { portMappings: mappings });
    expect(started.ours.code, describeRun(started.add)).toBe(0);
    const chain = dnChainName(list.name, started.pod.containerID);
    // Our chain did change (in both families) …
    expect(rulesIn(started.after.v4, chain)).not.toEqual(rulesIn(started.before.v4, chain));
    expect(rulesIn(started.after.v6, chain)).not.toEqual(rulesIn(started.before.v6, chain));
    // … and nothing else did, line for line.
    expect(outside(started.after, chain)).toEqual(outside(started.before, chain));
  });
});

describeAsRoot.each(["0.3.1", "1.0.0"])("lifecycle, cniVersion %s", (cniVersion) => {
  const h = useHarness();

  it("repeated ADD (portmap re-appends its rules) ends in the same chain as one ADD", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, cniVersion, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, add, rt } = await h.startPod("a", list, { portMappings: mappings, hostIPAnnotation: NODE_IP2 });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const once = { v4: await natSave(h.topo.node, 4), v6: await natSave(h.topo.node, 6) };

    // The runtime retries ADD: bridge's result is the same, portmap puts its unscoped rules back …
    const bridgeResult = add.runs[0]!.output!;
    const portmapAgain = await h.cni.add(list, rt, { from: 1, to: 2, prevResult: bridgeResult });
    expect(portmapAgain.ok, describeRun(portmapAgain)).toBe(true);
    expect((await chainRules(h.topo.node, chain))!.length).toBeGreaterThan(rulesIn(once.v4, chain).length);
    // … and ours makes it the same as after one ADD again.
    const oursAgain = await h.cni.add(list, rt, { from: 2, prevResult: portmapAgain.result! });
    expect(oursAgain.ok, describeRun(oursAgain)).toBe(true);
    expect(await natSave(h.topo.node, 4)).toEqual(once.v4);
    expect(await natSave(h.topo.node, 6)).toEqual(once.v6);
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
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, cniVersion, dualStack: true, hostip: { defaultHostIP: "node" } });
    const { pod, add, rt } = await h.startPod("d", list, { portMappings: mappings });
    expect(add.ok, describeRun(add)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    expect(linesMentioning(await natSave(h.topo.node, 4), chain)).not.toEqual([]);
    expect(linesMentioning(await natSave(h.topo.node, 6), chain)).not.toEqual([]);

    const del = await h.cni.del(list, rt);
    expect(del.ok, describeRun(del)).toBe(true);
    expect(del.runs.map((r) => r.type)).toEqual([PLUGIN_TYPE, "portmap", "bridge"]);
    const ourDel = del.runs[0]!;
    expect("prevResult" in ourDel.stdin).toBe(cniVersion >= "0.4.0");
    for (const family of [4, 6] as const) {
      const save = await natSave(h.topo.node, family);
      expect(linesMentioning(save, chain)).toEqual([]);
      expect(save.filter((l) => l.includes(`id: \\"${pod.containerID}\\"`))).toEqual([]);
    }

    const again = await h.cni.del(list, rt);
    expect(again.ok, describeRun(again)).toBe(true);
    await h.topo.removePod(pod);
    const afterGone = await h.cni.del(list, rt);
    expect(afterGone.ok, describeRun(afterGone)).toBe(true);
  });
});
