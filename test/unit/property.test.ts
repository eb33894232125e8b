// Property tests (fast-check) of the annotation parser and the rule transformer, each against an
// independent model: random valid inputs give exactly the model's answer; random invalid inputs are rejected
// with the documented CNI error and nothing else (no other exception).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type PortMapping, type Protocol, parseNetConf } from "../../src/core/config.js";
import { CniError } from "../../src/core/errors.js";
import { type Ip, parseIp } from "../../src/core/ip.js";
import { parseAnnotation } from "../../src/policy/annotation.js";
import { type FamilyScope, resolveMappings } from "../../src/policy/resolve.js";
import { BOTH, NODE, scopeChain } from "./fixtures.js";

const RUNS = { numRuns: 300 };
const parse = (value: string) => parseAnnotation(value, "portmap-hostip/host-ip", "default/web");

/** The documented error and nothing else. */
function rejects(f: () => unknown, code: number): boolean {
  try {
    f();
  } catch (err) {
    if (err instanceof CniError && err.code === code) return true;
    throw err;
  }
  return false;
}

// ---- addresses, with an oracle independent of the plugin's parser ----

/** RFC 5952 text of an IPv6 address, by the WHATWG URL host serializer (same rules). */
const canonical6 = (text: string): string => new URL(`http://[${text}]/`).hostname.slice(1, -1);

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join("."));
const groups = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).filter(
  // not IPv4-mapped (::ffff:0:0/96) nor IPv4-compatible-looking (::/96): those have their own tests
  (g) => !(g.slice(0, 5).every((x) => x === 0) && (g[5] === 0xffff || g[5] === 0)),
);
/** An IPv6 address written in some valid form (full, zero-padded, upper case or compressed) with its canonical text. */
const v6 = fc.tuple(groups, fc.constantFrom("full", "padded", "upper", "canonical")).map(([g, form]) => {
  const full = g.map((x) => x.toString(16)).join(":");
  const text =
    form === "full"
      ? full
      : form === "padded"
        ? g.map((x) => x.toString(16).padStart(4, "0")).join(":")
        : form === "upper"
          ? full.toUpperCase()
          : canonical6(full);
  return { text, canonical: canonical6(full) };
});
const anyIp = fc.oneof(
  v4.map((t) => ({ text: t, canonical: t })),
  v6,
);

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

// ---- the rule transformer ----

const CHAIN = "CNI-DN-3e9a3d0f9583cdc0e7133";
const POD = {
  4: { subnet: "10.244.1.0/24", ip: "10.244.1.5", any: "0.0.0.0/0" },
  6: { subnet: "2001:db8:244:1::/64", ip: "2001:db8:244:1::5", any: "::/0" },
} as const;

interface GenMapping {
  hostPort: number;
  protocol: Protocol;
  containerPort: number;
  /** The runtime's hostIP (portmap wrote -d itself): not ours to scope. */
  runtimeIp?: string;
  /** Our host IPs for it (undefined: not scoped by us). */
  ours?: string[];
}

interface GenChain {
  family: 4 | 6;
  options: { snat: boolean; masqAll: boolean; setmark: string };
  mappings: GenMapping[];
  /** Rules of other kinds in the chain (another port, a different match), as someone else put them. */
  others: string[];
  /** Where each `others` rule goes among the mapping blocks. */
  positions: number[];
}

const hostCidr = (ip: string, family: 4 | 6) => `${ip}/${family === 4 ? 32 : 128}`;
const withD = (rule: string, cidr: string) => rule.replace(/^(-A \S+( -s \S+)?)/, `$1 -d ${cidr}`);

/** The rules portmap writes for one mapping under its options (see hostport-facts §1). */
function portmapBlock(c: GenChain, m: GenMapping): string[] {
  const pod = POD[c.family];
  const dst = m.runtimeIp === undefined ? "" : ` -d ${hostCidr(m.runtimeIp, c.family)}`;
  const match = `-p ${m.protocol} -m ${m.protocol} --dport ${m.hostPort}`;
  const rules: string[] = [];
  if (c.options.snat) {
    rules.push(`-A ${CHAIN} -s ${c.options.masqAll ? pod.any : pod.subnet}${dst} ${match} -j ${c.options.setmark}`);
    if (c.family === 4 && !c.options.masqAll)
      rules.push(`-A ${CHAIN} -s 127.0.0.1/32${dst} ${match} -j ${c.options.setmark}`);
  }
  const to = c.family === 4 ? `${pod.ip}:${m.containerPort}` : `[${pod.ip}]:${m.containerPort}`;
  rules.push(`-A ${CHAIN}${dst} ${match} -j DNAT --to-destination ${to}`);
  return rules;
}

const hostIpsOf = (family: 4 | 6) =>
  family === 4
    ? fc.uniqueArray(v4, { maxLength: 4 })
    : fc.uniqueArray(
        v6.map((x) => x.canonical),
        { maxLength: 4 },
      );

