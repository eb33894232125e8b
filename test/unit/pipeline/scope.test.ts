// The rule rewrite (scopeChain) on what real portmap wrote, byte for byte; on a rule of portmap's nftables
// backend; and, as fast-check properties, against an independent model of what portmap writes.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Protocol } from "../../../src/core/config.js";
import { parseIp } from "../../../src/core/ip.js";
import { commentOf, type Rule } from "../../../src/core/rule.js";
import { scopeChain as scopeRules } from "../../../src/pipeline/scope.js";
import type { FamilyScope } from "../../../src/policy/resolve.js";
import { RUNS, v4, v6 } from "../arbitraries.js";
import { CHAIN, chainOf as chainIn, PORTMAP_VERSIONS, scopeChain } from "../fixtures.js";

/** The recorded chains of Debian's portmap (1.1.1). */
const chainOf = (name: string) => chainIn(name);
const ip = (text: string) => parseIp(text)!;
/** The recorded chains map 8080 → 80, 8443 → 443, 5353 → 53. */
const CONTAINER_PORT: Record<number, number> = { 8080: 80, 8443: 443, 5353: 53 };
const scope = (
  hostPort: number,
  ips: string[] | undefined,
  protocol: FamilyScope["protocol"] = "tcp",
  containerPort = CONTAINER_PORT[hostPort] ?? 1,
  hostIp?: string,
): FamilyScope => ({
  mapping: { hostPort, containerPort, protocol, hostIp: hostIp === undefined ? undefined : ip(hostIp) },
  protocol,
  hostPort,
  containerPort,
  ips: ips?.map(ip),
  hostIp: hostIp === undefined ? undefined : ip(hostIp),
});

describe.each(PORTMAP_VERSIONS)("scopeChain on what real portmap $portmap wrote", ({ dir }) => {
  const chainOf = (name: string) => chainIn(name, CHAIN, dir);

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv4)", () => {
    const { rules, missing } = scopeChain(chainOf("unscoped-v4"), [scope(8080, ["192.0.2.11"])]);
    expect(missing).toEqual([]);
    expect(rules).toEqual(chainOf("scoped-192.0.2.11-v4"));
  });

  it("gives byte for byte the chain portmap writes itself for that hostIP (IPv6)", () => {
    expect(scopeChain(chainOf("unscoped-v6"), [scope(8080, ["2001:db8::10"])]).rules).toEqual(
      chainOf("scoped-2001.db8..10-v6"),
    );
  });

  it("repeats the mapping's whole rule set for each host IP, in place", () => {
    const { rules } = scopeChain(chainOf("reference-v4"), [scope(8080, ["192.0.2.11", "127.0.0.1"])]);
    const original = chainOf("reference-v4");
    const scoped = (rule: string, d: string) => rule.replace(/^(-A \S+( -s \S+)?)/, `$1 -d ${d}`);
    expect(rules).toEqual([
      ...original.slice(0, 3).map((r) => scoped(r, "192.0.2.11/32")),
      ...original.slice(0, 3).map((r) => scoped(r, "127.0.0.1/32")),
      ...original.slice(3),
    ]);
  });

  it("keeps the rules of mappings the runtime scoped, and of other ports, where they are", () => {
    const original = chainOf("reference-v4");
    const { rules } = scopeChain(original, [scope(5353, ["192.0.2.11"], "udp")]);
    expect(rules.slice(0, 6)).toEqual(original.slice(0, 6));
    expect(rules.slice(6)).toEqual(
      original.slice(6).map((r) => r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.11/32")),
    );
  });

  it("does not take a runtime-scoped sibling on the same port for its own", () => {
    const sibling = `-A ${CHAIN} -d 192.0.2.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.1.5:81`;
    const chain = [...chainOf("unscoped-v4"), sibling];
    const { rules } = scopeChain(chain, [scope(8080, ["192.0.2.11"])]);
    expect(rules).toEqual([...chainOf("scoped-192.0.2.11-v4"), sibling]);
  });

  it.each(["nosnat", "masqall", "setmark"])(
    "follows portmap's option %s as written, byte for byte what portmap writes for that hostIP",
    (name) => {
      const { rules, missing } = scopeChain(chainOf(`${name}-v4`), [scope(8080, ["192.0.2.11"])]);
      expect(missing).toEqual([]);
      expect(rules).toEqual(chainOf(`${name}-scoped-192.0.2.11-v4`));
    },
  );

  it("is idempotent, also after portmap re-appends its unscoped rules on a repeated ADD", () => {
    const scopes = [scope(8080, ["192.0.2.10", "192.0.2.11"]), scope(5353, ["192.0.2.11"], "udp")];
    const once = scopeChain(chainOf("reference-v4"), scopes).rules;
    expect(scopeChain(once, scopes).rules).toEqual(once);
    const reappended = [...once, ...chainOf("reference-v4").filter((r) => !/ -d /.test(r))];
    expect(scopeChain(reappended, scopes).rules).toEqual(once);
  });

  it("re-scopes when the host IPs changed", () => {
    const first = scopeChain(chainOf("unscoped-v4"), [scope(8080, ["192.0.2.10"])]).rules;
    expect(scopeChain(first, [scope(8080, ["192.0.2.11"])]).rules).toEqual(chainOf("scoped-192.0.2.11-v4"));
  });

  it("drops the mapping's rules in a family left with no host IP", () => {
    expect(scopeChain(chainOf("unscoped-v6"), [scope(8080, [])])).toEqual({ rules: [], missing: [] });
  });

  it("reports a mapping to scope that has no rule (portmap missing or after us)", () => {
    const s = scope(9090, ["192.0.2.11"]);
    expect(scopeChain(chainOf("unscoped-v4"), [s]).missing).toEqual([s]);
    expect(scopeChain([], [s]).missing).toEqual([s]);
  });
});

