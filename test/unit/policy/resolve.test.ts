import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type PortMapping, parseNetConf } from "../../../src/core/config.js";
import { type Family, type Ip, parseIp } from "../../../src/core/ip.js";
import type { NodeNetwork } from "../../../src/core/node.js";
import { parseAnnotation } from "../../../src/policy/annotation.js";
import {
  type FamilyScope,
  judgedIps,
  nodeAddresses,
  resolutionNotes,
  resolveMappings,
  scopesForFamily,
  shadowedScopes,
} from "../../../src/policy/resolve.js";
import { anyIp, RUNS, rejects } from "../arbitraries.js";
import { BOTH, cniError, NODE } from "../fixtures.js";

function setup(conf: Record<string, unknown>, mappings: Array<Record<string, unknown>>, annotation?: string) {
  const parsed = parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    ...conf,
    runtimeConfig: { portMappings: mappings },
  });
  return {
    policy: parsed.policy,
    mappings: parsed.portMappings,
    annotation: annotation === undefined ? undefined : parseAnnotation(annotation, "k", "p"),
  };
}

function resolve(
  conf: Record<string, unknown>,
  mappings: Array<Record<string, unknown>>,
  annotation?: string,
  network: NodeNetwork = NODE,
  families = BOTH,
) {
  const s = setup(conf, mappings, annotation);
  return resolveMappings(s.mappings, s.policy, s.annotation, network, "default/web", families);
}

const ips = (r: { ips?: Array<{ text: string }> | undefined }) => r.ips?.map((ip) => ip.text);
const tcp8080 = { hostPort: 8080, containerPort: 80, protocol: "tcp" };
const udp5353 = { hostPort: 5353, containerPort: 53, protocol: "udp" };

const refusal = (conf: Record<string, unknown>, mappings: Array<Record<string, unknown>>, annotation?: string) =>
  cniError(() => resolve(conf, mappings, annotation));

