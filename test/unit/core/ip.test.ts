import fc from "fast-check";
import { Address4 } from "ip-address";
import { describe, expect, it } from "vitest";
import { cidrContains, hostCidr, networkOf, notUnicastReason, parseCidr, parseIp } from "../../../src/core/ip.js";

describe("parseIp", () => {
  it.each([
    ["192.0.2.10", 4, "192.0.2.10"],
    ["2001:DB8:0:0:0:0:0:10", 6, "2001:db8::10"],
    ["2001:db8:0:1:0:0:0:1", 6, "2001:db8:0:1::1"],
    ["::ffff:10.96.0.50", 4, "10.96.0.50"],
    ["::ffff:a60:32", 4, "10.96.0.50"],
  ])("%s → IPv%s %s", (text, family, canonical) => {
    expect(parseIp(text)).toEqual({ family, text: canonical });
  });

  it.each([
    "",
    "0.0.0.0/0",
    "192.0.2.10/32",
    "1.2.3.4 -j ACCEPT",
    "fe80::1%eth0",
    "01.2.3.4",
    "1.2.3",
    "$(reboot)",
    "192.0.2.10\n",
  ])("rejects %j", (text) => {
    expect(parseIp(text)).toBeUndefined();
  });
});

describe("CIDRs and classes", () => {
  it("decides IPv4 containment (plain arithmetic) as ip-address does", () => {
    const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."));
    fc.assert(
      fc.property(v4, fc.nat(32), v4, (base, bits, ip) => {
        const cidr = parseCidr(`${base}/${bits}`)!;
        expect(cidrContains(cidr, parseIp(ip)!)).toBe(new Address4(ip).isInSubnet(new Address4(`${base}/${bits}`)));
      }),
      { numRuns: 2000 },
    );
  });

  it("gives a CIDR's network as ip-address does (IPv4 by arithmetic)", () => {
    const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."));
    fc.assert(
      fc.property(v4, fc.nat(32), (ip, bits) => {
        const a = new Address4(`${ip}/${bits}`);
        expect(networkOf(parseCidr(`${ip}/${bits}`)!)).toBe(`${a.startAddress().correctForm()}/${bits}`);
      }),
      { numRuns: 2000 },
    );
    expect(networkOf(parseCidr("10.244.1.5/24")!)).toBe("10.244.1.0/24");
    expect(networkOf(parseCidr("2001:db8:244:1::5/64")!)).toBe("2001:db8:244:1::/64");
  });

  it("parses and tests containment, per family", () => {
    const cidr = parseCidr("192.0.2.0/24")!;
    expect(cidrContains(cidr, parseIp("192.0.2.200")!)).toBe(true);
    expect(cidrContains(cidr, parseIp("198.51.100.1")!)).toBe(false);
    expect(cidrContains(parseCidr("2001:db8::/64")!, parseIp("2001:db8::10")!)).toBe(true);
    expect(cidrContains(parseCidr("::/0")!, parseIp("192.0.2.1")!)).toBe(false);
    expect(parseCidr("192.0.2.0/33")).toBeUndefined();
    expect(parseCidr("192.0.2.0")).toBeUndefined();
  });

  it("names addresses that are never a node's unicast address", () => {
    expect(notUnicastReason(parseIp("224.0.0.1")!)).toBe("a multicast address");
    expect(notUnicastReason(parseIp("ff02::1")!)).toBe("a multicast address");
    expect(notUnicastReason(parseIp("169.254.1.1")!)).toBe("a link-local address");
    expect(notUnicastReason(parseIp("fe80::1")!)).toBe("a link-local address");
    expect(notUnicastReason(parseIp("0.0.0.0")!)).toBe("the unspecified address");
    expect(notUnicastReason(parseIp("192.0.2.10")!)).toBeUndefined();
  });

  it("formats -d operands as iptables-save prints them", () => {
    expect(hostCidr(parseIp("192.0.2.10")!)).toBe("192.0.2.10/32");
    expect(hostCidr(parseIp("2001:db8::10")!)).toBe("2001:db8::10/128");
  });
});
