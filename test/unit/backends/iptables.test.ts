// portmap's iptables backend on one pod, through stand-ins for iptables, ip6tables and their -restore that print
// what the real tools printed (test/fixtures/iptables): the pod's chain read, written all or nothing, and
// portmap's rules of a first ADD known without reading them.
import { describe, expect, it } from "vitest";
import type { ChainPlan, PodRef } from "../../../src/backends/backend.js";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import type { PortMapping } from "../../../src/core/config.js";
import { CniError, Code } from "../../../src/core/errors.js";
import { parseIp } from "../../../src/core/ip.js";
import { run, runBlocking } from "../../../src/host/run.js";
import { restorePayload, swapPayload } from "../../../src/iptables/text.js";
import { CHAIN, chainOf, fixture, PORTMAP_VERSIONS, rules } from "../fixtures.js";
import { useToolsOnPath } from "../tools.js";

const POD: PodRef = { network: "cbr0", containerId: "abc123" };
/** The pod of the recordings (record.sh): 10.244.1.5 and 2001:db8:244:1::5 on eth0. */
const PREV = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: "10.244.1.5/24", interface: 0 },
    { address: "2001:db8:244:1::5/64", interface: 0 },
  ],
};
const ip = (text: string) => parseIp(text)!;
/** The recordings' three mappings: 8080 → 80, 8443 → 443 on 192.0.2.10, 5353 → 53/udp on 0.0.0.0. */
const THREE: PortMapping[] = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIp: undefined },
  { hostPort: 8443, containerPort: 443, protocol: "tcp", hostIp: ip("192.0.2.10") },
  { hostPort: 5353, containerPort: 53, protocol: "udp", hostIp: ip("0.0.0.0") },
];
/** `iptables -S <chain>` of a recorded chain. */
const listing = (save: string) => `-N ${CHAIN}\n${chainOf(save).join("\n")}\n`;

/** The stand-ins, alone on PATH. */
const withTools = useToolsOnPath();

