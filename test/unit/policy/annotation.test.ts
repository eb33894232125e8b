// The host-IP annotation grammar: examples, and fast-check properties against an independent model (random
// valid annotations give exactly the model's answer; random invalid ones are refused with code 101 and nothing
// else).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CniError } from "../../../src/core/errors.js";
import { MAX_ANNOTATION_ENTRIES, parseAnnotation } from "../../../src/policy/annotation.js";
import { anyIp, canonical6, RUNS, rejects, v4 } from "../arbitraries.js";
import { cniError } from "../fixtures.js";

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

// ---- the annotation parser ----

interface Entry {
  port?: number;
  proto?: string;
  ip: { text: string; canonical: string };
  /** Whitespace around the separators. */
  ws: [string, string, string, string];
}

const ws = fc.constantFrom("", " ", "  ", "\t");
const entry: fc.Arbitrary<Entry> = fc.record(
  {
    port: fc.integer({ min: 1, max: 65535 }),
    proto: fc.constantFrom("tcp", "udp", "sctp", "TCP", "Udp", "SCTP"),
    ip: anyIp,
    ws: fc.tuple(ws, ws, ws, ws),
  },
  { requiredKeys: ["ip", "ws"] },
);

function entryText(e: Entry): string {
  const [a, b, c, d] = e.ws;
  const head = e.port === undefined ? "" : `${e.port}${e.proto === undefined ? "" : `${b}/${c}${e.proto}`}${d}=${d}`;
  return `${a}${head}${e.ip.text}${a}`;
}

/** What the annotation means, computed from the entries themselves. */
function model(entries: readonly Entry[]): { all: string[]; byPort: Record<string, string[]> } {
  const all: string[] = [];
  const byPort: Record<string, string[]> = {};
  for (const e of entries) {
    const ip = e.ip.canonical;
    const list = e.port === undefined ? all : (byPort[`${e.port}/${(e.proto ?? "tcp").toLowerCase()}`] ??= []);
    if (!list.includes(ip)) list.push(ip);
  }
  return { all, byPort };
}

const badEntry = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "0.0.0.0/0",
    "192.0.2.10/32",
    "1.2.3.4 -j ACCEPT",
    "$(reboot)",
    "`id`",
    ";",
    "192.0.2.10;reboot",
    '192.0.2.10"',
    "'192.0.2.10'",
    "192.0.2.10\n-A INPUT -j ACCEPT",
    "192.0.2.010",
    "192.0.2",
    "192.0.2.10.5",
    "fe80::1%eth0",
    "2001:db8::/64",
    "2001:db8:::1",
    "localhost",
    "0=192.0.2.10",
    "65536=192.0.2.10",
    "-1=192.0.2.10",
    "8080/icmp=192.0.2.10",
    "8080/=192.0.2.10",
    "=192.0.2.10",
    "8080=",
    "8080==192.0.2.10",
    "8080/tcp/udp=192.0.2.10",
  ),
  fc.integer({ min: 256, max: 999 }).map((o) => `192.0.2.${o}`),
  fc.integer({ min: 65536, max: 99999 }).map((p) => `${p}=192.0.2.10`),
  fc
    .stringMatching(/^[a-z]{1,8}$/)
    .filter((p) => !["tcp", "udp", "sctp"].includes(p))
    .map((p) => `80/${p}=192.0.2.10`),
  fc
    .tuple(v4, fc.constantFrom(" -j ACCEPT", " ", ";x", "|x", "&", ">", "\n", "\r", "\u0000", "/24", ":80", "#"))
    .map(([ip, tail]) => `${ip}${tail}x`),
);

describe("annotation parser (property)", () => {
  it("parses every valid annotation exactly as the model reads it", () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 20 }), (entries) => {
        const a = parse(entries.map(entryText).join(","));
        const m = model(entries);
        expect(a.all.map((ip) => ip.text)).toEqual(m.all);
        expect(Object.fromEntries([...a.byPort].map(([k, ips]) => [k, ips.map((ip) => ip.text)]))).toEqual(m.byPort);
        for (const ip of [...a.all, ...[...a.byPort.values()].flat()])
          expect(ip.family).toBe(ip.text.includes(":") ? 6 : 4);
      }),
      RUNS,
    );
  });

  it("folds IPv4-mapped IPv6 forms (dotted and hex) into the IPv4 address", () => {
    fc.assert(
      fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), (o) => {
        const dotted = o.join(".");
        const hex = `::ffff:${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
        for (const form of [
          `::ffff:${dotted}`,
          `0:0:0:0:0:ffff:${dotted}`,
          hex,
          hex.toUpperCase().replace("::FFFF", "::ffff"),
        ]) {
          expect(parse(form).all, form).toEqual([{ family: 4, text: dotted }]);
        }
      }),
      RUNS,
    );
  });

  it("rejects (code 101) any annotation with one invalid entry among valid ones", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 10 }), badEntry, fc.nat(), (entries, bad, at) => {
        // An empty value as a whole states no preference (it is valid).
        fc.pre(entries.length > 0 || bad !== "");
        const texts = entries.map(entryText);
        texts.splice(at % (texts.length + 1), 0, bad);
        expect(rejects(() => parse(texts.join(",")), 101)).toBe(true);
      }),
      RUNS,
    );
  });

  it("reads an empty value as no preference; a blank one is refused (101)", () => {
    expect(parse("")).toEqual({ all: [], byPort: new Map() });
    for (const blank of [" ", "\t", " \n ", ","]) expect(rejects(() => parse(blank), 101)).toBe(true);
  });

  it("rejects (code 101) more than 64 entries or more than 4096 characters", () => {
    fc.assert(
      fc.property(fc.array(entry, { minLength: 65, maxLength: 200 }), (entries) => {
        expect(rejects(() => parse(entries.map(entryText).join(",")), 101)).toBe(true);
      }),
      { numRuns: 50 },
    );
    expect(rejects(() => parse(`192.0.2.10,${" ".repeat(4096)}`), 101)).toBe(true);
  });

  it("on arbitrary text: either code 101 or only strictly valid, canonical addresses — never another exception", () => {
    const strict4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 80 }),
          fc.string({ unit: "binary", maxLength: 80 }),
          fc.stringMatching(/^[0-9a-fA-F:.,=/ tcpudsTCPUDS-]{0,60}$/),
        ),
        (text) => {
          let a: ReturnType<typeof parse>;
          try {
            a = parse(text);
          } catch (err) {
            expect(err).toBeInstanceOf(CniError);
            expect((err as CniError).code).toBe(101);
            return;
          }
          for (const ip of [...a.all, ...[...a.byPort.values()].flat()]) {
            if (ip.family === 4) expect(ip.text).toMatch(strict4);
            else expect(ip.text).toBe(canonical6(ip.text));
          }
          for (const key of a.byPort.keys()) expect(key).toMatch(/^([1-9]\d{0,4})\/(tcp|udp|sctp)$/);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
