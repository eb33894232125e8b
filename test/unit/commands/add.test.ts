// CNI ADD: prevResult passed on (converted to the configuration's version), the pod's hostPort rules scoped,
// what the policy left out said on stderr. The tools are stand-ins first on PATH printing what the real ones
// printed (test/fixtures); stderr is caught where the plugin writes it (host/output.ts).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { cmdAdd } from "../../../src/commands/add.js";
import { parseNetConf } from "../../../src/core/config.js";
import { Code } from "../../../src/core/errors.js";
import type { CniEnv } from "../../../src/core/names.js";
import { writeOutput } from "../../../src/host/output.js";
import { readRecords } from "../../../src/host/state.js";
import { swapPayload } from "../../../src/iptables/text.js";
import { CHAIN, chainOf, rules } from "../fixtures.js";
import { IP, standInTools, type Tools } from "../tools.js";

vi.mock("../../../src/host/output.js", () => ({ writeOutput: vi.fn() }));

const ENV: CniEnv = {
  command: "ADD",
  containerId: "abc123",
  netns: "/var/run/netns/x",
  ifname: "eth0",
  args: new Map([
    ["K8S_POD_NAMESPACE", "default"],
    ["K8S_POD_NAME", "web"],
  ]),
};
/** The pod of the recordings (record.sh), as the plugins before ours pass it on. */
const PREV = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: "10.244.1.5/24", interface: 0 },
    { address: "2001:db8:244:1::5/64", interface: 0 },
  ],
};
const v4only = { ...PREV, ips: PREV.ips.slice(0, 1) };
const TCP8080 = [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }];

let stateDir: string;
let tools: Tools;
const conf = (entry: Record<string, unknown>) =>
  parseNetConf({ cniVersion: "1.0.0", name: "cbr0", stateDir, prevResult: v4only, ...entry });
/** What ADD wrote on stderr. */
const stderr = () => vi.mocked(writeOutput).mock.calls.map(([fd, text]) => `${fd} ${text}`);

beforeEach(() => {
  stateDir = mkdtempSync(join(tmpdir(), "pmh-add-"));
  // The node's tools as portmap left the pod: its iptables backend (iptables on PATH), no nft.
  tools = standInTools({
    ip: IP,
    iptables: [{ stdout: `-N ${CHAIN}\n${chainOf("unscoped-v4").join("\n")}\n` }],
    "iptables-restore": [{}],
    "ip6tables-restore": [{}],
  });
  vi.stubEnv("PATH", tools.bin);
});
afterEach(() => {
  vi.unstubAllEnvs();
  vi.mocked(writeOutput).mockReset();
  tools.remove();
  rmSync(stateDir, { recursive: true, force: true });
});

describe("ADD", () => {
  it("needs a prevResult (7): portmap-hostip runs after portmap", async () => {
    await expect(cmdAdd(conf({ prevResult: undefined }), ENV)).rejects.toMatchObject({
      code: Code.InvalidConfig,
      message: "no prevResult: portmap-hostip must run after portmap in a plugin chain",
    });
    expect(tools.calls()).toEqual([]);
  });

  it("passes a pod without hostPorts on, converted to the configuration's version, and runs and records nothing", async () => {
    const { result, resolved } = await cmdAdd(conf({ cniVersion: "0.4.0", prevResult: PREV }), ENV);
    expect(result).toEqual({
      ...PREV,
      cniVersion: "0.4.0",
      ips: PREV.ips.map((ip, i) => ({ ...ip, version: i === 0 ? "4" : "6" })),
    });
    expect(resolved).toEqual([]);
    expect(tools.calls()).toEqual([]);
    expect((await readRecords(stateDir)).records.size).toBe(0);
    expect(stderr()).toEqual([]);
  });

  it("on a container's first ADD, records it and swaps portmap's rules for the scoped ones without reading them", async () => {
    const { result, resolved } = await cmdAdd(
      conf({ defaultHostIP: "192.0.2.11", runtimeConfig: { portMappings: TCP8080 } }),
      ENV,
    );
    expect(result).toEqual(v4only);
    expect(resolved.map((r) => [r.mapping.hostPort, r.source, r.ips?.map((ip) => ip.text)])).toEqual([
      [8080, "defaultHostIP", ["192.0.2.11"]],
    ]);
    expect(tools.calls().map((c) => c.tool)).toEqual(["ip", "iptables-restore"]);
    expect(tools.calls()[1]?.stdin).toBe(
      swapPayload(rules(chainOf("unscoped-v4")), rules(chainOf("scoped-192.0.2.11-v4"))),
    );
    const { records } = await readRecords(stateDir);
    expect([...records.values()].map((r) => [r.network, r.containerId, r.state])).toEqual([
      ["cbr0", "abc123", "added"],
    ]);
    expect(stderr()).toEqual([]);
  });

  it("says on stderr what the default left out, and a family where a mapping has no host IP", async () => {
    await cmdAdd(
      conf({
        prevResult: PREV,
        defaultHostIP: ["192.0.2.11", "198.51.100.7"],
        runtimeConfig: { portMappings: TCP8080 },
      }),
      ENV,
    );
    expect(stderr()).toEqual([
      "2 portmap-hostip: pod default/web (container abc123): defaultHostIP leaves out 198.51.100.7: it is not an address of this node\n",
      "2 portmap-hostip: hostPort 8080/tcp of pod default/web (container abc123) has no IPv6 host IP: not reachable over IPv6\n",
    ]);
  });

  it("goes on, reading the pod's chain, when its record cannot be written, and says so", async () => {
    const file = join(stateDir, "file");
    writeFileSync(file, "");
    await cmdAdd(conf({ stateDir: file, defaultHostIP: "192.0.2.11", runtimeConfig: { portMappings: TCP8080 } }), ENV);
    expect(stderr()).toEqual([
      expect.stringMatching(
        new RegExp(
          `^2 portmap-hostip: pod default/web \\(container abc123\\): no record in ${file} \\(.*\\); gc --grace may take its chain for dead while ADD runs\\n$`,
        ),
      ),
    ]);
    expect(tools.calls().map((c) => [c.tool, ...c.args])).toEqual([
      ["ip", "-j", "-batch", "-"],
      ["iptables", "-w", "5", "-t", "nat", "-S", CHAIN],
      ["iptables-restore", "-w", "5", "--noflush"],
    ]);
  });
});
