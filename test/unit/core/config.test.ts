import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { podBackends } from "../../../src/backends/registry.js";
import { planPodChains } from "../../../src/backends/scope-pod.js";
import { parseEnvelope, parseLogFile, parseNetConf } from "../../../src/core/config.js";
import { Code } from "../../../src/core/errors.js";
import { rejects } from "../arbitraries.js";
import { cniError, codeOf, containerdFixtures as fixtures, stdinOf } from "../fixtures.js";

const base = { cniVersion: "1.0.0", name: "cbr0", type: "portmap-hostip" };

describe("network configuration", () => {
  it("applies defaults: node policy, kube-ipvs0 excluded, default annotation key", () => {
    const conf = parseNetConf({ ...base, unknownKey: { ignored: true } });
    expect(conf.policy).toEqual({
      defaultHostIp: { kind: "node" },
      nodeIps: undefined,
      nodeInterfaces: undefined,
      excludeInterfaces: ["kube-ipvs0"],
      allowedHostCidrs: undefined,
      annotation: "portmap-hostip/host-ip",
    });
    expect(conf.portMappings).toEqual([]);
    expect(conf.annotationValue).toBeUndefined();
  });

  it("reads every key", () => {
    const conf = parseNetConf({
      ...base,
      defaultHostIP: ["192.0.2.10", "2001:db8::10"],
      nodeIPs: ["192.0.2.10"],
      kubeNodeIPs: ["192.0.2.11", "2001:db8::11"],
      nodeInterfaces: ["eth0"],
      excludeInterfaces: [],
      allowedHostCIDRs: ["192.0.2.0/24", "2001:db8::/64"],
      annotation: "example.com/ip",
      runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "example.com/ip": "192.0.2.10", other: "x" } },
    });
    expect(conf.policy.defaultHostIp).toEqual({
      kind: "ips",
      ips: [
        { family: 4, text: "192.0.2.10" },
        { family: 6, text: "2001:db8::10" },
      ],
    });
    expect(conf.policy.allowedHostCidrs?.map((c) => c.text)).toEqual(["192.0.2.0/24", "2001:db8::/64"]);
    expect(conf.policy.excludeInterfaces).toEqual([]);
    expect(conf.policy.kubeNodeIps).toEqual([
      { family: 4, text: "192.0.2.11" },
      { family: 6, text: "2001:db8::11" },
    ]);
    expect(conf.annotationValue).toBe("192.0.2.10");
    expect(parseNetConf({ ...base, defaultHostIP: "any" }).policy.defaultHostIp).toEqual({ kind: "any" });
    expect(parseNetConf({ ...base, defaultHostIP: "192.0.2.10" }).policy.defaultHostIp).toEqual({
      kind: "ips",
      ips: [{ family: 4, text: "192.0.2.10" }],
    });
  });

  it("matches portMappings keys case-insensitively (containerd sends HostPort, HostIP)", () => {
    const conf = parseNetConf({
      ...base,
      runtimeConfig: {
        portMappings: [
          { HostPort: 8080, ContainerPort: 80, Protocol: "TCP", HostIP: "" },
          { hostPort: 5353, containerPort: 53, protocol: "udp", hostIP: "0.0.0.0" },
          { hostPort: 8443, containerPort: 443 },
        ],
      },
    });
    expect(conf.portMappings).toEqual([
      { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIp: undefined },
      { hostPort: 5353, containerPort: 53, protocol: "udp", hostIp: { family: 4, text: "0.0.0.0" } },
      { hostPort: 8443, containerPort: 443, protocol: "tcp", hostIp: undefined },
    ]);
  });

  it.each([
    [{ defaultHostIP: 5 }, 'defaultHostIP = 5: expected "node", "any"'],
    [{ defaultHostIP: "nodes" }, 'defaultHostIP = "nodes"'],
    [{ defaultHostIP: [] }, "defaultHostIP = []"],
    [{ nodeIPs: ["192.0.2.300"] }, 'nodeIPs[0] = "192.0.2.300": not an IP address'],
    [{ kubeNodeIPs: ["192.0.2.10", "node-1"] }, 'kubeNodeIPs[1] = "node-1": not an IP address'],
    [{ nodeInterfaces: ["eth0", "bad/name"] }, 'nodeInterfaces[1] = "bad/name": not an interface name'],
    [{ excludeInterfaces: "kube-ipvs0" }, 'excludeInterfaces = "kube-ipvs0"'],
    [{ allowedHostCIDRs: ["192.0.2.0"] }, 'allowedHostCIDRs[0] = "192.0.2.0": not a CIDR'],
    [{ annotation: "bad key!" }, 'annotation = "bad key!": not a Kubernetes annotation key'],
    [
      { runtimeConfig: { portMappings: [{ HostPort: 0, ContainerPort: 80 }] } },
      "runtimeConfig.portMappings[0].HostPort = 0",
    ],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 65536, containerPort: 80 }] } },
      "runtimeConfig.portMappings[0].hostPort = 65536",
    ],
    [{ runtimeConfig: { portMappings: [{ hostPort: -1, containerPort: 80 }] } }, "hostPort = -1"],
    [{ runtimeConfig: { portMappings: [{ hostPort: "80", containerPort: 80 }] } }, 'hostPort = "80"'],
    [{ runtimeConfig: { portMappings: [{ hostPort: 80 }] } }, "containerPort = missing"],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: "icmp" }] } },
      'protocol = "icmp": expected tcp, udp or sctp',
    ],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, hostIP: "1.2.3.4 -j ACCEPT" }] } },
      'hostIP = "1.2.3.4 -j ACCEPT"',
    ],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, hostIP: "0.0.0.0/0" }] } },
      'hostIP = "0.0.0.0/0"',
    ],
    [{ runtimeConfig: { portMappings: {} } }, "runtimeConfig.portMappings"],
    [
      { runtimeConfig: { "io.kubernetes.cri.pod-annotations": { a: 1 } } },
      "runtimeConfig.io.kubernetes.cri.pod-annotations.a = 1",
    ],
    [{ prevResult: { ips: [{ address: 5 }] } }, "prevResult.ips[0].address = 5"],
    [{ name: undefined }, "name = missing"],
    [{ logFile: 5 }, "logFile = 5"],
  ])("rejects %j with code 7 naming the field and value", (change, text) => {
    const e = cniError(() => parseNetConf({ ...base, ...change }));
    expect(e.code).toBe(7);
    expect(e.message).toContain(text);
  });

  it.each([["0.2.0"], ["2.0.0"], [""]])("rejects cniVersion %j with code 1", (cniVersion) => {
    expect(cniError(() => parseNetConf({ ...base, cniVersion })).code).toBe(1);
    expect(cniError(() => parseEnvelope({ ...base, cniVersion })).code).toBe(1);
  });

  it("checks only the envelope for DEL, so DEL never sticks on a policy key", () => {
    expect(parseEnvelope({ ...base, defaultHostIP: 5 })).toEqual({ cniVersion: "1.0.0", name: "cbr0" });
  });

  it("reads logFile apart from the rest, as an absolute path of a file", () => {
    expect(parseLogFile(base)).toBeUndefined();
    expect(parseLogFile({ ...base, logFile: "/var/log/portmap-hostip.log", defaultHostIP: 5 })).toBe(
      "/var/log/portmap-hostip.log",
    );
    for (const logFile of ["portmap-hostip.log", "./x.log", "/var/log/", "", "/var/log/a\0b"]) {
      const e = cniError(() => parseLogFile({ ...base, logFile }));
      expect(e.code).toBe(7);
      expect(e.message).toContain(`logFile = ${JSON.stringify(logFile)}: expected an absolute path of a file`);
    }
  });
});

