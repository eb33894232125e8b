// Pods as libcni cached them, and both families' nat tables as real portmap wrote them (test/fixtures/ops): what
// status, its rendering, the result cache reader and the backends' plans are tested on.
import type { NodeRules } from "../../src/backends/backend.js";
import { iptablesBackend } from "../../src/backends/iptables.js";
import { natRules } from "../../src/backends/iptables-node.js";
import type { Family } from "../../src/core/ip.js";
import { type CacheRead, parseCacheFile } from "../../src/host/cache.js";
import { judge } from "../../src/host/liveness.js";
import { nat } from "../../src/iptables/nat.js";
import { status } from "../../src/ops/status.js";
import { cacheEntryJson } from "../support/result-cache.js";
import { fixture, NODE } from "./fixtures.js";

/** One container's cache entry of `list` (a network with an IPv4 result), as libcni 1.1 writes it. */
export const ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
export const cacheEntryOf = (list: Record<string, unknown> & { name: string }, id = ID) =>
  cacheEntryJson({
    list,
    containerID: id,
    ifName: "eth0",
    result: { cniVersion: "1.1.0", interfaces: [{ name: "eth0" }], ips: [{ address: "10.244.1.5/24", interface: 0 }] },
  });

export const list = (name: string, hostip: object | false = {}) => ({
  name,
  cniVersion: "1.0.0",
  plugins: [
    { type: "bridge", bridge: "cni0", ipam: { type: "host-local" } },
    { type: "portmap", capabilities: { portMappings: true } },
    ...(hostip === false
      ? []
      : [
          {
            type: "portmap-hostip",
            capabilities: { portMappings: true, "io.kubernetes.cri.pod-annotations": true },
            ...hostip,
          },
        ]),
  ],
});
const result = (v4: string, v6: string) => ({
  cniVersion: "1.0.0",
  interfaces: [{ name: "cni0" }, { name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [
    { address: `${v4}/24`, gateway: v4.replace(/\d+$/, "1"), interface: 1 },
    { address: `${v6}/64`, interface: 1 },
  ],
});
const entry = (network: string, id: string, pod: string, mappings: object[], v4: string, v6: string, mtimeMs: number) =>
  parseCacheFile(
    cacheEntryJson({
      list: list(network),
      containerID: id,
      ifName: "eth0",
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=${id}`,
      capabilityArgs: { portMappings: mappings, "io.kubernetes.cri.pod-annotations": {} },
      result: result(v4, v6),
    }),
    `/cache/results/${network}-${id}-eth0`,
    mtimeMs,
  );

export const three = [
  { HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "" },
  { HostPort: 8443, ContainerPort: 443, Protocol: "tcp", HostIP: "192.0.2.10" },
  { HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "0.0.0.0" },
];
export const a = entry("cbr0", "abc123", "a", three, "10.244.1.5", "2001:db8:244:1::5", 1);
export const b = entry(
  "cbr0",
  "def456",
  "b",
  [{ HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "" }],
  "10.244.1.6",
  "2001:db8:244:1::6",
  2,
);
export const cache = (attachments = [a, b]): CacheRead => ({
  dir: "/cache/results",
  present: true,
  attachments,
  unreadable: [],
  problems: [],
});
/** Both families' nat tables as recorded (`iptables -S`), as the iptables backend reads them. */
export const tables = (name: string): NodeRules =>
  natRules(iptablesBackend(), nat(), new Map([4, 6].map((f) => [f as Family, fixture(`ops/${name}-v${f}.rules`)])));
/** status() with the verdicts of `c` and no records. */
export const statusOf = (read: NodeRules[], c = cache()) =>
  status(read, c, NODE, judge({ cache: c, records: new Map(), now: 0 }));

/** A pod of network cbr0 (10.244.1.9) with one tcp hostPort → 80, its portmap entry with `portmap`'s options. */
export const cachedPod = (id: string, hostPort: number, portmap: Record<string, unknown> = {}) =>
  parseCacheFile(
    cacheEntryJson({
      list: {
        name: "cbr0",
        cniVersion: "1.0.0",
        plugins: [
          { type: "portmap", capabilities: { portMappings: true }, ...portmap },
          { type: "portmap-hostip", capabilities: { portMappings: true } },
        ],
      },
      containerID: id,
      ifName: "eth0",
      capabilityArgs: { portMappings: [{ HostPort: hostPort, ContainerPort: 80, Protocol: "tcp", HostIP: "" }] },
      result: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
        ips: [{ address: "10.244.1.9/24", interface: 0 }],
      },
    }),
    id,
    0,
  );
