// A node with a second network whose conflist has no portmap-hostip entry (Multus-style 20-plain.conflist:
// bridge + portmap): reconcile and the keeper keep our network — its pods that started while a rewrite had removed
// our entry scoped by the installed entry — and leave the other network's pods as portmap wrote them; status shows
// them; reconcile reports every change of both its passes, its dry run the same; gc names the dead chain of a
// network the cache no longer names.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, eventually, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  type NetConfList,
  NODE_IP1,
  type PodRuntimeOptions,
  type StartedPod,
  secondNetwork,
  stateDirFor,
  whoAnswers,
  withoutPlugin,
} from "../support/harness.js";
import { type RunningKeeper, startKeeper } from "../support/keeper.js";
import { nsRunOk } from "../support/netns.js";

describeAsRoot("a node with a second network without portmap-hostip", () => {
  const h = useHarness({ libcniCache: true });
  let cbr0: NetConfList;
  let plain: NetConfList;
  let confDir: string;
  let binDir: string;
  let stateDir: string;
  let other: StartedPod;
  let keeper: RunningKeeper | undefined;
  const asks = (host: string, port: number) =>
    whoAnswers(h.topo.client, "tcp", host, port, { timeoutMs: 700, attempts: 1 });
  const start = async (name: string, list: NetConfList, port: number, opts: PodRuntimeOptions = {}) => {
    const started = await h.startPod(name, list, {
      portMappings: [containerdMapping(port, 80)],
      serve: { tcp: [80] },
      ...opts,
    });
    if (!started.add.ok) throw new Error(describeRun(started.add));
    return started;
  };
  const operator = async (args: string[], code = 0) => {
    const r = await h.operator([...args, "--cache-dir", h.cacheDir!, "--state-dir", stateDir]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(code);
    return r.stdout;
  };
  const otherChain = () => dnChainName(plain.name, other.pod.containerID);

  beforeAll(async () => {
    stateDir = stateDirFor(h.topo.ipamDataDir);
    confDir = join(h.topo.tmpDir, "net.d");
    binDir = join(h.topo.tmpDir, "bin");
    mkdirSync(confDir);
    mkdirSync(binDir);
    cbr0 = bridgeConflist({ dataDir: h.topo.ipamDataDir });
    plain = secondNetwork({ dataDir: h.topo.ipamDataDir, name: "plain", hostip: false });
    writeFileSync(join(confDir, "10-bridge.conflist"), JSON.stringify(cbr0, null, 2));
    writeFileSync(join(confDir, "20-plain.conflist"), JSON.stringify(plain, null, 2));
    await start("ours", cbr0, 8080);
    // Started while the network plugin's rewrite had removed our entry: no record of its ADD either.
    await start("window", withoutPlugin(cbr0), 8081);
    other = await start("other", plain, 8082);
    await h.topo.serveService({ tcp: [8080, 8081, 8082] });
    expect(await asks(CLUSTER_IP, 8081)).toBe("pod-window");
  });

  afterAll(() => {
    if (keeper && keeper.child.exitCode === null) keeper.child.kill("SIGKILL");
  });

  // The lines that say what changed (not the summary, not the restore input).
  const changes = (out: string) =>
    out.split("\n").filter((l) => /^IPv[46]: /.test(l) && !l.includes("attachment(s) correct"));
  let planned: string[];

  it("reconcile --dry-run after a flush reports both passes' changes and names the other network", async () => {
    for (const flag of ["-F", "-X"]) await nsRunOk(h.topo.node, "iptables", ["-w", "-t", "nat", flag]);
    const out = await operator(["reconcile", "--dry-run", "--cni-conf-dir", confDir]);
    expect(out).toContain("left alone network plain: no portmap-hostip entry in its conflist");
    expect(out).toMatch(/IPv4: default\/ours \(cbr0, \S+\): created \(\d+ rules\) CNI-DN-/);
    expect(out).toMatch(/IPv4: default\/window \(cbr0, \S+\): created \(\d+ rules\) CNI-DN-/);
    expect(out).toMatch(
      /IPv4: 0 attachment\(s\) correct, left alone; 2 rebuilt \(would write \d+ lines in 2 transactions\)/,
    );
    expect(out).not.toContain("default/other");
    planned = changes(out);
    expect(await asks(NODE_IP1, 8080)).toBeNull();
  });

  it("reconcile rebuilds our network's pods over two passes, reports every change, leaves the other alone", async () => {
    const out = await operator(["reconcile", "--cni-conf-dir", confDir]);
    expect(changes(out)).toEqual(planned);
    expect(out).toMatch(/IPv4: 0 attachment\(s\) correct, left alone; 2 rebuilt \(wrote \d+ lines in 2 transactions\)/);
    // The window pod is scoped by the installed entry; the other network's pod is not rebuilt at all.
    expect(await asks(NODE_IP1, 8081)).toBe("pod-window");
    expect(await asks(CLUSTER_IP, 8081)).toBe("service");
    expect(await asks(NODE_IP1, 8080)).toBe("pod-ours");
    expect(await chainRules(h.topo.node, otherChain())).toBeNull();
  });

  it("the keeper leaves the other network's pod as portmap wrote it, and status shows it", async () => {
    const del = await h.cni.del(plain, other.rt);
    expect(del.ok, describeRun(del)).toBe(true);
    await h.topo.removePod(other.pod);
    other = await start("other2", plain, 8082);
    const written = await chainRules(h.topo.node, otherChain());
    expect(await asks(CLUSTER_IP, 8082)).toBe("pod-other2");

    const path = h.iptables.path ?? process.env["PATH"] ?? "";
    keeper = await startKeeper(h.topo.node, { binDir, confDir, cacheDir: h.cacheDir!, stateDir }, 1, path);
    await eventually("the keeper names the network it leaves alone", async () =>
      keeper!.output().includes("keeper: leaves alone network(s) plain: no portmap-hostip entry in their conflist"),
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${keeper?.output()}`, { cause: err });
    });
    // Passes over two seconds more (resync 1 s): the keeper's heartbeat says when its last one ended.
    const since = Date.now();
    const lastPass = () => (JSON.parse(readFileSync(join(stateDir, "keeper.alive"), "utf8")) as { at: number }).at;
    await eventually("two more passes", async () => lastPass() > since + 2_000);
    expect(await chainRules(h.topo.node, otherChain())).toEqual(written);
    expect(await asks(CLUSTER_IP, 8082)).toBe("pod-other2");
    expect(keeper.output()).not.toContain("plain,");

    const rows = JSON.parse(await operator(["status", "--json"])).mappings as Array<Record<string, unknown>>;
    expect(rows.find((r) => r["network"] === "plain")).toMatchObject({
      pod: "default/other2",
      hostPort: 8082,
      state: "captures-service",
      captures: [CLUSTER_IP],
    });
    const stopped = new Promise((r) => keeper!.child.once("exit", r));
    keeper.child.kill("SIGTERM");
    await stopped;
  });

  it("gc names the dead chain of a network the cache no longer names; gc --network judges it", async () => {
    rmSync(h.cni.cacheFilePath(plain, other.rt));
    const chain = otherChain();
    const dry = await operator(["gc", "--dry-run"]);
    expect(dry).toContain(
      `not judged: ${chain} (network plain, container ${other.pod.containerID}): no cached pod names network plain; \`portmap-hostip gc --network plain\` judges its chains\n`,
    );
    expect(dry).toContain("no orphan portmap chains in the networks the cache names; 1 of other networks not judged");
    const rows = JSON.parse(await operator(["status", "--json"])).mappings as Array<Record<string, unknown>>;
    expect(rows.find((r) => r["chain"] === chain)).toMatchObject({ state: "orphan" });
    const out = await operator(["gc", "--network", "plain", "--grace", "0"]);
    expect(out).toContain(`IPv4: deleted ${chain} (network plain,`);
    expect(await chainRules(h.topo.node, chain)).toBeNull();
  });
});