describe("host IP policy", () => {
  it('"node" gives the default-route interface\'s global addresses plus 127.0.0.1', () => {
    expect(resolve({}, [tcp8080]).map(ips)).toEqual([["192.0.2.10", "192.0.2.11", "2001:db8::10", "127.0.0.1"]]);
  });

  it("nodeIPs, then nodeInterfaces, choose the node's addresses", () => {
    const { policy } = setup({ nodeIPs: ["192.0.2.11"] }, []);
    expect(nodeAddresses(policy, NODE).map((ip) => ip.text)).toEqual(["192.0.2.11"]);
    const byIface = setup({ nodeInterfaces: ["cni0"] }, []).policy;
    expect(nodeAddresses(byIface, NODE).map((ip) => ip.text)).toEqual(["10.244.1.1", "2001:db8:244:1::1"]);
  });

  it("the runtime's specific hostIP wins and is left as portmap wrote it", () => {
    const [r] = resolve({}, [{ ...tcp8080, hostIP: "192.0.2.10" }], "192.0.2.11");
    expect(r).toMatchObject({ source: "runtime", ips: undefined });
  });

  it("a port-specific annotation entry beats plain entries, which beat the default", () => {
    const r = resolve(
      { defaultHostIP: "192.0.2.10" },
      [tcp8080, udp5353, { ...tcp8080, hostPort: 9090 }],
      "8080=192.0.2.11,8080=2001:db8::10, 192.0.2.10",
    );
    expect(r.map(ips)).toEqual([["192.0.2.11", "2001:db8::10"], ["192.0.2.10"], ["192.0.2.10"]]);
    expect(r.map((x) => x.source)).toEqual(["annotation", "annotation", "annotation"]);
    expect(resolve({ defaultHostIP: "192.0.2.11" }, [udp5353], "8080=192.0.2.10").map(ips)).toEqual([["192.0.2.11"]]);
  });

  it('"any" leaves portmap\'s rules alone', () => {
    expect(resolve({ defaultHostIP: "any" }, [tcp8080])).toEqual([
      { mapping: expect.anything(), source: "any", ips: undefined, leftOut: [], closed: false },
    ]);
  });

  it("hostIP 0.0.0.0 or :: keeps the mapping to that family", () => {
    expect(resolve({}, [{ ...tcp8080, hostIP: "0.0.0.0" }]).map(ips)).toEqual([
      ["192.0.2.10", "192.0.2.11", "127.0.0.1"],
    ]);
    expect(resolve({}, [{ ...tcp8080, hostIP: "::" }]).map(ips)).toEqual([["2001:db8::10"]]);
  });

  it.each([
    [
      {},
      "10.96.0.50",
      "host IP 10.96.0.50 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: it is on excluded interface kube-ipvs0",
    ],
    [{}, "::ffff:10.96.0.50", "it is on excluded interface kube-ipvs0"],
    [
      {},
      "198.51.100.7",
      "host IP 198.51.100.7 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: it is not an address of this node",
    ],
    [{}, "224.0.0.1", "it is a multicast address"],
    [{}, "fe80::18ef:c4ff:fe1e:907d", "it is a link-local address"],
    [{ allowedHostCIDRs: ["192.0.2.0/28"] }, "192.0.2.100", "it is not an address of this node"],
    [{ allowedHostCIDRs: ["192.0.2.10/32"] }, "192.0.2.11", "it is outside allowedHostCIDRs (192.0.2.10/32)"],
  ])("refuses with %j the annotation %s", (conf, annotation, msg) => {
    const e = refusal(conf, [tcp8080], annotation);
    expect(e.code).toBe(100);
    expect(e.message).toContain(msg);
  });

  it("refuses a runtime hostIP the pod may not have", () => {
    expect(refusal({}, [{ ...tcp8080, hostIP: "10.96.0.50" }]).message).toContain("host IP 10.96.0.50 (from runtime)");
  });

  // Issue 11 changed these two from code 100: the default never fails a pod.
  it("leaves out, with a note, the default's addresses that fail the policy", () => {
    const [list] = resolve({ defaultHostIP: ["192.0.2.10", "198.51.100.7"] }, [tcp8080]);
    expect([ips(list!), list!.closed]).toEqual([["192.0.2.10"], false]);
    expect(resolutionNotes([list!], "default/web")).toEqual([
      "pod default/web: defaultHostIP leaves out 198.51.100.7: it is not an address of this node",
    ]);
    const [node] = resolve({ nodeIPs: ["198.51.100.7"] }, [tcp8080]);
    expect([ips(node!), node!.closed]).toEqual([["127.0.0.1"], true]);
    expect(resolutionNotes([node!], "default/web")).toEqual([
      'pod default/web: defaultHostIP "node" leaves out 198.51.100.7: it is not an address of this node',
      'warning: pod default/web: hostPort 8080/tcp: defaultHostIP "node" left no address of this node: it answers only on 127.0.0.1 until the policy allows one',
    ]);
  });

  it('exempts only the loopback that "node" adds from allowedHostCIDRs', () => {
    expect(resolve({ allowedHostCIDRs: ["192.0.2.0/24"], nodeIPs: ["192.0.2.10"] }, [tcp8080]).map(ips)).toEqual([
      ["192.0.2.10", "127.0.0.1"],
    ]);
    expect(refusal({ allowedHostCIDRs: ["192.0.2.0/24"] }, [tcp8080], "127.0.0.1").message).toContain(
      "outside allowedHostCIDRs",
    );
  });

  // Issue 11 replaced code 104: a pod whose default finds nothing starts closed, with a warning.
  it('starts closed when "node" finds no address: 127.0.0.1 in IPv4, nothing in IPv6', () => {
    const [r] = resolve({ nodeInterfaces: ["veth78568bde"] }, [tcp8080]);
    expect([ips(r!), r!.closed, r!.leftOut]).toEqual([["127.0.0.1"], true, []]);
    const [v6] = resolve({ nodeInterfaces: ["veth78568bde"] }, [tcp8080], undefined, NODE, new Set([6]));
    expect([ips(v6!), v6!.closed]).toEqual([[], true]);
    expect(resolutionNotes([v6!], "p")).toEqual([
      'warning: pod p: hostPort 8080/tcp: defaultHostIP "node" left no address of this node: it answers on no address until the policy allows one',
    ]);
  });

  it("judges only the families the pod gets rules for", () => {
    // An IPv4-only pod, IPv4-only allowedHostCIDRs, a global IPv6 address on the default route.
    const [r] = resolve({ allowedHostCIDRs: ["192.0.2.0/24"] }, [tcp8080], undefined, NODE, new Set([4]));
    expect([ips(r!), r!.leftOut, r!.closed]).toEqual([["192.0.2.10", "192.0.2.11", "127.0.0.1"], [], false]);
    // Not judged either: an annotated or runtime address of a family the pod has no address in.
    expect(resolve({}, [tcp8080], "192.0.2.10,2001:db8::99", NODE, new Set([4])).map(ips)).toEqual([["192.0.2.10"]]);
    expect(resolve({}, [{ ...tcp8080, hostIP: "2001:db8::99" }], undefined, NODE, new Set([4])).map(ips)).toEqual([
      undefined,
    ]);
    expect(refusal({}, [tcp8080], "192.0.2.10,2001:db8::99").message).toContain(
      "host IP 2001:db8::99 (from annotation)",
    );
  });

  it("leaves out a node address that is also on kube-ipvs0 (a Service IP equal to it)", () => {
    const shared: NodeNetwork = {
      ...NODE,
      addresses: [
        ...NODE.addresses,
        ...NODE.addresses.filter((a) => a.ip.text === "192.0.2.11").map((a) => ({ ...a, ifname: "kube-ipvs0" })),
      ],
    };
    const [r] = resolve({}, [tcp8080], undefined, shared);
    expect(ips(r!)).toEqual(["192.0.2.10", "2001:db8::10", "127.0.0.1"]);
    expect(r!.leftOut).toEqual([
      { ip: { family: 4, text: "192.0.2.11" }, why: "it is on excluded interface kube-ipvs0" },
    ]);
    expect(cniError(() => resolve({}, [tcp8080], "192.0.2.11", shared)).code).toBe(100);
  });

  it("takes every interface of a multipath default route, leaves out privacy and duplicate IPv6 addresses", () => {
    const address = (ifname: string, text: string, more = {}) => ({
      ifname,
      ip: { family: text.includes(":") ? 6 : 4, text } as const,
      scope: "global",
      temporary: false,
      dadFailed: false,
      ...more,
    });
    const ecmp: NodeNetwork = {
      addresses: [
        address("lo", "127.0.0.1"),
        address("u1", "192.0.2.10"),
        address("u2", "198.51.100.10"),
        address("u1", "2001:db8::5", { temporary: true }),
        address("u2", "2001:db8:1::6", { dadFailed: true }),
        address("u2", "2001:db8:1::10"),
      ],
      defaultRouteInterfaces: { 4: ["u1", "u2"], 6: ["u1", "u2"] },
    };
    const [r] = resolve({}, [tcp8080], undefined, ecmp);
    expect(ips(r!)).toEqual(["192.0.2.10", "198.51.100.10", "2001:db8:1::10", "127.0.0.1"]);
    expect(r!.leftOut.map((l) => [l.ip.text, l.why])).toEqual([
      ["2001:db8:1::6", "it failed duplicate address detection: the kernel does not use it"],
    ]);
  });

  it("kubeNodeIPs add to the default-route addresses; nodeIPs replace both", () => {
    expect(
      nodeAddresses(setup({ kubeNodeIPs: ["10.244.1.1", "192.0.2.10"] }, []).policy, NODE).map((ip) => ip.text),
    ).toEqual(["192.0.2.10", "192.0.2.11", "2001:db8::10", "10.244.1.1"]);
    expect(
      nodeAddresses(setup({ kubeNodeIPs: ["10.244.1.1"], nodeInterfaces: ["cni0"] }, []).policy, NODE).map(
        (ip) => ip.text,
      ),
    ).toEqual(["10.244.1.1", "2001:db8:244:1::1"]);
    expect(
      nodeAddresses(setup({ kubeNodeIPs: ["10.244.1.1"], nodeIPs: ["192.0.2.11"] }, []).policy, NODE).map(
        (ip) => ip.text,
      ),
    ).toEqual(["192.0.2.11"]);
  });
});

