// The docs' commands, run exactly as written, each in a scratch node of its own (test/support/scratch-node.ts: the
// node's directories are the test's, the machine's untouched): the README's quick start, and docs/install.md's
// install by hand and its removal. Between the steps, real pods (Debian's bridge + host-local + portmap, then the
// plugin as installed) and real packets check what each step promises. The commands come from the Markdown: a
// step the test cannot run, or a check whose step the docs no longer have, fails it, so the docs cannot drift.
// systemctl and journalctl are the unit's: `systemctl enable --now` runs the ExecStart line of the unit file the
// step before installed, `disable --now` sends it SIGTERM, `journalctl -u` shows what it printed.
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commands, parseUnit, section } from "../support/docs.js";
import { describeAsRoot, eventually } from "../support/e2e.js";
import {
  bridgeConflist,
  CLUSTER_IP,
  containerdMapping,
  createTopology,
  describeRun,
  type NetConfList,
  NODE_IP1,
  podRuntime,
  REPO_ROOT,
  type Topology,
  whoAnswers,
} from "../support/harness.js";
import { nsRunOk, stopChild } from "../support/netns.js";
import { createScratchNode, type ScratchNode } from "../support/scratch-node.js";

const read = (file: string) => readFileSync(join(REPO_ROOT, file), "utf8");
const CONFLIST = "/etc/cni/net.d/10-bridge.conflist";
const UNIT = join(REPO_ROOT, "deploy/portmap-hostip.service");

/** A node laid out as the docs expect one: containerd's CNI directories, a bridge network with portmap. */
class Node {
  readonly original: string;
  private service: { child: ChildProcess; output: () => string } | undefined;
  private readonly ran = new Set<string>();

  constructor(
    readonly topo: Topology,
    readonly scratch: ScratchNode,
  ) {
    const list = bridgeConflist({ dataDir: topo.ipamDataDir, hostip: false });
    this.original = `${JSON.stringify(list, null, 2)}\n`;
    writeFileSync(scratch.hostPath(CONFLIST), this.original);
  }

  conflist(): NetConfList {
    return JSON.parse(readFileSync(this.scratch.hostPath(CONFLIST), "utf8")) as NetConfList;
  }

  /** Starts a pod through the node's conflist as it is now, serving `pod-<name>` on port 80. */
  async pod(name: string, hostPort: number): Promise<void> {
    const pod = await this.topo.addPod(name);
    const add = await this.scratch.cni.add(
      this.conflist(),
      podRuntime(pod, { portMappings: [containerdMapping(hostPort, 80)] }),
    );
    expect(add.ok, describeRun(add)).toBe(true);
    await this.topo.servePod(pod, { tcp: [80] });
  }

  asks(host: string, port: number): Promise<string | null> {
    return whoAnswers(this.topo.client, "tcp", host, port, { timeoutMs: 700, attempts: 1 });
  }

  /** Runs the docs' commands in order; after each, its check, if it has one. Every check must have run. */
  async walk(lines: readonly string[], checks: Record<string, (out: string) => Promise<void>>): Promise<void> {
    for (const line of lines) {
      const out = await this.step(line);
      this.ran.add(line);
      await checks[line]?.(out);
    }
    expect(Object.keys(checks).filter((line) => !this.ran.has(line))).toEqual([]);
  }

  private async step(line: string): Promise<string> {
    // The build made what the tests run: it is not run again.
    if (line === "npm ci && npm run build") {
      expect(existsSync(join(REPO_ROOT, "dist/portmap-hostip-linux-x64"))).toBe(true);
      return "";
    }
    const systemd = /^(systemctl (?:enable|disable) --now|journalctl -u) (\S+)$/.exec(line);
    if (systemd) return this.unit(systemd[1] as string, systemd[2] as string);
    if (/^(systemctl|journalctl)\b/.test(line)) throw new Error(`the docs test cannot run ${JSON.stringify(line)}`);
    const r = await this.scratch.sh(line);
    expect(r.code, `${line}\n${r.stdout}${r.stderr}`).toBe(0);
    return r.stdout + r.stderr;
  }

