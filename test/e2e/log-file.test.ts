// The logFile entry key as a runtime exercises it: one line per call with the decided host IPs or the error,
// whole lines under 16 concurrent ADDs, rotation at the cap, and an unwritable path that fails nothing.
import { readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  FOREIGN_IP,
  NODE_IP2,
  PLUGIN_TYPE,
  podRuntime,
} from "../support/harness.js";

const CAP = 10 * 1024 * 1024;
const records = (file: string): Array<Record<string, unknown>> =>
  readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describeAsRoot("logFile", () => {
  const h = useHarness();
  const logIn = (name: string) => join(h.topo.tmpDir, "log", name, "portmap-hostip.log");

  it("writes one line per call: the decided host IPs, the error of a rejected ADD, CHECK and DEL", async () => {
    const logFile = logIn("calls");
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node", logFile } });
    const good = await h.startPod("logged", list, {
      portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")],
      hostIPAnnotation: NODE_IP2,
    });
    expect(good.add.ok, describeRun(good.add)).toBe(true);
    const ours = list.plugins.find((p) => p.type === PLUGIN_TYPE)!;
    const check = await h.cni.invoke("CHECK", list, ours, good.rt, h.cni.cachedResult(list, good.rt));
    expect(check.code, `${check.stdout}${check.stderr}`).toBe(0);
    const bad = await h.startPod("refused", list, {
      portMappings: [containerdMapping(8081, 80)],
      hostIPAnnotation: FOREIGN_IP,
    });
    expect(bad.add.ok).toBe(false);
    expect((await h.cni.del(list, good.rt)).ok).toBe(true);

    const lines = records(logFile);
    expect(lines.map((l) => [l["command"], l["pod"], l["ok"]])).toEqual([
      ["ADD", "default/logged", true],
      ["CHECK", "default/logged", true],
      ["ADD", "default/refused", false],
      ["DEL", "default/logged", true],
    ]);
    expect(lines[0]).toMatchObject({
      containerID: good.pod.containerID,
      mappings: [
        { hostPort: 8080, protocol: "tcp", source: "annotation", hostIPs: [NODE_IP2] },
        { hostPort: 5353, protocol: "udp", source: "annotation", hostIPs: [NODE_IP2] },
      ],
    });
    expect(lines[2]).toMatchObject({
      containerID: bad.pod.containerID,
      mappings: [{ hostPort: 8081, protocol: "tcp" }],
      code: 100,
      msg: expect.stringContaining(FOREIGN_IP),
    });
    for (const l of lines) {
      expect(Date.parse(l["time"] as string)).not.toBeNaN();
      expect(l["durationMs"]).toBeGreaterThan(0);
    }
  });

  it("16 ADDs at once each write one whole line", async () => {
    const logFile = logIn("concurrent");
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node", logFile } });
    const pods = [];
    for (let i = 0; i < 16; i++) {
      const pod = await h.topo.addPod(`c${i}`);
      const rt = podRuntime(pod, { portMappings: [containerdMapping(9000 + i, 80)] });
      const bridge = await h.cni.add(list, rt, { to: 1 });
      expect(bridge.ok, describeRun(bridge)).toBe(true);
      pods.push({ pod, rt, prevResult: bridge.result! });
    }
    const adds = await Promise.all(pods.map((p) => h.cni.add(list, p.rt, { from: 1, prevResult: p.prevResult })));
    for (const add of adds) expect(add.ok, describeRun(add)).toBe(true);

    // JSON.parse fails on a line that another one broke into.
    const lines = records(logFile);
    expect(lines).toHaveLength(16);
    expect(new Set(lines.map((l) => l["containerID"]))).toEqual(new Set(pods.map((p) => p.pod.containerID)));
    for (const l of lines)
      expect(l).toMatchObject({
        command: "ADD",
        ok: true,
        mappings: [{ source: "node", hostIPs: expect.arrayContaining(["127.0.0.1"]) }],
      });
  });

  it("rotates at 10 MiB, keeping the previous file", async () => {
    const logFile = logIn("rotate");
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node", logFile } });
    const first = await h.startPod("rot1", list, { portMappings: [containerdMapping(8090, 80)] });
    expect(first.add.ok, describeRun(first.add)).toBe(true);
    // Grow it to just under the cap (sparse: instant).
    truncateSync(logFile, CAP - 10);
    const second = await h.startPod("rot2", list, { portMappings: [containerdMapping(8091, 80)] });
    expect(second.add.ok, describeRun(second.add)).toBe(true);
    expect(statSync(`${logFile}.1`).size).toBe(CAP - 10);
    expect(readFileSync(`${logFile}.1`, "utf8").split("\n")[0]).toContain('"default/rot1"');
    expect(records(logFile).map((l) => l["pod"])).toEqual(["default/rot2"]);
  });

  it("an unwritable path: ADD still succeeds, with one note on stderr", async () => {
    const file = join(h.topo.tmpDir, "not-a-folder");
    writeFileSync(file, "");
    const logFile = join(file, "portmap-hostip.log");
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node", logFile } });
    const { add } = await h.startPod("unlogged", list, { portMappings: [containerdMapping(8095, 80)] });
    expect(add.ok, describeRun(add)).toBe(true);
    const ours = add.runs.at(-1)!;
    expect(ours.stderr.split("\n").filter((l) => l.includes("log file"))).toEqual([
      `portmap-hostip: cannot write log file ${logFile}: ENOTDIR: not a directory, open '${logFile}'`,
    ]);
  });
});
