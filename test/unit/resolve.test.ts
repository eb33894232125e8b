import { describe, expect, it } from "vitest";
import { type PortMapping, parseNetConf } from "../../src/core/config.js";
import { parseAnnotation } from "../../src/policy/annotation.js";
import { nodeAddresses, resolveMappings, scopesForFamily } from "../../src/policy/resolve.js";
import { NODE, cniError } from "./fixtures.js";

function setup(conf: Record<string, unknown>, mappings: Array<Record<string, unknown>>, annotation?: string) {
  const parsed = parseNetConf({ cniVersion: "1.0.0", name: "cbr0", ...conf, runtimeConfig: { portMappings: mappings } });
  return { policy: parsed.policy, mappings: parsed.portMappings, annotation: annotation === undefined ? undefined : parseAnnotation(annotation, "k", "p") };
}

function resolve(conf: Record<string, unknown>, mappings: Array<Record<string, unknown>>, annotation?: string) {
  const s = setup(conf, mappings, annotation);
  return resolveMappings(s.mappings, s.policy, s.annotation, NODE, "default/web");
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
    const r = resolve({ defaultHostIP: "192.0.2.10" }, [tcp8080, udp5353, { ...tcp8080, hostPort: 9090 }], "8080=192.0.2.11,8080=2001:db8::10, 192.0.2.10");
    expect(r.map(ips)).toEqual([["192.0.2.11", "2001:db8::10"], ["192.0.2.10"], ["192.0.2.10"]]);
    expect(r.map((x) => x.source)).toEqual(["annotation", "annotation", "annotation"]);
    expect(resolve({ defaultHostIP: "192.0.2.11" }, [udp5353], "8080=192.0.2.10").map(ips)).toEqual([["192.0.2.11"]]);
  });

  it('"any" leaves portmap\'s rules alone', () => {
    expect(resolve({ defaultHostIP: "any" }, [tcp8080])).toEqual([{ mapping: expect.anything(), source: "any", ips: undefined }]);
  });

  it("hostIP 0.0.0.0 or :: keeps the mapping to that family", () => {
    expect(resolve({}, [{ ...tcp8080, hostIP: "0.0.0.0" }]).map(ips)).toEqual([["192.0.2.10", "192.0.2.11", "127.0.0.1"]]);
    expect(resolve({}, [{ ...tcp8080, hostIP: "::" }]).map(ips)).toEqual([["2001:db8::10"]]);
  });

  it.each([
    [{}, "10.96.0.50", "host IP 10.96.0.50 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: it is on excluded interface kube-ipvs0"],
    [{}, "::ffff:10.96.0.50", "it is on excluded interface kube-ipvs0"],
    [{}, "198.51.100.7", "host IP 198.51.100.7 (from annotation) for hostPort 8080/tcp of pod default/web is not allowed: it is not an address of this node"],
    [{}, "224.0.0.1", "it is a multicast address"],
    [{}, "fe80::18ef:c4ff:fe1e:907d", "it is a link-local address"],
    [{ allowedHostCIDRs: ["192.0.2.0/28"] }, "192.0.2.100", "it is not an address of this node"],
    [{ allowedHostCIDRs: ["192.0.2.10/32"] }, "192.0.2.11", "it is outside allowedHostCIDRs (192.0.2.10/32)"],
  ])("refuses with %j the annotation %s", (conf, annotation, msg) => {
    const e = refusal(conf, [tcp8080], annotation);
    expect(e.code).toBe(100);
    expect(e.message).toContain(msg);
  });

  it("refuses a runtime hostIP or a default the pod may not have", () => {
    expect(refusal({}, [{ ...tcp8080, hostIP: "10.96.0.50" }]).message).toContain("host IP 10.96.0.50 (from runtime)");
    expect(refusal({ defaultHostIP: ["192.0.2.10", "198.51.100.7"] }, [tcp8080]).message).toContain("198.51.100.7 (from defaultHostIP)");
    expect(refusal({ nodeIPs: ["198.51.100.7"] }, [tcp8080]).message).toContain("198.51.100.7 (from node)");
  });

  it('exempts only the loopback that "node" adds from allowedHostCIDRs', () => {
    expect(resolve({ allowedHostCIDRs: ["192.0.2.0/24"], nodeIPs: ["192.0.2.10"] }, [tcp8080]).map(ips)).toEqual([["192.0.2.10", "127.0.0.1"]]);
    expect(refusal({ allowedHostCIDRs: ["192.0.2.0/24"] }, [tcp8080], "127.0.0.1").message).toContain("outside allowedHostCIDRs");
  });

  it('fails with code 104 when "node" finds no address', () => {
    const s = setup({ nodeInterfaces: ["veth78568bde"] }, [tcp8080]);
    expect(() => resolveMappings(s.mappings, s.policy, undefined, NODE, "p")).toThrow(expect.objectContaining({ code: 104 }));
  });
});

describe("scopesForFamily", () => {
  const scopes = (mappings: Array<Record<string, unknown>>, annotation: string, family: 4 | 6) => {
    const s = setup({}, mappings, annotation);
    return scopesForFamily(resolveMappings(s.mappings, s.policy, s.annotation, NODE, "p"), family);
  };

  it("splits IPs per family and lists the runtime-scoped siblings on the same port", () => {
    const mappings: PortMapping[] | Array<Record<string, unknown>> = [tcp8080, { ...tcp8080, containerPort: 81, hostIP: "192.0.2.10" }];
    expect(scopes(mappings, "192.0.2.11,2001:db8::10", 4)).toEqual([
      { protocol: "tcp", hostPort: 8080, ips: [{ family: 4, text: "192.0.2.11" }], foreign: [{ family: 4, text: "192.0.2.10" }] },
    ]);
    expect(scopes(mappings, "192.0.2.11,2001:db8::10", 6)).toEqual([{ protocol: "tcp", hostPort: 8080, ips: [{ family: 6, text: "2001:db8::10" }], foreign: [] }]);
    expect(scopes([tcp8080], "192.0.2.11", 6)).toEqual([{ protocol: "tcp", hostPort: 8080, ips: [], foreign: [] }]);
  });

  it("refuses two mappings that claim the same port and address", () => {
    expect(() => scopes([tcp8080, { ...tcp8080, containerPort: 81 }], "192.0.2.11", 4)).toThrow(expect.objectContaining({ code: 7 }));
    expect(() => scopes([tcp8080, { ...tcp8080, hostIP: "192.0.2.11" }], "192.0.2.11", 4)).toThrow(/more than once/);
  });
});

