import { describe, expect, it } from "vitest";
import { kernelIp, parseIp } from "../../../src/core/ip.js";
import {
  countIpv6Addresses,
  parseDefaultRoutesJson,
  parseDownLinks,
  parseIpAddressJson,
  parseLocalPrefixes,
} from "../../../src/host/network.js";
import { fixture, NODE } from "../fixtures.js";

describe("node network (recorded from the e2e node namespace)", () => {
  it("lists every address with its interface and scope, down interfaces included", () => {
    const addrs = parseIpAddressJson(fixture("host/ip-address.json")).map((a) => `${a.ifname} ${a.ip.text} ${a.scope}`);
    expect(addrs).toEqual(
      expect.arrayContaining([
        "lo 127.0.0.1 host",
        "up0 192.0.2.10 global",
        "up0 192.0.2.11 global",
        "up0 2001:db8::10 global",
        "kube-ipvs0 10.96.0.50 global",
      ]),
    );
  });

  it("takes the addresses as iproute2 prints them: what parseIp makes of them", () => {
    const json = fixture("host/ip-address.json");
    const locals = [...json.matchAll(/"local": ?"([^"]+)"/g)].map((m) => m[1] as string);
    expect(locals.some((l) => l.startsWith("fe80:"))).toBe(true);
    for (const local of [...locals, "::ffff:192.0.2.10"]) expect(kernelIp(local)).toEqual(parseIp(local));
  });

  it("finds the default-route interfaces per family", () => {
    expect(NODE.defaultRouteInterfaces).toEqual({ 4: ["up0"], 6: ["up0"] });
  });

  it("takes every nexthop of a multipath route and of a nexthop group, which /proc/net/route and ipv6_route show with their first only", () => {
    expect(parseDefaultRoutesJson(fixture("host/ip-route-default-ecmp-v4.json"))).toEqual(["u1", "u2"]);
    expect(parseDefaultRoutesJson(fixture("host/ip-route-default-nhgroup-v6.json"))).toEqual(["u1", "u2"]);
  });

  it("takes every default route, whatever its metric (a backup uplink)", () => {
    const recorded =
      '[{"dst":"default","gateway":"192.0.2.1","dev":"u1","metric":100,"flags":[]},{"dst":"default","gateway":"198.51.100.1","dev":"u2","metric":200,"flags":[]}]';
    expect(parseDefaultRoutesJson(recorded)).toEqual(["u1", "u2"]);
  });

  it("ignores unreachable and blackhole default routes (recorded next to a real one)", () => {
    const v4 =
      '[{"dst":"default","gateway":"192.0.2.1","dev":"up0","flags":[]},{"type":"unreachable","dst":"default","metric":5000,"flags":[]}]';
    const v6 =
      '[{"dst":"default","gateway":"2001:db8::1","dev":"up0","metric":1024,"flags":[],"pref":"medium"},{"type":"blackhole","dst":"default","dev":"lo","metric":5000,"flags":[],"pref":"medium"}]';
    expect([parseDefaultRoutesJson(v4), parseDefaultRoutesJson(v6)]).toEqual([["up0"], ["up0"]]);
  });

  it("takes IPv6's default routes of the main table from every table's routes to ::/0 (recorded, with table 100's route moved to up1)", () => {
    // `ip -j -batch -` of "route show default" and "route show table all exact ::/0", with table 100 holding a
    // default route of each family.
    const v6 =
      '[{"dst":"default","gateway":"2001:db8::2","dev":"up1","table":"100","metric":1024,"flags":[],"pref":"medium"},{"dst":"default","gateway":"2001:db8::1","dev":"up0","metric":1024,"flags":[],"pref":"medium"}]';
    expect(parseDefaultRoutesJson(v6)).toEqual(["up0"]);
  });

  it("marks IPv6 privacy and duplicate addresses", () => {
    const link = {
      ifname: "eth0",
      addr_info: [
        { family: "inet6", local: "2001:db8::5", scope: "global", temporary: true, dynamic: true },
        { family: "inet6", local: "2001:db8::6", scope: "global", dadfailed: true, tentative: true },
      ],
    };
    expect(parseIpAddressJson(JSON.stringify([link])).map((a) => [a.ip.text, a.temporary, a.dadFailed])).toEqual([
      ["2001:db8::5", true, false],
      ["2001:db8::6", false, true],
    ]);
  });
});

describe("a node with many local addresses (recorded: 10,000 Service IPs on a down kube-ipvs0)", () => {
  it("counts the kernel's local IPv4 prefixes from /proc/net/fib_triestat", () => {
    expect(parseLocalPrefixes(fixture("host/fib_triestat-ipvs.txt"))).toBe(10007);
    expect(parseLocalPrefixes("Basic info: size of leaf: 48 bytes\n")).toBeUndefined();
  });

  it("counts the node's IPv6 addresses from /proc/net/if_inet6 (recorded), down interfaces' included", () => {
    const recorded = [
      "20010db8000000000000000000000010 03 40 00 82      up0",
      "fe80000000000000f8a493fffe95839c 02 40 20 80      up1",
      "00000000000000000000000000000001 01 80 10 80       lo",
      "fd000010009600000000000000000001 04 80 00 82     kipv",
    ];
    expect(countIpv6Addresses(`${recorded.join("\n")}\n`)).toBe(4);
    expect(countIpv6Addresses("")).toBe(0);
  });

  it("names the interfaces that are down, whose addresses `address show up` leaves out", () => {
    expect(parseDownLinks(fixture("host/ip-link-ipvs.json"))).toEqual(["kipvs1", "kube-ipvs0"]);
  });
});
