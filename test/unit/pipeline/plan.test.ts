// A pod's plan (pure): from the node's network and the pod's rules as read, per family, the rules as they must be,
// on what real portmap wrote (test/fixtures/iptables).
import { describe, expect, it } from "vitest";
import { parseNetConf } from "../../../src/core/config.js";
import { Code } from "../../../src/core/errors.js";
import type { Family } from "../../../src/core/ip.js";
import { podFamilies } from "../../../src/core/result.js";
import { changed, planScoped } from "../../../src/pipeline/plan.js";
import { podScoping } from "../../../src/pipeline/pod.js";
import { CHAIN, chainOf, cniError, NODE, rules } from "../fixtures.js";

const PREV = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: "10.244.1.5/24", interface: 0 },
    { address: "2001:db8:244:1::5/64", interface: 0 },
  ],
};
/** The pod of the recordings with `mappings` under the entry's policy. */
function scoping(entry: Record<string, unknown>, mappings: object[]) {
  const conf = parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    prevResult: PREV,
    runtimeConfig: { portMappings: mappings },
    ...entry,
  });
  return podScoping(conf, "default/web", podFamilies(conf.prevResult, "eth0"))!;
}
const TCP8080 = { hostPort: 8080, containerPort: 80, protocol: "tcp" };
const target = (closedDestination?: Record<Family, string>) => ({
  closedDestination,
  where: (family: Family) => `IPv${family} chain ${CHAIN}`,
});

describe("a pod's plan", () => {
  it("gives each family's rules as read and as the policy scopes them", () => {
    const s = scoping({ defaultHostIP: ["192.0.2.11", "2001:db8::10"] }, [TCP8080]);
    const current = [rules(chainOf("unscoped-v4")), rules(chainOf("unscoped-v6"))];
    const plan = planScoped(s, "default/web", NODE, current, target());
    expect(plan.plans).toEqual([
      { family: 4, current: current[0], desired: rules(chainOf("scoped-192.0.2.11-v4")), closed: [] },
      { family: 6, current: current[1], desired: rules(chainOf("scoped-2001.db8..10-v6")), closed: [] },
    ]);
    expect(plan.plans.map(changed)).toEqual([true, true]);
    expect(plan.notes).toEqual([]);
  });

  it("needs no write once scoped", () => {
    const s = scoping({ defaultHostIP: "192.0.2.11" }, [TCP8080]);
    const plan = planScoped(s, "default/web", NODE, [rules(chainOf("scoped-192.0.2.11-v4")), []], target());
    expect(plan.plans.map(changed)).toEqual([false, false]);
  });

  it("drops a closed family's rules, or keeps them matching nothing where the backend must", () => {
    const s = scoping({ defaultHostIP: "192.0.2.11" }, [TCP8080]);
    const current = [rules(chainOf("unscoped-v4")), rules(chainOf("unscoped-v6"))];
    const dropped = planScoped(s, "default/web", NODE, current, target()).plans[1]!;
    expect([dropped.desired, dropped.closed.map((c) => c.hostPort)]).toEqual([[], [8080]]);
    const kept = planScoped(s, "default/web", NODE, current, target({ 4: "0.0.0.0", 6: "::" })).plans[1]!;
    expect(kept.desired.map((r) => r.destination?.address)).toEqual(["::", "::"]);
  });

  it("fails (102) naming where it looked when a mapping to scope has no rule", () => {
    const s = scoping({ defaultHostIP: "192.0.2.11" }, [TCP8080]);
    const err = cniError(() => planScoped(s, "default/web", NODE, [[], []], target()));
    expect([err.code, err.message]).toEqual([
      Code.PortmapRulesMissing,
      `no portmap rule for hostPort 8080/tcp of pod default/web in IPv4 chain ${CHAIN}: portmap-hostip must come after portmap in the plugin list`,
    ]);
  });

  it("fails (102) saying why portmap may have skipped a hostPort when the pod's others have their rules", () => {
    const s = scoping({ defaultHostIP: "192.0.2.11" }, [TCP8080, { ...TCP8080, hostPort: 9090 }]);
    const err = cniError(() => planScoped(s, "default/web", NODE, [rules(chainOf("unscoped-v4")), []], target()));
    expect(err.code).toBe(Code.PortmapRulesMissing);
    expect(err.message).toMatch(
      /^no portmap rule for hostPort 9090\/tcp of pod default\/web in IPv4 chain \S+: the pod's other hostPorts have their rules there: portmap skips a rule its `iptables -C` reports present, as ip6tables-legacy 1\.8\.9 does .*; nothing was changed$/,
    );
  });

  it("notes what the default left out and a mapping that can never receive traffic", () => {
    const s = scoping({ defaultHostIP: ["192.0.2.11", "198.51.100.7"] }, [
      TCP8080,
      { ...TCP8080, containerPort: 81, hostIP: "192.0.2.11" },
    ]);
    const plan = planScoped(
      s,
      "default/web",
      NODE,
      [rules(chainOf("unscoped-v4")), rules(chainOf("unscoped-v6"))],
      target(),
    );
    expect(plan.notes).toEqual([
      "pod default/web: defaultHostIP leaves out 198.51.100.7: it is not an address of this node",
      expect.stringMatching(
        /^warning: pod default\/web: .* can never receive traffic: .* comes before it in portmap's order/,
      ),
    ]);
  });
});