// Hostile input: configurations of the wrong shape, too deep, or with keys that name Object.prototype members.
describe("a configuration of the wrong shape", () => {
  it.each([
    ["an array", []],
    ["a string", "ADD"],
    ["null", null],
    ["a number", 42],
  ])("a configuration that is %s → 7", (_what, json) => {
    expect(codeOf(() => parseNetConf(json))).toBe(Code.InvalidConfig);
  });

  it("a configuration nested 10,000 deep where a string belongs → 7 (not a stack overflow)", () => {
    const deep = JSON.parse("[".repeat(10_000) + "]".repeat(10_000)) as unknown;
    expect(codeOf(() => parseNetConf(deep))).toBe(Code.InvalidConfig);
    expect(codeOf(() => parseNetConf({ cniVersion: deep, name: "cbr0" }))).toBe(Code.InvalidConfig);
  });
});

describe("keys that name Object.prototype members", () => {
  it.each(["constructor", "toString", "valueOf", "hasOwnProperty"])(
    'annotation key "%s" that the pod does not set: no annotation (the node default applies), not a crash',
    async (annotation) => {
      const conf = parseNetConf({
        cniVersion: "1.0.0",
        name: "cbr0",
        annotation,
        defaultHostIP: "any",
        prevResult: { ips: [{ address: "10.244.1.5/24" }] },
        runtimeConfig: {
          portMappings: [{ hostPort: 8080, containerPort: 80 }],
          "io.kubernetes.cri.pod-annotations": {},
        },
      });
      expect(conf.annotationValue).toBeUndefined();
      // defaultHostIP "any" and no annotation: nothing to do, no iptables needed.
      await expect(
        planPodChains(
          conf,
          { command: "ADD", containerId: "abc123", netns: "/x", ifname: "eth0", args: new Map() },
          podBackends,
        ),
      ).resolves.toMatchObject({ plans: [], notes: [] });
    },
  );

  it("a portMapping whose keys are __proto__ or constructor gets no port from them (→ 7)", () => {
    const conf = (mapping: string) =>
      JSON.parse(`{"cniVersion":"1.0.0","name":"cbr0","runtimeConfig":{"portMappings":[${mapping}]}}`) as unknown;
    expect(codeOf(() => parseNetConf(conf('{"__proto__":{"hostPort":80},"containerPort":80}')))).toBe(
      Code.InvalidConfig,
    );
    expect(codeOf(() => parseNetConf(conf('{"constructor":80,"containerPort":80}')))).toBe(Code.InvalidConfig);
  });
});