const genChain: fc.Arbitrary<GenChain> = fc.constantFrom(4 as const, 6 as const).chain((family) =>
  fc
    .record({
      family: fc.constant(family),
      options: fc.record({
        snat: fc.boolean(),
        masqAll: fc.boolean(),
        setmark: fc.constantFrom("CNI-HOSTPORT-SETMARK", "MY-SETMARK"),
      }),
      mappings: fc.uniqueArray(
        fc.record(
          {
            hostPort: fc.integer({ min: 1, max: 65535 }),
            protocol: fc.constantFrom<Protocol>("tcp", "udp", "sctp"),
            containerPort: fc.integer({ min: 1, max: 65535 }),
            runtimeIp: family === 4 ? v4 : v6.map((x) => x.canonical),
            ours: hostIpsOf(family),
          },
          { requiredKeys: ["hostPort", "protocol", "containerPort"] },
        ),
        { minLength: 1, maxLength: 6, selector: (m) => `${m.hostPort}/${m.protocol}` },
      ),
      others: fc.array(
        fc.constantFrom(
          `-A ${CHAIN} -p tcp -m tcp --dport 1 -j RETURN`,
          `-A ${CHAIN} -m comment --comment "someone else's rule" -j RETURN`,
          `-A ${CHAIN} -p udp -m udp --sport 53 -j ACCEPT`,
          `-A ${CHAIN} -s 198.51.100.0/24 -j MARK --set-xmark 0x1/0x1`,
        ),
        { maxLength: 3 },
      ),
      positions: fc.array(fc.nat(), { maxLength: 3 }),
    })
    // a mapping is either scoped by the runtime (hostIP) or possibly by us, not both; port 1/tcp is taken by `others`
    .map((c) => ({
      ...c,
      mappings: c.mappings
        .filter((m) => !(m.hostPort === 1 && m.protocol === "tcp"))
        .map((m) => (m.runtimeIp !== undefined ? { ...m, ours: undefined } : m)),
    }))
    .filter((c) => c.mappings.length > 0),
);

/** Chain as portmap left it: mapping blocks in order, other rules at their positions. */
function layout(c: GenChain): { rules: string[]; blocks: Array<{ mapping?: GenMapping; rules: string[] }> } {
  const blocks: Array<{ mapping?: GenMapping; rules: string[] }> = c.mappings.map((m) => ({
    mapping: m,
    rules: portmapBlock(c, m),
  }));
  for (const [i, rule] of c.others.entries())
    blocks.splice((c.positions[i] ?? 0) % (blocks.length + 1), 0, { rules: [rule] });
  return { rules: blocks.flatMap((b) => b.rules), blocks };
}

function scopesOf(c: GenChain): FamilyScope[] {
  return c.mappings
    .filter((m) => m.ours !== undefined)
    .map((m) => ({
      mapping: { protocol: m.protocol, hostPort: m.hostPort, containerPort: m.containerPort, hostIp: undefined },
      protocol: m.protocol,
      hostPort: m.hostPort,
      containerPort: m.containerPort,
      ips: m.ours!.map((t) => parseIp(t)!),
      hostIp: undefined,
    }));
}

describe("rule transformer (property)", () => {
  it("keeps every other rule as it is, where it is, and gives each scoped mapping's rules exactly its -d", () => {
    fc.assert(
      fc.property(genChain, (c) => {
        const { rules, blocks } = layout(c);
        const { rules: out, missing } = scopeChain(rules, scopesOf(c));
        expect(missing).toEqual([]);
        // The model: each scoped block becomes its rules repeated with -d for each host IP, in place.
        const expected = blocks.flatMap((b) =>
          b.mapping?.ours === undefined
            ? b.rules
            : b.mapping.ours.flatMap((ip) => b.rules.map((r) => withD(r, hostCidr(ip, c.family)))),
        );
        expect(out).toEqual(expected);

        // The same, as invariants: unscoped rules are a byte-identical subsequence …
        const untouched = blocks.filter((b) => b.mapping?.ours === undefined).flatMap((b) => b.rules);
        expect(out.filter((r) => untouched.includes(r))).toEqual(untouched);
        // … and every other output rule is a scoped mapping's rule with exactly one -d of that mapping's IPs.
        for (const rule of out.filter((r) => !untouched.includes(r))) {
          const ds = [...rule.matchAll(/ -d (\S+)/g)].map((m) => m[1]);
          expect(ds).toHaveLength(1);
          const owner = c.mappings.find(
            (m) => m.ours !== undefined && portmapBlock(c, m).includes(rule.replace(` -d ${ds[0]}`, "")),
          );
          expect(owner, rule).toBeDefined();
          expect(owner!.ours!.map((ip) => hostCidr(ip, c.family))).toContain(ds[0]);
        }
      }),
      RUNS,
    );
  });

  it("is idempotent, also after portmap re-appends its unscoped rules (repeated ADD)", () => {
    fc.assert(
      fc.property(genChain, (c) => {
        const { rules } = layout(c);
        const scopes = scopesOf(c);
        const once = scopeChain(rules, scopes).rules;
        expect(scopeChain(once, scopes).rules).toEqual(once);
        const reappended = [...once, ...rules.filter((r) => !once.includes(r))];
        expect(scopeChain(reappended, scopes).rules).toEqual(once);
      }),
      RUNS,
    );
  });

  it("reports (→ code 102) a scoped mapping whose rules are not in the chain", () => {
    fc.assert(
      fc.property(genChain, fc.nat(), (c, pick) => {
        const scoped = c.mappings.filter((m) => m.ours !== undefined && m.ours.length > 0);
        fc.pre(scoped.length > 0);
        const gone = scoped[pick % scoped.length]!;
        const { rules } = layout(c);
        const without = rules.filter((r) => !portmapBlock(c, gone).includes(r));
        const { rules: out, missing } = scopeChain(without, scopesOf(c));
        expect(missing.map((s) => `${s.hostPort}/${s.protocol}`)).toEqual([`${gone.hostPort}/${gone.protocol}`]);
        expect(out.some((r) => r.includes(`-p ${gone.protocol} -m ${gone.protocol} --dport ${gone.hostPort} `))).toBe(
          false,
        );
      }),
      RUNS,
    );
  });
});