describe("scopesForFamily", () => {
  const scopes = (mappings: Array<Record<string, unknown>>, annotation: string | undefined, family: 4 | 6) => {
    const s = setup({}, mappings, annotation);
    return scopesForFamily(resolveMappings(s.mappings, s.policy, s.annotation, NODE, "p", BOTH), family);
  };
  const brief = (list: FamilyScope[]) =>
    list.map((s) => [s.hostPort, s.containerPort, s.ips?.map((ip) => ip.text), s.hostIp?.text]);

  // Until issue 11 the runtime-scoped sibling was left out here (as "foreign"): every mapping is now listed,
  // in portmap's order, so that the rewrite keeps that order.
  it("lists every mapping of the family in portmap's order, the runtime-scoped ones as portmap wrote them", () => {
    const mappings = [tcp8080, { ...tcp8080, containerPort: 81, hostIP: "192.0.2.10" }];
    expect(brief(scopes(mappings, "192.0.2.11,2001:db8::10", 4))).toEqual([
      [8080, 80, ["192.0.2.11"], undefined],
      [8080, 81, undefined, "192.0.2.10"],
    ]);
    expect(brief(scopes(mappings, "192.0.2.11,2001:db8::10", 6))).toEqual([[8080, 80, ["2001:db8::10"], undefined]]);
    expect(brief(scopes([tcp8080], "192.0.2.11", 6))).toEqual([[8080, 80, [], undefined]]);
  });

  it("refuses two mappings with the same protocol, port and hostIP (code 7)", () => {
    expect(() => scopes([tcp8080, { ...tcp8080, containerPort: 81 }], "192.0.2.11", 4)).toThrow(
      expect.objectContaining({ code: 7 }),
    );
    expect(() =>
      scopes(
        [
          { ...tcp8080, hostIP: "192.0.2.10" },
          { ...tcp8080, containerPort: 81, hostIP: "192.0.2.10" },
        ],
        undefined,
        4,
      ),
    ).toThrow(/more than once/);
  });

  // Until issue 11 these were refused with code 7: Kubernetes accepts them (its key is protocol, hostIP and port).
  it("keeps the same port with a specific hostIP and none, 0.0.0.0 and none, none and an IPv6 hostIP, in order", () => {
    expect(
      brief(
        scopes(
          [
            { ...tcp8080, hostIP: "192.0.2.10" },
            { ...tcp8080, containerPort: 81 },
          ],
          undefined,
          4,
        ),
      ),
    ).toEqual([
      [8080, 80, undefined, "192.0.2.10"],
      [8080, 81, ["192.0.2.10", "192.0.2.11", "127.0.0.1"], undefined],
    ]);
    expect(
      brief(
        scopes(
          [
            { ...tcp8080, hostIP: "0.0.0.0" },
            { ...tcp8080, containerPort: 81 },
          ],
          undefined,
          4,
        ),
      ).map((s) => s[1]),
    ).toEqual([80, 81]);
    expect(
      brief(
        scopes(
          [
            { ...tcp8080, hostIP: "0.0.0.0" },
            { ...tcp8080, containerPort: 81 },
          ],
          undefined,
          6,
        ),
      ).map((s) => s[1]),
    ).toEqual([81]);
    expect(brief(scopes([tcp8080, { ...tcp8080, containerPort: 81, hostIP: "2001:db8::10" }], undefined, 6))).toEqual([
      [8080, 80, ["2001:db8::10"], undefined],
      [8080, 81, undefined, "2001:db8::10"],
    ]);
  });
});