describe("ports and protocols (property)", () => {
  it("accepts exactly the ports 1–65535 as integers, in either key spelling; everything else is code 7", () => {
    const conf = (key: string, value: unknown) => ({
      cniVersion: "1.0.0",
      name: "cbr0",
      runtimeConfig: { portMappings: [{ [key]: value, containerPort: 80, protocol: "tcp" }] },
    });
    fc.assert(
      fc.property(
        fc.constantFrom("hostPort", "HostPort", "HOSTPORT"),
        fc.oneof(
          fc.integer({ min: -100_000, max: 100_000 }),
          fc.double(),
          fc.string({ maxLength: 6 }),
          fc.constantFrom(null, true, [], {}, "80", 8080.5),
        ),
        (key, value) => {
          const valid = typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= 65535;
          if (valid) expect(parseNetConf(conf(key, value)).portMappings[0]!.hostPort).toBe(value);
          else expect(rejects(() => parseNetConf(conf(key, value)), 7)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("accepts exactly tcp, udp and sctp (any case) as protocols; everything else is code 7", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 8 }),
          fc.constantFrom("tcp", "UDP", "Sctp", "icmp", "all", "tcp ", " udp", "tcp\n"),
        ),
        (protocol) => {
          const conf = {
            cniVersion: "1.0.0",
            name: "cbr0",
            runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol }] },
          };
          const valid = protocol === "" || ["tcp", "udp", "sctp"].includes(protocol.toLowerCase());
          if (valid)
            expect(parseNetConf(conf).portMappings[0]!.protocol).toBe(protocol === "" ? "tcp" : protocol.toLowerCase());
          else expect(rejects(() => parseNetConf(conf), 7)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("what containerd sends, replayed", () => {
  describe.each(fixtures.map((f) => [f.shape, f] as const))("%s", (_shape, f) => {
    const add = f.calls.find((c) => c.command === "ADD")!;

    it("parses the ADD: the CRI port mappings (capitalised keys, lowercase protocol) and the annotation", () => {
      const conf = parseNetConf(stdinOf(add));
      expect(
        conf.portMappings.map((m) => ({
          hostPort: m.hostPort,
          containerPort: m.containerPort,
          protocol: m.protocol,
          hostIp: m.hostIp?.text ?? "",
        })),
      ).toEqual(
        f.request.portMappings.map((m) => ({
          hostPort: m.hostPort,
          containerPort: m.containerPort,
          protocol: (m.protocol ?? "TCP").toLowerCase(),
          hostIp: m.hostIp ?? "",
        })),
      );
      expect(conf.annotationValue).toBe(f.request.annotations["portmap-hostip/host-ip"]);
      expect(conf.prevResult?.ips?.length).toBe(1);
    });
  });

  it("containerd sends null for a capability it has no value for (a pod without annotations)", () => {
    const plain = fixtures.find((f) => f.shape === "plain")!.calls[0]!;
    expect((plain.stdin as { runtimeConfig: Record<string, unknown> }).runtimeConfig).toEqual({
      "io.kubernetes.cri.pod-annotations": null,
    });
    const conf = parseNetConf(stdinOf(plain));
    expect(conf.annotationValue).toBeUndefined();
    expect(conf.portMappings).toEqual([]);
    const node = fixtures.find((f) => f.shape === "node")!.calls[0]!;
    expect(
      parseNetConf({
        ...(node.stdin as object),
        runtimeConfig: { portMappings: null, "io.kubernetes.cri.pod-annotations": null },
      }).portMappings,
    ).toEqual([]);
  });
});
