// One pod's rules where portmap wrote them, with backends of the tests' own holding the rules real portmap wrote
// (test/fixtures/iptables): read from the first backend that holds them, planned, written through that backend;
// portmap's rules of a first ADD swapped unread, and put back when a family refuses. The node's network is the
// e2e node's (given, or printed by a stand-in `ip` from test/fixtures/host).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ChainPlan, RuleBackend, UnreadSwap } from "../../../src/backends/backend.js";
import { planPodChains, scopePod } from "../../../src/backends/scope-pod.js";
import { parseNetConf } from "../../../src/core/config.js";
import { Code, RulesChanged } from "../../../src/core/errors.js";
import type { CniEnv } from "../../../src/core/names.js";
import type { Rule } from "../../../src/core/rule.js";
import { runBlocking } from "../../../src/host/run.js";
import { fakeBackend } from "../fake-backend.js";
import { chainOf, NODE, rules } from "../fixtures.js";
import { IP, standInTools, type Tools } from "../tools.js";

const ENV: CniEnv = {
  command: "ADD",
  containerId: "abc123",
  netns: "/var/run/netns/x",
  ifname: "eth0",
  args: new Map(),
};
/** The pod of the recordings, with its IPv4 address (and its IPv6 one when `v6`). */
const prevResult = (v6 = false) => ({
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.244.1.5/24", interface: 0 }, ...(v6 ? [{ address: "2001:db8:244:1::5/64", interface: 0 }] : [])],
});
let stateDir: string;
/** hostPort 8080 → 80/tcp, scoped by the entry's defaultHostIP. */
const conf = (entry: Record<string, unknown> = {}, v6 = false) =>
  parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    defaultHostIP: v6 ? ["192.0.2.11", "2001:db8::10"] : "192.0.2.11",
    stateDir,
    prevResult: prevResult(v6),
    runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
    ...entry,
  });
const recorded = (name: string) => rules(chainOf(name));

/** A backend holding `held` (per family asked, in order), noting each read in `asked`. */
const holding = (name: string, asked: string[], held: Array<Rule[] | undefined>, parts: Partial<RuleBackend> = {}) =>
  fakeBackend(name, {
    readPod: async (pod, families) => {
      asked.push(`${name} ${pod.network}/${pod.containerId} IPv${families.join(",")}`);
      return families.map((_, i) => held[i]);
    },
    ...parts,
  });

let tools: Tools | undefined;
beforeEach(() => {
  stateDir = mkdtempSync(join(tmpdir(), "pmh-scope-pod-"));
});
afterEach(() => {
  vi.unstubAllEnvs();
  tools?.remove();
  tools = undefined;
  rmSync(stateDir, { recursive: true, force: true });
});
/** A stand-in `ip` printing the e2e node's addresses and routes, alone on PATH. */
function withIp(): Tools {
  tools = standInTools({ ip: IP });
  vi.stubEnv("PATH", tools.bin);
  return tools;
}

describe("planning a pod's rules", () => {
  it("reads from the first backend that holds them and plans there; later ones are not read", async () => {
    const asked: string[] = [];
    const a = holding("a", asked, [undefined]);
    const b = holding("b", asked, [recorded("unscoped-v4")]);
    const c = holding("c", asked, [recorded("unscoped-v4")]);
    const plan = await planPodChains(conf(), ENV, async () => [a, b, c], NODE);
    expect(asked).toEqual(["a cbr0/abc123 IPv4", "b cbr0/abc123 IPv4"]);
    expect(plan.plans).toEqual([
      {
        backend: b,
        pod: { network: "cbr0", containerId: "abc123" },
        family: 4,
        current: recorded("unscoped-v4"),
        desired: recorded("scoped-192.0.2.11-v4"),
        closed: [],
      },
    ]);
    expect(plan.resolved.map((r) => r.ips?.map((ip) => ip.text))).toEqual([["192.0.2.11"]]);
  });

  it("when no backend holds them, fails (102) naming the first place and every later one looked in", async () => {
    const asked: string[] = [];
    const backends = [holding("a", asked, [undefined]), holding("b", asked, [undefined])];
    const err = await planPodChains(conf(), ENV, async () => backends, NODE).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: Code.PortmapRulesMissing,
      message:
        "no portmap rule for hostPort 8080/tcp of pod container abc123 in a IPv4 place of abc123 (nor in b IPv4 place of abc123): portmap-hostip must come after portmap in the plugin list",
    });
    expect(asked).toHaveLength(2);
  });

  it("loads no backend for a pod with nothing to scope, or without hostPorts", async () => {
    const load = vi.fn(async () => [] as RuleBackend[]);
    const any = await planPodChains(conf({ defaultHostIP: "any" }), ENV, load);
    expect([any.plans, any.resolved.map((r) => r.source)]).toEqual([[], ["any"]]);
    expect(await planPodChains(conf({ runtimeConfig: {} }), ENV, load)).toEqual({ resolved: [], plans: [], notes: [] });
    expect(load).not.toHaveBeenCalled();
  });

  it("reads the node's network with `ip -j -batch -` when it is not given", async () => {
    const t = withIp();
    const plan = await planPodChains(conf(), ENV, async () => [holding("a", [], [recorded("unscoped-v4")])]);
    expect(plan.plans[0]?.desired).toEqual(recorded("scoped-192.0.2.11-v4"));
    expect(t.calls()).toEqual([
      { tool: "ip", args: ["-j", "-batch", "-"], stdin: "address show\nroute show default\n" },
    ]);
  });
});