describe("shadowedScopes: first match wins", () => {
  const shadowed = (mappings: Array<Record<string, unknown>>, family: 4 | 6 = 4) => {
    const s = setup({}, mappings);
    const list = scopesForFamily(resolveMappings(s.mappings, s.policy, undefined, NODE, "p", BOTH), family);
    return shadowedScopes(list).map((x) => [x.scope.containerPort, x.by.containerPort]);
  };

  it("names a mapping whose every address an earlier one on its port takes", () => {
    expect(shadowed([tcp8080, { ...tcp8080, containerPort: 81, hostIP: "192.0.2.10" }])).toEqual([[81, 80]]);
    expect(shadowed([tcp8080, { ...tcp8080, containerPort: 81, hostIP: "2001:db8::10" }], 6)).toEqual([[81, 80]]);
    expect(shadowed([{ ...tcp8080, hostIP: "0.0.0.0", containerPort: 79 }, tcp8080], 4)).toEqual([[80, 79]]);
  });

  it("not one that keeps an address of its own, nor mappings of other ports", () => {
    expect(
      shadowed([
        { ...tcp8080, hostIP: "192.0.2.10" },
        { ...tcp8080, containerPort: 81 },
      ]),
    ).toEqual([]);
    expect(
      shadowed(
        [
          { ...tcp8080, hostIP: "0.0.0.0" },
          { ...tcp8080, containerPort: 81 },
        ],
        6,
      ),
    ).toEqual([]);
    expect(shadowed([tcp8080, { ...tcp8080, hostPort: 8081 }, udp5353])).toEqual([]);
  });
});