describe("the same hostPort several times (property)", () => {
  // One port, mappings with distinct hostIP fields (Kubernetes' key), each scoped by us or left as portmap wrote it.
  const PORT = 8080;
  const same = fc.uniqueArray(
    fc.record({
      hostIp: fc.constantFrom("", "0.0.0.0", "192.0.2.10", "192.0.2.11"),
      containerPort: fc.constantFrom(80, 81, 82),
      ours: fc.option(fc.subarray(["192.0.2.10", "192.0.2.11", "127.0.0.1"]), { nil: undefined }),
    }),
    { minLength: 1, maxLength: 4, selector: (m) => m.hostIp },
  );
  const c: GenChain = {
    family: 4,
    options: { snat: true, masqAll: false, setmark: "CNI-HOSTPORT-SETMARK" },
    mappings: [],
    others: [],
    positions: [],
  };
  const isSpecific = (ip: string) => ip !== "" && ip !== "0.0.0.0";
  /** portmap's ADD: each rule appended unless that exact rule is there (`-C`, then `-A`). */
  type Written = { containerPort: number; runtimeIp?: string };
  /** What the runtime passes portmap for a mapping: its hostIP when specific. */
  const asPassed = (m: { hostIp: string; containerPort: number }): Written => ({
    containerPort: m.containerPort,
    ...(isSpecific(m.hostIp) ? { runtimeIp: m.hostIp } : {}),
  });
  const portmapAdd = (chain: string[], blocks: readonly Written[]) => {
    const out = [...chain];
    for (const b of blocks)
      for (const rule of portmapBlock(c, { hostPort: PORT, protocol: "tcp", ...b }))
        if (!out.includes(rule)) out.push(rule);
    return out;
  };
  const scopesOf = (ms: Array<{ hostIp: string; containerPort: number; ours?: string[] }>): FamilyScope[] =>
    ms.map((m) => {
      const hostIp = isSpecific(m.hostIp) ? parseIp(m.hostIp) : undefined;
      return {
        mapping: {
          hostPort: PORT,
          containerPort: m.containerPort,
          protocol: "tcp",
          hostIp: m.hostIp === "" ? undefined : parseIp(m.hostIp),
        },
        protocol: "tcp",
        hostPort: PORT,
        containerPort: m.containerPort,
        ips: hostIp ? undefined : m.ours?.map((t) => parseIp(t)!),
        hostIp,
      };
    });

  it("gives the chain portmap alone writes when the runtime passes each mapping's host IPs, in order; idempotent", () => {
    fc.assert(
      fc.property(same, (ms) => {
        const written = portmapAdd([], ms.map(asPassed));
        const scopes = scopesOf(ms);
        const { rules, missing } = scopeChain(written, scopes);
        expect(missing).toEqual([]);
        const expanded = ms.flatMap((m): Written[] =>
          isSpecific(m.hostIp) || m.ours === undefined
            ? [asPassed(m)]
            : m.ours.map((ip) => ({ containerPort: m.containerPort, runtimeIp: ip })),
        );
        expect(rules).toEqual(portmapAdd([], expanded));
        expect(scopeChain(rules, scopes).rules).toEqual(rules);
        expect(scopeChain(portmapAdd(rules, ms.map(asPassed)), scopes).rules).toEqual(rules);
      }),
      RUNS,
    );
  });
});

// ---- host IPs and ports from the runtime and the pod ----

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
