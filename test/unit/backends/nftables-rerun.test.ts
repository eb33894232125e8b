// The keeper's check of a pod on portmap's nftables rules as a pass read them (no nft call per pod).
import { describe, expect, it } from "vitest";
import { correctAsRead } from "../../../src/backends/nftables-rerun.js";
import { parseIp } from "../../../src/core/ip.js";
import type { Rule } from "../../../src/core/rule.js";
import { parseCacheFile } from "../../../src/host/cache.js";
import { NEVER, parseChainJson } from "../../../src/nftables/json.js";
import { ourConf } from "../../../src/pipeline/attachment.js";
import { scopeFamily } from "../../../src/pipeline/pod.js";
import type { ResolvedMapping } from "../../../src/policy/resolve.js";
import { cacheEntryJson } from "../../support/result-cache.js";
import { fixture, NODE } from "../fixtures.js";

const ID = "abc123";
const chain = (name: string) => parseChainJson(fixture(`nftables/${name}.json`));
/** hostPort → 80/tcp resolved by our policy to `ips`. */
const mapping = (hostPort: number, ips: string[]): ResolvedMapping => ({
  mapping: { hostPort, containerPort: 80, protocol: "tcp", hostIp: undefined },
  source: "annotation",
  ips: ips.map((t) => parseIp(t)!),
  leftOut: [],
  closed: false,
});

describe("the keeper's check on the rules a pass read (no nft call per pod)", () => {
  // The recorded pod: abc123, 10.244.1.5 and 2001:db8:244:1::5, hostPort 8080 → 80/tcp; our entry scopes it to
  // 192.0.2.11.
  const a = parseCacheFile(
    cacheEntryJson({
      list: {
        name: "cbr0",
        cniVersion: "1.0.0",
        plugins: [
          { type: "portmap", backend: "nftables", capabilities: { portMappings: true } },
          { type: "portmap-hostip", capabilities: { portMappings: true }, defaultHostIP: "192.0.2.11" },
        ],
      },
      containerID: ID,
      ifName: "eth0",
      capabilityArgs: { portMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" }] },
      result: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
        ips: [
          { address: "10.244.1.5/24", interface: 0 },
          { address: "2001:db8:244:1::5/64", interface: 0 },
        ],
      },
    }),
    ID,
    0,
  );
  const env = {
    command: "ADD" as const,
    containerId: ID,
    netns: "/x",
    ifname: "eth0",
    args: new Map<string, string>(),
  };
  const read = (v4: string, v6: Rule[]) => ({
    network: NODE,
    hostports: new Map([
      [4 as const, chain(v4)],
      [6 as const, v6],
    ]),
  });

  it("scoped as the policy says: correct; portmap's unscoped rules or none: not", () => {
    const ours = ourConf(a)!;
    const v6 = scopeFamily([mapping(8080, ["192.0.2.11"])], 6, chain("unscoped-v6"), NEVER[6]).rules;
    expect(correctAsRead(ours, env, read("scoped-192.0.2.11-v4", v6))).toBe(true);
    expect(correctAsRead(ours, env, read("unscoped-v4", chain("unscoped-v6")))).toBe(false);
    expect(correctAsRead(ours, env, { network: NODE, hostports: new Map() })).toBe(false);
  });
});