  private async unit(verb: string, name: string): Promise<string> {
    if (verb === "journalctl -u") return this.service?.output() ?? "";
    if (verb === "systemctl disable --now") {
      const child = this.service?.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} does not run`);
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
      return "";
    }
    // The unit file as the step before installed it.
    const unit = parseUnit(readFileSync(this.scratch.hostPath(`/etc/systemd/system/${name}.service`), "utf8"));
    const argv = (unit.get("Service")?.get("ExecStart")?.[0] ?? "").split(" ");
    this.service = await this.scratch.spawn(argv, /^watching \/etc\/cni\/net\.d\b/);
    return "";
  }

  journal(): string {
    return this.service?.output() ?? "";
  }

  async destroy(): Promise<void> {
    if (this.service) await stopChild(this.service.child);
    await this.scratch.destroy();
    await this.topo.destroy();
  }
}

async function createNode(): Promise<Node> {
  const topo = await createTopology();
  try {
    const node = new Node(topo, await createScratchNode(topo));
    await topo.serveService({ tcp: [8080, 8081] });
    return node;
  } catch (err) {
    await topo.destroy();
    throw err;
  }
}

/** Our entry in the node's conflist. */
const entry = (node: Node) => node.conflist().plugins.find((p) => p.type === "portmap-hostip");

/** The keeper puts the entry back as it was after the network plugin rewrote the file, and the rules after a flush. */
async function keeperKeeps(node: Node): Promise<void> {
  const installed = entry(node);
  writeFileSync(node.scratch.hostPath(CONFLIST), node.original);
  await eventually(
    "the keeper puts the entry back, options and all",
    async () => JSON.stringify(entry(node)) === JSON.stringify(installed),
  );
  for (const flag of ["-F", "-X"]) await nsRunOk(node.topo.node, "iptables", ["-w", "-t", "nat", flag]);
  await eventually(
    "the keeper brings the pod's scoped rules back",
    async () => (await node.asks(NODE_IP1, 8080)) === "pod-web" && (await node.asks(CLUSTER_IP, 8080)) === "service",
  );
}

/** The plugin installed: a hostPort pod answers on the node's addresses and leaves the Service its ClusterIP. */
async function podIsScoped(node: Node): Promise<void> {
  expect(entry(node)).toMatchObject({ defaultHostIP: "node" });
  await node.pod("web", 8080);
  expect(await node.asks(NODE_IP1, 8080)).toBe("pod-web");
  expect(await node.asks(CLUSTER_IP, 8080)).toBe("service");
}

const statusShowsIt = async (out: string) => expect(out).toMatch(/default\/web\s+8080\/tcp\s+192\.0\.2\.10.*scoped/s);

describeAsRoot("the README's quick start, as written", () => {
  let node: Node;
  beforeAll(async () => {
    node = await createNode();
  });
  afterAll(() => node.destroy());

  it("installs the plugin and its keeper on a node, which keep its hostPorts scoped", async () => {
    await node.walk(commands(section(read("README.md"), "Quick start on one node")), {
      "portmap-hostip install --default-host-ip node": () => podIsScoped(node),
      "portmap-hostip status": statusShowsIt,
      "systemctl enable --now portmap-hostip": () => keeperKeeps(node),
    });
  });
});

describeAsRoot("docs/install.md, by hand: install, then removal, as written", () => {
  let node: Node;
  beforeAll(async () => {
    node = await createNode();
  });
  afterAll(() => node.destroy());
  const doc = () => read("docs/install.md");

  it("installs the plugin and its keeper", async () => {
    await node.walk(commands(section(doc(), "Install on one node by hand")), {
      "portmap-hostip install --default-host-ip node --dry-run": async (out) => {
        expect(out).toContain('+      "type": "portmap-hostip",');
        expect(entry(node)).toBeUndefined();
      },
      "portmap-hostip install --default-host-ip node": () => podIsScoped(node),
      "portmap-hostip status": statusShowsIt,
      "systemctl enable --now portmap-hostip": () => keeperKeeps(node),
      "journalctl -u portmap-hostip": async (out) => {
        expect(out).toContain("keeper: watching ");
        expect(out).toContain(`${CONFLIST}: added the entry after portmap`);
      },
    });
  });

  it("removes them, leaving the running pods' rules and nothing else", async () => {
    await node.walk(commands(section(doc(), "Removing it by hand")), {
      "portmap-hostip install --uninstall": async () => {
        expect(readFileSync(node.scratch.hostPath(CONFLIST), "utf8")).toBe(node.original);
        expect(existsSync(node.scratch.hostPath("/opt/cni/bin/portmap-hostip"))).toBe(false);
      },
      "rm -rf /run/portmap-hostip": async () => {
        expect(existsSync(node.scratch.hostPath("/usr/local/bin/portmap-hostip"))).toBe(false);
        expect(existsSync(node.scratch.hostPath("/etc/systemd/system/portmap-hostip.service"))).toBe(false);
        expect((await node.scratch.sh("test -e /run/portmap-hostip")).code).toBe(1);
        // What stays: the pod started while it was installed keeps its scoped rules; a new one gets portmap's.
        expect(await node.asks(CLUSTER_IP, 8080)).toBe("service");
        await node.pod("after", 8081);
        expect(await node.asks(CLUSTER_IP, 8081)).toBe("pod-after");
      },
    });
  });
});

describeAsRoot("deploy/portmap-hostip.service", () => {
  it("is a unit systemd reads: the keeper from the path the docs install it to, started before kubelet", () => {
    const unit = parseUnit(readFileSync(UNIT, "utf8"));
    expect([...unit.keys()]).toEqual(["Unit", "Service", "Install"]);
    expect(unit.get("Unit")?.get("Before")).toEqual(["kubelet.service"]);
    expect(unit.get("Service")?.get("ExecStart")).toEqual([
      "/usr/local/bin/portmap-hostip install --watch --cache-dir /var/lib/cni",
    ]);
    expect(unit.get("Install")?.get("WantedBy")).toEqual(["multi-user.target"]);
  });
});

describe("the demo's next step", () => {
  it("is the README's quick start: each command it prints is one of those the test above runs", () => {
    const printed = [
      ...read("scripts/demo.ts").matchAll(/say\(" {2}((?:install|portmap-hostip) [^#"]*?)\s*(?:#[^"]*)?"\)/g),
    ];
    const quickStart = commands(section(read("README.md"), "Quick start on one node"));
    expect(printed.map((m) => m[1])).toEqual([
      "install -m 0755 dist/portmap-hostip-linux-x64 /usr/local/bin/portmap-hostip",
      "portmap-hostip status",
      "portmap-hostip install --default-host-ip node",
    ]);
    for (const m of printed) expect(quickStart).toContain(m[1]);
  });
});