describe("the iptables backend on PATH", () => {
  const backend = iptablesBackend();

  it("names the pod's chain per family, and prints rules as iptables -S does", () => {
    expect([backend.where(4, POD), backend.where(6, POD)]).toEqual([
      `iptables nat chain ${CHAIN}`,
      `ip6tables nat chain ${CHAIN}`,
    ]);
    expect(backend.describe(4, rules(chainOf("unscoped-v4"))[2]!)).toBe(chainOf("unscoped-v4")[2]);
    expect(backend.closedDestination).toBeUndefined();
    expect(iptablesBackend()).toBe(backend);
  });

  it("reads the pod's chain per family with `iptables -w 5 -t nat -S <chain>`", async () => {
    const t = withTools({
      iptables: [{ stdout: listing("unscoped-v4") }],
      ip6tables: [{ stdout: listing("unscoped-v6") }],
    });
    const read = await backend.readPod(POD, [4, 6], runBlocking);
    expect(read).toEqual([rules(chainOf("unscoped-v4")), rules(chainOf("unscoped-v6"))]);
    expect(t.calls().map((c) => [c.tool, ...c.args])).toEqual([
      ["iptables", "-w", "5", "-t", "nat", "-S", CHAIN],
      ["ip6tables", "-w", "5", "-t", "nat", "-S", CHAIN],
    ]);
  });

  it("reads a chain that does not exist as no rules of the pod (iptables-nft's and iptables-legacy's words)", async () => {
    withTools({
      iptables: [{ stderr: fixture("iptables/no-chain-nft.stderr"), code: 1 }],
      ip6tables: [{ stderr: fixture("iptables/no-chain-legacy.stderr"), code: 1 }],
    });
    expect(await backend.readPod(POD, [4, 6], runBlocking)).toEqual([undefined, undefined]);
  });

  it("reads nothing on a node without iptables, and fails on any other failure of the tool", async () => {
    withTools({});
    expect(await backend.readPod(POD, [4], runBlocking)).toEqual([undefined]);
    withTools({ iptables: [{ stderr: fixture("iptables/not-root-nft.stderr"), code: 4 }] });
    const err = await backend.readPod(POD, [4], runBlocking).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect(err).toMatchObject({
      code: Code.IoFailure,
      message: `iptables -t nat -S ${CHAIN} failed (exit 4)`,
      details: fixture("iptables/not-root-nft.stderr").trim(),
    });
  });

  describe("writing the pod's chains", () => {
    const plan = (family: 4 | 6, current: string, desired: string): ChainPlan => ({
      backend,
      pod: POD,
      family,
      current: rules(chainOf(current)),
      desired: rules(chainOf(desired)),
      closed: [],
    });
    const plans = [plan(4, "unscoped-v4", "scoped-192.0.2.11-v4"), plan(6, "unscoped-v6", "scoped-2001.db8..10-v6")];

    it("replaces each family's chain in one iptables-restore --noflush transaction", async () => {
      const t = withTools({ "iptables-restore": [{}], "ip6tables-restore": [{}] });
      await backend.writePod(plans, runBlocking);
      expect(t.calls()).toEqual([
        { tool: "iptables-restore", args: ["-w", "5", "--noflush"], stdin: restorePayload(CHAIN, plans[0]!.desired) },
        { tool: "ip6tables-restore", args: ["-w", "5", "--noflush"], stdin: restorePayload(CHAIN, plans[1]!.desired) },
      ]);
    });

    it("puts the other family back when one fails, and fails with the tool's words", async () => {
      const t = withTools({
        "iptables-restore": [{}],
        "ip6tables-restore": [{ stderr: fixture("iptables/write-failed-v6.stderr"), code: 2 }],
      });
      const err = await backend.writePod(plans, runBlocking).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: Code.IoFailure,
        message: `ip6tables-restore --noflush of chain ${CHAIN} failed (exit 2)`,
        details: fixture("iptables/write-failed-v6.stderr").trim(),
      });
      expect(t.calls().map((c) => [c.tool, c.stdin])).toEqual([
        ["iptables-restore", restorePayload(CHAIN, plans[0]!.desired)],
        ["ip6tables-restore", restorePayload(CHAIN, plans[1]!.desired)],
        ["iptables-restore", restorePayload(CHAIN, plans[0]!.current)],
      ]);
    });
  });

  describe("a container's first ADD, unread", () => {
    const unread = backend.unread!;

    it.each(PORTMAP_VERSIONS)("gives the rules portmap $portmap wrote with its defaults, per family", ({ dir }) => {
      expect(unread.portmapRules(POD, PREV, "eth0", THREE, [4, 6])).toEqual([
        rules(chainOf("reference-v4", CHAIN, dir)),
        rules(chainOf("reference-v6", CHAIN, dir)),
      ]);
    });

    it("gives none for a family where the pod has no address on CNI_IFNAME", () => {
      const v4only = { ...PREV, ips: PREV.ips.slice(0, 1) };
      expect(unread.portmapRules(POD, v4only, "eth0", THREE, [4, 6])[1]).toBeUndefined();
      expect(unread.portmapRules(POD, PREV, "net1", THREE, [4])).toEqual([undefined]);
    });

    it("swaps portmap's rules for the scoped ones in one transaction", async () => {
      const t = withTools({ "iptables-restore": [{}] });
      const [from, to] = [rules(chainOf("unscoped-v4")), rules(chainOf("scoped-192.0.2.11-v4"))];
      expect(await unread.swap(4, from, to, run)).toBe(true);
      expect(t.calls()).toEqual([
        { tool: "iptables-restore", args: ["-w", "5", "--noflush"], stdin: swapPayload(from, to) },
      ]);
    });

    it("is refused, changing nothing, when a rule to delete is not there, or there is no iptables-restore", async () => {
      const [from, to] = [rules(chainOf("unscoped-v4")), rules(chainOf("scoped-192.0.2.11-v4"))];
      withTools({ "iptables-restore": [{ stderr: fixture("iptables/swap-refused-nft.stderr"), code: 2 }] });
      expect(await unread.swap(4, from, to, run)).toBe(false);
      withTools({});
      expect(await unread.swap(4, from, to, run)).toBe(false);
    });
  });
});

describe("the iptables backend of a variant", () => {
  it("runs that variant's binaries and names them", async () => {
    const legacy = iptablesBackend("legacy");
    expect([legacy.name, legacy.tool, legacy.where(6, POD)]).toEqual([
      "iptables-legacy",
      "iptables-legacy",
      `ip6tables-legacy nat chain ${CHAIN}`,
    ]);
    const t = withTools({ "iptables-legacy": [{ stdout: listing("unscoped-v4") }] });
    expect(await legacy.readPod(POD, [4], runBlocking)).toEqual([rules(chainOf("unscoped-v4"))]);
    expect(t.calls().map((c) => c.tool)).toEqual(["iptables-legacy"]);
  });
});