describe("judgedIps: what a node with many local addresses lists of its down interfaces", () => {
  // NODE plus a down kube-ipvs0 holding a node address, and a down spare NIC holding an address of its own.
  const DOWN = ["kube-ipvs0", "spare0"];
  const extra = (ifname: string, text: string) => ({
    ifname,
    ip: { family: 4 as const, text },
    scope: "global",
    temporary: false,
    dadFailed: false,
  });
  const full: NodeNetwork = {
    ...NODE,
    addresses: [...NODE.addresses, extra("kube-ipvs0", "192.0.2.11"), extra("spare0", "198.51.100.7")],
  };
  const up: NodeNetwork = { ...full, addresses: full.addresses.filter((a) => !DOWN.includes(a.ifname)) };

  it.each([
    [{ defaultHostIP: "node" }, [tcp8080, udp5353], undefined],
    [{ defaultHostIP: ["192.0.2.10", "192.0.2.11", "198.51.100.7"] }, [tcp8080], undefined],
    [{ defaultHostIP: "node", kubeNodeIPs: ["198.51.100.7"] }, [tcp8080], undefined],
    [{ defaultHostIP: "any" }, [tcp8080], "198.51.100.7"],
    [{ defaultHostIP: "any" }, [tcp8080], "192.0.2.11"],
    [{ defaultHostIP: "node" }, [{ ...tcp8080, hostIP: "198.51.100.7" }], undefined],
    [{ defaultHostIP: "node", nodeIPs: ["192.0.2.11"] }, [tcp8080], undefined],
  ])("%j %j annotated %j: the same as with every address listed", (conf, mappings, annotation) => {
    const s = setup(conf, mappings, annotation);
    const judged = new Set(judgedIps(s.mappings, s.policy, s.annotation, up).map((ip) => ip.text));
    const listed: NodeNetwork = {
      ...up,
      addresses: [...up.addresses, ...full.addresses.filter((a) => DOWN.includes(a.ifname) && judged.has(a.ip.text))],
    };
    const outcome = (network: NodeNetwork) => {
      try {
        return resolveMappings(s.mappings, s.policy, s.annotation, network, "default/web", BOTH);
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(outcome(listed)).toEqual(outcome(full));
  });
});

// ---- host IPs from the runtime and the pod (property) ----

describe("host IP resolution (property)", () => {
  const policy = parseNetConf({ cniVersion: "1.0.0", name: "cbr0" }).policy;
  const mapping: PortMapping = { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIp: undefined };
  const nodeIps = new Set(NODE.addresses.map((a) => a.ip.text));

  it("refuses (code 100) every annotated address that is not an allowed address of this node", () => {
    fc.assert(
      fc.property(anyIp, (ip) => {
        const parsed = parseIp(ip.text)!;
        fc.pre(!nodeIps.has(parsed.text));
        const annotation = { all: [parsed], byPort: new Map<string, Ip[]>() };
        expect(rejects(() => resolveMappings([mapping], policy, annotation, NODE, "default/web", BOTH), 100)).toBe(
          true,
        );
      }),
      RUNS,
    );
  });
});

/** One tcp 8080 mapping (with `hostIP`) of a pod with addresses in `families`, resolved on the e2e node. */
function resolveFor(conf: Record<string, unknown>, annotation: string | undefined, families: Family[], hostIP = "") {
  const parsed = parseNetConf({
    cniVersion: "1.0.0",
    name: "cbr0",
    ...conf,
    runtimeConfig: { portMappings: [{ ...tcp8080, hostIP }] },
  });
  const a = annotation === undefined ? undefined : parseAnnotation(annotation, "k", "default/web");
  return resolveMappings(parsed.portMappings, parsed.policy, a, NODE, "default/web", new Set(families));
}

describe("an annotation of a family the pod lacks", () => {
  it("is refused with code 100, naming the address and the pod's families", () => {
    const err = cniError(() => resolveFor({}, "fe80::1", [4]));
    expect(err.code).toBe(100);
    expect(err.message).toBe(
      "host IP fe80::1 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: no address of the pod's families (IPv4): the hostPort would answer on none",
    );
    expect(cniError(() => resolveFor({}, "2001:db8::10,2001:db8::11", [4])).message).toContain(
      "host IPs 2001:db8::10, 2001:db8::11 (from annotation) for hostPort 8080/tcp of pod default/web are not allowed",
    );
    expect(cniError(() => resolveFor({}, "192.0.2.10", [6])).message).toContain("(IPv6)");
  });

  it("is accepted when one of its addresses is of a family the pod has", () => {
    const [r] = resolveFor({}, "192.0.2.10,2001:db8::99", [4]);
    expect(r?.ips?.map((ip) => ip.text)).toEqual(["192.0.2.10"]);
  });

  it("is not judged for a mapping the pod gets no rules for at all (hostIP 0.0.0.0 on an IPv6-only pod)", () => {
    const [r] = resolveFor({}, "2001:db8::10", [6], "0.0.0.0");
    expect(r?.ips).toEqual([]);
  });
});

describe("the policy's own default of a family the pod lacks", () => {
  it("starts the pod closed, never failing it", () => {
    const [r] = resolveFor({ defaultHostIP: ["2001:db8::10"] }, undefined, [4]);
    expect([r?.ips, r?.closed]).toEqual([[], true]);
  });
});
