// The iptables backend's rules on the node, on both families' nat tables as real portmap wrote them
// (test/fixtures/ops/default-v4.rules, -v6: pods abc123 and def456 of network cbr0, abc999 of network other): the
// pods they hold, which attachments they hold, and the GC of dead pods' chains.
import { describe, expect, it } from "vitest";
import { iptablesBackend } from "../../../src/backends/iptables.js";
import { natRules, readNat } from "../../../src/backends/iptables-node.js";
import type { Family } from "../../../src/core/ip.js";
import type { Liveness } from "../../../src/host/liveness.js";
import { nat } from "../../../src/iptables/nat.js";
import { natTransaction } from "../../../src/iptables/text.js";
import { CHAIN, fixture } from "../fixtures.js";
import { useToolsOnPath } from "../tools.js";

const DEF456 = "CNI-DN-7d8bb303737095628cf38";
const ABC999 = "CNI-DN-90768fddcd5ccd6c481c5";
const texts = (name: string) => new Map([4, 6].map((f) => [f as Family, fixture(`ops/${name}-v${f}.rules`)]));
const read = (t = texts("default")) => natRules(iptablesBackend(), nat(), t);
/** Only def456 of network cbr0 is dead. */
const def456Dead: Liveness = (network, id) => (network === "cbr0" && id === "def456" ? "dead" : "live");

/** The stand-ins, alone on PATH. */
const withTools = useToolsOnPath();

describe("the nat tables as read", () => {
  it("hold each pod's chain per family: its owner by the jump's comment, its rules, and the jump's rank", () => {
    const rules = read();
    expect(rules.families).toEqual([4, 6]);
    expect(rules.pods().map((p) => [p.family, p.place, p.owner, p.rules.length, p.reachable, p.rank(0)])).toEqual([
      [4, CHAIN, { network: "cbr0", containerId: "abc123" }, 9, true, [0, 0]],
      [4, DEF456, { network: "cbr0", containerId: "def456" }, 3, true, [2, 0]],
      [4, ABC999, { network: "other", containerId: "abc999" }, 3, true, [3, 0]],
      [6, CHAIN, { network: "cbr0", containerId: "abc123" }, 2, true, [0, 0]],
      [6, DEF456, { network: "cbr0", containerId: "def456" }, 2, true, [2, 0]],
      [6, ABC999, { network: "other", containerId: "abc999" }, 2, true, [3, 0]],
    ]);
    expect(rules.pods().every((p) => p.key === p.place)).toBe(true);
  });

  it("hold a chain no jump reaches as nobody's and unreachable, last in rule order", () => {
    const v4 = fixture("ops/default-v4.rules").replace(/^-A CNI-HOSTPORT-DNAT .*def456.*\n/m, "");
    const pod = read(new Map([[4, v4]]))
      .pods()
      .find((p) => p.place === DEF456)!;
    expect([pod.owner, pod.reachable, pod.rank(1)]).toEqual([undefined, false, [Number.MAX_SAFE_INTEGER, 1]]);
  });

  it("hold an attachment whose chain exists, known by portmap's chain name", () => {
    const rules = read();
    expect(rules.keyOf({ network: "cbr0", containerId: "abc123" })).toBe(CHAIN);
    expect(
      [
        { network: "cbr0", containerId: "abc123" },
        { network: "other", containerId: "abc999" },
        { network: "cbr0", containerId: "abc999" },
        { network: "cbr0", containerId: "zzz" },
      ].map((pod) => rules.holds(pod)),
    ).toEqual([true, true, false, false]);
  });
});

describe("collecting dead pods' chains (CNI GC)", () => {
  it("plans, under --dry-run, the dead chains of each family and runs nothing", async () => {
    const t = withTools({});
    expect(await read().collect(def456Dead, true)).toEqual(
      [4, 6].map((family) => ({
        family,
        removed: [{ containerId: "def456", chain: { name: DEF456, network: "cbr0", jumps: 1 } }],
        leftAlone: [],
      })),
    );
    expect(t.calls()).toEqual([]);
  });

  it("deletes them with their jumps in one iptables-restore transaction per family", async () => {
    const t = withTools({ "iptables-restore": [{}], "ip6tables-restore": [{}] });
    await read().collect(def456Dead, false);
    const jump = (family: Family) =>
      fixture(`ops/default-v${family}.rules`)
        .split("\n")
        .find((l) => l.endsWith(`-j ${DEF456}`))!
        .replace(/^-A/, "-D");
    expect(t.calls()).toEqual(
      ([4, 6] as const).map((family) => ({
        tool: family === 4 ? "iptables-restore" : "ip6tables-restore",
        args: ["-w", "5", "--noflush"],
        stdin: natTransaction([jump(family), `-F ${DEF456}`, `-X ${DEF456}`]),
      })),
    );
  });

  it("writes nothing when no pod is dead", async () => {
    const t = withTools({});
    const collected = await read().collect(() => "live", false);
    expect(collected.map((c) => c.removed)).toEqual([[], []]);
    expect(t.calls()).toEqual([]);
  });
});

describe("reading the nat tables", () => {
  it("reads each family with `iptables -t nat -S`; a family whose tool fails is left out and said", async () => {
    const t = withTools({ iptables: [{ stdout: fixture("ops/default-v4.rules") }] });
    const rules = await readNat(iptablesBackend(), nat());
    expect(rules.families).toEqual([4]);
    expect(rules.problems).toEqual([expect.stringMatching(/^IPv6 nat table not read: cannot run ip6tables: .*ENOENT/)]);
    expect(rules.pods().map((p) => p.place)).toEqual([CHAIN, DEF456, ABC999]);
    expect(t.calls().map((c) => [c.tool, ...c.args])).toEqual([["iptables", "-w", "5", "-t", "nat", "-S"]]);
  });
});
