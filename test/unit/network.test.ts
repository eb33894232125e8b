import { describe, expect, it } from "vitest";
import { parseIpAddressJson, parseProcIpv6Route, parseProcRoute } from "../../src/host/network.js";
import { fixture, NODE } from "./fixtures.js";

describe("node network (recorded from the e2e node namespace)", () => {
  it("lists every address with its interface and scope, down interfaces included", () => {
    const addrs = parseIpAddressJson(fixture("host/ip-address.json")).map((a) => `${a.ifname} ${a.ip.text} ${a.scope}`);
    expect(addrs).toEqual(
      expect.arrayContaining(["lo 127.0.0.1 host", "up0 192.0.2.10 global", "up0 192.0.2.11 global", "up0 2001:db8::10 global", "kube-ipvs0 10.96.0.50 global"]),
    );
  });

  it("finds the default-route interfaces per family, ignoring lo's reject route", () => {
    expect(NODE.defaultRouteInterfaces).toEqual({ 4: ["up0"], 6: ["up0"] });
  });

  it("ignores routes that are not default, down or reject", () => {
    const header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";
    expect(parseProcRoute(`${header}eth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\neth2\t000200C0\t0\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n`)).toEqual([]);
    expect(parseProcIpv6Route(`${"0".repeat(32)} 00 ${"0".repeat(32)} 00 ${"0".repeat(32)} ffffffff 00000001 00000000 00200200 eth0\n`)).toEqual([]);
  });
});