describe("scoping a pod's rules (ADD again)", () => {
  it("writes the families that changed through the backend holding them, one at a time", async () => {
    withIp();
    const written: ChainPlan[][] = [];
    const b = holding("b", [], [recorded("unscoped-v4")], {
      writePod: async (plans, runner) => {
        expect(runner).toBe(runBlocking);
        written.push([...plans]);
      },
    });
    const done = await scopePod(conf(), ENV, async () => [holding("a", [], [undefined]), b]);
    expect(written).toEqual([done.written]);
    expect(done.written.map((p) => [p.backend.name, p.family, p.desired])).toEqual([
      ["b", 4, recorded("scoped-192.0.2.11-v4")],
    ]);
  });

  it("writes nothing when the rules are already scoped", async () => {
    withIp();
    const b = holding("b", [], [recorded("scoped-192.0.2.11-v4")]);
    expect((await scopePod(conf(), ENV, async () => [b])).written).toEqual([]);
  });

  it("reads again after a concurrent change of the pod's rules, and gives up (11) after three rewrites", async () => {
    withIp();
    const asked: string[] = [];
    const gone = new RulesChanged(Code.TryAgainLater, "the nftables rules changed while they were rewritten", "gone");
    const b = holding("b", asked, [recorded("unscoped-v4")], {
      writePod: async () => {
        throw gone;
      },
    });
    const err = await scopePod(conf(), ENV, async () => [b]).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: Code.TryAgainLater,
      message: "the rules of pod container abc123 changed during each of 3 rewrites",
      details: "gone",
    });
    expect(asked).toHaveLength(3);
  });
});

describe("a container's first ADD", () => {
  /** An unread swap of the recorded default rules, accepting the families in `accepts`, noting each swap. */
  const unread = (swaps: string[], accepts: ReadonlySet<number>): UnreadSwap => ({
    portmapRules: (_pod, _prev, _ifname, _mappings, families) =>
      families.map((f) => recorded(f === 4 ? "unscoped-v4" : "unscoped-v6")),
    swap: async (family, from, to) => {
      swaps.push(`IPv${family} ${from.length} → ${to.length}`);
      return accepts.has(family);
    },
  });

  it("swaps portmap's rules for the scoped ones without reading them", async () => {
    const t = withIp();
    const swaps: string[] = [];
    const asked: string[] = [];
    const b = holding("b", asked, [], { unread: unread(swaps, new Set([4])) });
    const done = await scopePod(conf(), ENV, async () => [b], true);
    expect(swaps).toEqual(["IPv4 3 → 3"]);
    expect(asked).toEqual([]);
    expect(done.written.map((p) => p.desired)).toEqual([recorded("scoped-192.0.2.11-v4")]);
    expect(t.calls().map((c) => c.tool)).toEqual(["ip"]);
  });

  it("puts the swapped families back when one refuses, then reads and writes what changed", async () => {
    withIp();
    const swaps: string[] = [];
    const asked: string[] = [];
    const written: ChainPlan[][] = [];
    const b = holding("b", asked, [recorded("unscoped-v4"), recorded("unscoped-v6")], {
      unread: unread(swaps, new Set([4])),
      writePod: async (plans) => void written.push([...plans]),
    });
    const done = await scopePod(conf({}, true), ENV, async () => [b], true);
    // IPv4 swapped, IPv6 refused, IPv4 swapped back.
    expect(swaps).toEqual(["IPv4 3 → 3", "IPv6 2 → 2", "IPv4 3 → 3"]);
    expect(asked).toEqual(["b cbr0/abc123 IPv4,6"]);
    expect(written).toEqual([done.written]);
    expect(done.written.map((p) => p.desired)).toEqual([
      recorded("scoped-192.0.2.11-v4"),
      recorded("scoped-2001.db8..10-v6"),
    ]);
  });

  it("on a network whose first ADDs read (a swap the read would not have taken), reads at once", async () => {
    withIp();
    const swaps: string[] = [];
    // Rules portmap wrote with other options than its defaults (snat false): the swap would not take them.
    const b = holding("b", [], [recorded("nosnat-v4")], {
      unread: unread(swaps, new Set()),
      writePod: async () => {},
    });
    await scopePod(conf(), ENV, async () => [b], true);
    expect(swaps).toEqual(["IPv4 3 → 3"]);
    await scopePod(conf(), { ...ENV, containerId: "def456" }, async () => [b], true);
    expect(swaps).toEqual(["IPv4 3 → 3"]);
  });
});

describe("the node's network", () => {
  it("fails the plan with an I/O error (5) when `ip` cannot run", async () => {
    tools = standInTools({});
    vi.stubEnv("PATH", tools.bin);
    await expect(planPodChains(conf(), ENV, async () => [])).rejects.toMatchObject({
      code: Code.IoFailure,
      message: expect.stringMatching(/^cannot read the node's network with "ip -j -batch -": .*ENOENT/),
    });
  });
});
