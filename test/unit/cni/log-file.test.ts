// The log file's line for a pod whose default left a mapping closed: the mapping says why it answers nowhere.
import { describe, expect, it } from "vitest";
import { formatCall } from "../../../src/cni/log-file.js";
import { parseNetConf } from "../../../src/core/config.js";
import { resolveMappings } from "../../../src/policy/resolve.js";
import { NODE } from "../fixtures.js";

describe("formatCall", () => {
  it("gives a closed mapping its reason", () => {
    const conf = parseNetConf({
      cniVersion: "1.0.0",
      name: "cbr0",
      nodeInterfaces: ["nowhere0"],
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
    });
    const resolved = resolveMappings(conf.portMappings, conf.policy, undefined, NODE, "default/web", new Set([4]));
    const line = formatCall({
      time: new Date("2026-01-02T03:04:05.678Z"),
      command: "ADD",
      pod: "default/web",
      containerId: "abc123",
      mappings: conf.portMappings,
      resolved,
      error: undefined,
      durationMs: 30,
    });
    expect(JSON.parse(line).mappings).toEqual([
      {
        hostPort: 8080,
        protocol: "tcp",
        source: "node",
        hostIPs: ["127.0.0.1"],
        closed: `defaultHostIP "node" found no node address of the pod's families (IPv4)`,
      },
    ]);
  });
});
