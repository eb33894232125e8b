// CNI CHECK: the pod's rules must be scoped exactly as the policy resolves them now. The backends are the tests'
// own (cmdCheck asks backends/registry.js for them), holding the rules real portmap wrote (test/fixtures/iptables);
// the node's network is printed by a stand-in `ip` (test/fixtures/host).
import { afterEach, describe, expect, it, vi } from "vitest";
import type { RuleBackend } from "../../../src/backends/backend.js";
import { cmdCheck } from "../../../src/commands/check.js";
import { parseNetConf } from "../../../src/core/config.js";
import { Code } from "../../../src/core/errors.js";
import type { CniEnv } from "../../../src/core/names.js";
import type { Rule } from "../../../src/core/rule.js";
import { fakeBackend } from "../fake-backend.js";
import { CHAIN, chainOf, rules } from "../fixtures.js";
import { IP, standInTools, type Tools } from "../tools.js";

const registry = vi.hoisted(() => ({ backends: [] as RuleBackend[] }));
vi.mock("../../../src/backends/registry.js", () => ({
  podBackends: async () => registry.backends,
  nodeBackends: async () => registry.backends,
}));

const ENV: CniEnv = {
  command: "CHECK",
  containerId: "abc123",
  netns: "/var/run/netns/x",
  ifname: "eth0",
  args: new Map([
    ["K8S_POD_NAMESPACE", "default"],
    ["K8S_POD_NAME", "web"],
  ]),
};
/** The pod of the recordings, hostPort 8080 → 80/tcp, scoped to 192.0.2.11 by the entry. */
const conf = (entry: Record<string, unknown> = {}) =>
  parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    defaultHostIP: "192.0.2.11",
    prevResult: {
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
      ips: [{ address: "10.244.1.5/24", interface: 0 }],
    },
    runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
    ...entry,
  });
const holding = (name: string, held: Rule[] | undefined) =>
  fakeBackend(name, {
    where: (family, pod) => `${name} IPv${family} chain ${pod.network}/${pod.containerId}`,
    readPod: async (_pod, families) => families.map(() => held),
  });

let tools: Tools;
afterEach(() => {
  vi.unstubAllEnvs();
  tools?.remove();
});
function onNode(backends: RuleBackend[]): void {
  registry.backends = backends;
  tools = standInTools({ ip: IP });
  vi.stubEnv("PATH", tools.bin);
}

describe("CHECK", () => {
  it("passes when the pod's rules are scoped as the policy says", async () => {
    onNode([holding("a", undefined), holding("b", rules(chainOf("scoped-192.0.2.11-v4")))]);
    await expect(cmdCheck(conf(), ENV)).resolves.toBeUndefined();
  });

  it("fails (103) when they differ, naming where they are and both the rules expected and found", async () => {
    onNode([holding("a", undefined), holding("b", rules(chainOf("unscoped-v4")))]);
    await expect(cmdCheck(conf(), ENV)).rejects.toMatchObject({
      code: Code.RulesNotScoped,
      message:
        "hostPort rules of pod default/web (container abc123) in b IPv4 chain cbr0/abc123 (IPv4) are not scoped as the policy requires",
      details: ["expected:", ...chainOf("scoped-192.0.2.11-v4"), "found:", ...chainOf("unscoped-v4")].join("\n"),
    });
  });

  it("fails (103) when the policy changed since the ADD", async () => {
    onNode([holding("a", rules(chainOf("scoped-192.0.2.11-v4")))]);
    const err = await cmdCheck(conf({ defaultHostIP: "192.0.2.10" }), ENV).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Code.RulesNotScoped });
    expect((err as { details: string }).details).toContain(`-A ${CHAIN} -d 192.0.2.10/32 -p tcp`);
  });

  it("fails (102) when no backend holds the pod's rules", async () => {
    onNode([holding("a", undefined), holding("b", undefined)]);
    await expect(cmdCheck(conf(), ENV)).rejects.toMatchObject({
      code: Code.PortmapRulesMissing,
      message: expect.stringContaining("in a IPv4 chain cbr0/abc123 (nor in b IPv4 chain cbr0/abc123)"),
    });
  });

  it("needs the attachment's result (7), and reads nothing without it", async () => {
    onNode([]);
    await expect(cmdCheck(conf({ prevResult: undefined }), ENV)).rejects.toMatchObject({
      code: Code.InvalidConfig,
      message: "no prevResult: CHECK needs the attachment's result",
    });
    expect(tools.calls()).toEqual([]);
  });
});