describe("scopeChain: the same hostPort twice, in portmap's order", () => {
  // portmap's rules for 8080 → 80 with hostIP 192.0.2.10, then 8080 → 81 with none (recorded chains, edited).
  const specific = chainOf("unscoped-v4").map((r) => r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.10/32"));
  const none81 = chainOf("unscoped-v4").map((r) => r.replace(":80", ":81"));
  const d = (rules: string[], cidr: string) =>
    rules.map((r) => r.replace(/^(-A \S+( -s \S+)?)( -d \S+)?/, `$1 -d ${cidr}`));

  it("writes each mapping's rules in portmap's order: the runtime's as written, ours per host IP", () => {
    const scopes = [
      scope(8080, undefined, "tcp", 80, "192.0.2.10"),
      scope(8080, ["192.0.2.10", "192.0.2.11"], "tcp", 81),
    ];
    const { rules, missing } = scopeChain([...specific, ...none81], scopes);
    expect(missing).toEqual([]);
    // The second mapping's marks for 192.0.2.10 equal the first's: left out, as portmap alone leaves them out.
    expect(rules).toEqual([...specific, ...d(none81, "192.0.2.10/32").slice(-1), ...d(none81, "192.0.2.11/32")]);
    // Once more, and after portmap's repeated ADD re-appended the rules it no longer finds.
    expect(scopeChain(rules, scopes).rules).toEqual(rules);
    expect(scopeChain([...rules, ...none81], scopes).rules).toEqual(rules);
  });

  it("keeps none before a specific hostIP when portmap wrote it so, also when both rule sets are the same (same container port)", () => {
    const scopes = [scope(8080, ["192.0.2.10", "192.0.2.11"]), scope(8080, undefined, "tcp", 80, "192.0.2.10")];
    const unscoped = chainOf("unscoped-v4");
    const { rules } = scopeChain([...unscoped, ...specific], scopes);
    // The specific mapping's rules all equal earlier ones: it can never receive traffic (and is warned about).
    expect(rules).toEqual([...specific, ...d(unscoped, "192.0.2.11/32")]);
    expect(scopeChain(rules, scopes).rules).toEqual(rules);
    expect(scopeChain([...rules, ...unscoped], scopes).rules).toEqual(rules);
  });

  it("writes a mapping of 0.0.0.0 or none as portmap did when the policy leaves it alone", () => {
    const scopes = [scope(8080, undefined, "tcp", 80), scope(8080, ["192.0.2.11"], "tcp", 81)];
    const { rules } = scopeChain([...chainOf("unscoped-v4"), ...none81], scopes);
    expect(rules).toEqual([...chainOf("unscoped-v4"), ...d(none81, "192.0.2.11/32")]);
  });
});

describe("a rule of portmap's nftables backend", () => {
  // `tcp dport 8080 dnat to 10.244.1.5:80 comment "ctr-aaaa1111"` in chain hostports, handle 11: as an nft reader
  // would give it (the reader and writer are the nftables backend's; the transform is shared).
  const nft: Rule = {
    chain: "hostports",
    matches: [
      { kind: "dport", protocol: "tcp", port: 8080 },
      { kind: "comment", text: "ctr-aaaa1111" },
    ],
    target: { kind: "dnat", to: "10.244.1.5:80" },
    handle: 11,
  };

  it("is scoped by the same transform: destination set per host IP, comment and handle kept", () => {
    const ip = (t: string) => parseIp(t)!;
    const { rules, missing } = scopeRules(
      [nft],
      [
        {
          mapping: { protocol: "tcp", hostPort: 8080, containerPort: 80, hostIp: undefined },
          protocol: "tcp",
          hostPort: 8080,
          containerPort: 80,
          ips: [ip("192.0.2.10"), ip("192.0.2.11")],
          hostIp: undefined,
        },
      ],
    );
    expect(missing).toEqual([]);
    expect(rules.map((r) => r.destination?.address)).toEqual(["192.0.2.10", "192.0.2.11"]);
    expect(rules.map((r) => [commentOf(r), r.handle, r.target])).toEqual([
      ["ctr-aaaa1111", 11, nft.target],
      ["ctr-aaaa1111", 11, nft.target],
    ]);
  });
});

// ---- the rule transformer (property) ----

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
