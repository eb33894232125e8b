import { describe, expect, it } from "vitest";
import { MAX_ANNOTATION_ENTRIES, parseAnnotation } from "../../src/policy/annotation.js";
import { cniError } from "./fixtures.js";

const parse = (value: string) => parseAnnotation(value, "portmap-hostip/host-ip", "default/web");
const texts = (ips: Array<{ text: string }> | undefined) => ips?.map((ip) => ip.text);

describe("host-IP annotation grammar", () => {
  it("reads plain IPs for every mapping", () => {
    const a = parse("192.0.2.10, 2001:db8::10");
    expect(texts(a.all)).toEqual(["192.0.2.10", "2001:db8::10"]);
    expect(a.byPort.size).toBe(0);
  });

  it("reads PORT[/PROTO]=IP entries, tcp by default, spaces allowed", () => {
    const a = parse(" 8080 = 192.0.2.10 ,5353/UDP=192.0.2.11, 8080/tcp=2001:db8::10, 192.0.2.12");
    expect(texts(a.byPort.get("8080/tcp"))).toEqual(["192.0.2.10", "2001:db8::10"]);
    expect(texts(a.byPort.get("5353/udp"))).toEqual(["192.0.2.11"]);
    expect(texts(a.all)).toEqual(["192.0.2.12"]);
  });

  it("takes an empty value as no preference", () => {
    expect(parse("")).toEqual({ all: [], byPort: new Map() });
  });

  it("folds IPv4-mapped forms and repeats", () => {
    expect(texts(parse("::ffff:192.0.2.10,192.0.2.10").all)).toEqual(["192.0.2.10"]);
  });

  it.each([
    [" ", "is not IP or PORT[/PROTO]=IP"],
    ["192.0.2.10,", "is not IP or PORT[/PROTO]=IP"],
    ["0.0.0.0/0", "is not an IP address"],
    ["1.2.3.4 -j ACCEPT", "is not IP or PORT[/PROTO]=IP"],
    ["$(reboot)", "is not an IP address"],
    ["192.0.2.10;reboot", "is not an IP address"],
    ['192.0.2.10"', "is not an IP address"],
    ["192.0.2.10\n-A INPUT -j ACCEPT", "is not IP or PORT[/PROTO]=IP"],
    ["0=192.0.2.10", "port 0 is not from 1 to 65535"],
    ["65536=192.0.2.10", "port 65536 is not from 1 to 65535"],
    ["-1=192.0.2.10", "is not an IP address"],
    ["80/icmp=192.0.2.10", 'protocol "icmp" is not tcp, udp or sctp'],
  ])("rejects %j with code 101 (%s)", (value, why) => expectRefusal(value, why));

  it("bounds the number of entries and the length", () => {
    expectRefusal(
      Array(MAX_ANNOTATION_ENTRIES + 1)
        .fill("192.0.2.10")
        .join(","),
      `more than ${MAX_ANNOTATION_ENTRIES} entries`,
    );
    expectRefusal(Array(10_000).fill("192.0.2.10").join(","), "longer than 4096 characters");
  });
});

function expectRefusal(value: string, why: string): void {
  const error = cniError(() => parse(value));
  expect(error.code).toBe(101);
  expect(error.message).toContain(why);
  expect(error.message).toContain("portmap-hostip/host-ip on pod default/web");
}
