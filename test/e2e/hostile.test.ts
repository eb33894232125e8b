// Hostile and broken input, end to end: the real plugin binary in the node namespace, behind logging
// stand-ins for iptables/ip6tables(-restore) that record every invocation and then run the real program.
// Each input must give a CNI error (JSON on stdout, the documented code, no crash trace), leave both nat
// tables exactly as they were, and never run iptables-restore. Valid inputs that normalise (mapped IPv6
// forms of a node IP) reach iptables only as validated addresses: every line the plugin writes is one of
// portmap's own rules with at most a `-d <address>/<len>` that the policy allows.
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  ANNOTATIONS_CAP,
  CLUSTER_IP,
  FOREIGN_IP,
  HOST_IP_ANNOTATION,
  NODE_IP1,
  NODE_IP2,
  PLUGIN_TYPE,
  bridgeConflist,
  containerdMapping,
  describeRun,
  dnChainName,
  natSave,
  podRuntime,
  rulesIn,
  withoutPlugin,
  type NatSnapshot,
  type NetConfList,
  type RuntimeConf,
} from "../support/harness.js";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import { CRASH_TRACE, createStandins, invocations, replaceChain, runPluginRaw, type Invocation, type RawRun, type Standins } from "../support/standins.js";

type Json = Record<string, unknown>;

interface Case {
  what: string;
  /** Expected CNI error code (or one of these). */
  code: number | number[];
  /** stdin: bytes/text, or a function of the valid stdin object. */
  stdin?: string | Buffer | ((base: Json) => unknown);
  /** Environment changes (undefined deletes the variable). */
  env?: Record<string, string | undefined>;
}

const deepText = (n: number) => "[".repeat(n) + "]".repeat(n);
/** The stdin text with `deepText(n)` in place of the value that `put` puts at its place (JSON.stringify cannot nest that deep). */
const nestedAt = (n: number, put: (base: Json, marker: string) => Json) => (base: Json) =>
  JSON.stringify(put(base, "@@DEEP@@")).replace('"@@DEEP@@"', deepText(n));
const withMappings = (base: Json, portMappings: unknown[]): Json => ({ ...base, runtimeConfig: { ...(base["runtimeConfig"] as Json), portMappings } });
const withAnnotation = (base: Json, value: unknown): Json => ({
  ...base,
  runtimeConfig: { ...(base["runtimeConfig"] as Json), [ANNOTATIONS_CAP]: { [HOST_IP_ANNOTATION]: value } },
});
const withHostIP = (base: Json, hostIP: unknown): Json => withMappings(base, [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: hostIP }]);
const withPort = (key: string, value: unknown) => (base: Json) => withMappings(base, [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", [key]: value }]);

/** Host IPs that are never acceptable: syntax (7 from the runtime field, 101 from the annotation) or policy (100). */
const badSyntaxIPs = [
  "0.0.0.0/0",
  "192.0.2.11/32",
  "1.2.3.4 -j ACCEPT",
  "192.0.2.11 -j ACCEPT",
  "$(reboot)",
  "`reboot`",
  ";",
  "192.0.2.11;reboot",
  "192.0.2.11\n-A PREROUTING -j ACCEPT",
  "\n",
  '"',
  '192.0.2.11" -j ACCEPT "',
  "'192.0.2.11'",
  "192.0.2.011",
  "192.0.2.256",
  "fe80::1%eth0",
  "2001:db8::10/64",
  "192.0.2.11\u0000",
  "-d",
];
const refusedIPs = [
  CLUSTER_IP, // on kube-ipvs0
  "::ffff:10.96.0.50", // the ClusterIP, IPv4-mapped
  "::ffff:a60:32", // the same, hex
  "0:0:0:0:0:ffff:0a60:0032",
  "169.254.1.1",
  "fe80::1",
  "224.0.0.1",
  "ff02::1",
  "255.255.255.255",
  FOREIGN_IP, // another node's
  "192.0.2.1", // the gateway's
  "2001:db8::1",
];

const tenThousand = Array.from({ length: 10_000 }, (_, i) => `192.0.${2 + Math.floor(i / 250)}.${(i % 250) + 1}`).join(",");

const cases: Case[] = [
  // stdin
  { what: "stdin empty", code: 6, stdin: "" },
  { what: "stdin whitespace", code: 6, stdin: " \n\t " },
  { what: "stdin not JSON", code: 6, stdin: "cniVersion=1.0.0 name=cbr0" },
  { what: "stdin truncated JSON", code: 6, stdin: (b) => JSON.stringify(b).slice(0, 100) },
  { what: "stdin JSON array", code: 7, stdin: "[]" },
  { what: "stdin JSON string", code: 7, stdin: '"ADD"' },
  { what: "stdin JSON null", code: 7, stdin: "null" },
  { what: "stdin number cniVersion", code: 7, stdin: (b) => ({ ...b, cniVersion: 1 }) },
  { what: "stdin unknown cniVersion", code: 1, stdin: (b) => ({ ...b, cniVersion: "9.9.9" }) },
  { what: "stdin without name", code: 7, stdin: ({ name: _n, ...b }) => b },
  { what: "stdin prevResult a string", code: 7, stdin: (b) => ({ ...b, prevResult: "10.244.1.2" }) },
  { what: "stdin prevResult.ips not a list", code: 7, stdin: (b) => ({ ...b, prevResult: { ...(b["prevResult"] as Json), ips: { address: "x" } } }) },
  { what: "stdin portMappings an object", code: 7, stdin: (b) => ({ ...b, runtimeConfig: { portMappings: { HostPort: 8080 } } }) },
  { what: "stdin annotations not strings", code: 7, stdin: (b) => withAnnotation(b, 5) },
  { what: "stdin 10 MB", code: 6, stdin: (b) => ({ ...b, padding: "x".repeat(10 * 1024 * 1024) }) },
  { what: "stdin 10 MB of spaces after valid JSON", code: 6, stdin: (b) => JSON.stringify(b) + " ".repeat(10 * 1024 * 1024) },
  { what: "stdin nested 10,000 deep", code: [6, 7], stdin: deepText(10_000) },
  { what: "stdin nested 10,000 deep in cniVersion", code: [6, 7], stdin: nestedAt(10_000, (b, m) => ({ ...b, cniVersion: m })) },
  { what: "stdin nested 10,000 deep in runtimeConfig.portMappings", code: [6, 7], stdin: nestedAt(10_000, (b, m) => withMappings(b, [m])) },
  { what: "stdin nested 10,000 deep in the annotation", code: [6, 7], stdin: nestedAt(10_000, (b, m) => withAnnotation(b, m)) },
  {
    what: "stdin nested 10,000 deep in prevResult",
    code: [6, 7],
    stdin: nestedAt(10_000, (b, m) => ({ ...b, prevResult: { ...(b["prevResult"] as Json), extra: m } })),
  },
  { what: "stdin nested 100,000 deep", code: [6, 7], stdin: deepText(100_000) },
  // Unknown keys are ignored, but not at any depth: input nested past 64 levels is refused whole.
  { what: "an unknown key nested 10,000 deep", code: 6, stdin: nestedAt(10_000, (b, m) => ({ ...b, extra: m })) },
  {
    what: "stdin invalid UTF-8 in a string",
    code: 6,
    stdin: (b) => Buffer.concat([Buffer.from(JSON.stringify(b).slice(0, -1) + ',"x":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]),
  },
  { what: "stdin UTF-16 (BOM)", code: 6, stdin: (b) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(JSON.stringify(b), "utf16le")]) },
  // environment
  { what: "env CNI_COMMAND missing", code: 4, env: { CNI_COMMAND: undefined } },
  { what: "env CNI_COMMAND lowercase", code: 4, env: { CNI_COMMAND: "add" } },
  { what: "env CNI_COMMAND unknown", code: 4, env: { CNI_COMMAND: "EXEC" } },
  { what: "env CNI_COMMAND with injection", code: 4, env: { CNI_COMMAND: "ADD;DEL" } },
  { what: "env CNI_CONTAINERID missing", code: 4, env: { CNI_CONTAINERID: undefined } },
  { what: "env CNI_CONTAINERID empty", code: 4, env: { CNI_CONTAINERID: "" } },
  { what: "env CNI_CONTAINERID leading dash", code: 3, env: { CNI_CONTAINERID: "-j" } },
  { what: "env CNI_CONTAINERID with space", code: 3, env: { CNI_CONTAINERID: "abc -j ACCEPT" } },
  { what: "env CNI_CONTAINERID $(reboot)", code: 3, env: { CNI_CONTAINERID: "$(reboot)" } },
  { what: "env CNI_CONTAINERID path", code: 3, env: { CNI_CONTAINERID: "../../etc/passwd" } },
  { what: "env CNI_CONTAINERID newline", code: 3, env: { CNI_CONTAINERID: "abc\ndef" } },
  { what: "env CNI_IFNAME missing", code: 4, env: { CNI_IFNAME: undefined } },
  { what: "env CNI_IFNAME empty", code: 4, env: { CNI_IFNAME: "" } },
  { what: "env CNI_IFNAME too long", code: 4, env: { CNI_IFNAME: "eth0123456789012" } },
  { what: "env CNI_IFNAME slash", code: 4, env: { CNI_IFNAME: "../eth0" } },
  { what: "env CNI_IFNAME space", code: 4, env: { CNI_IFNAME: "eth0 -j" } },
  { what: "env CNI_IFNAME dot", code: 4, env: { CNI_IFNAME: "." } },
  { what: "env CNI_IFNAME colon", code: 4, env: { CNI_IFNAME: "eth0:1" } },
  { what: "env CNI_NETNS missing for ADD", code: 4, env: { CNI_NETNS: undefined } },
  { what: "env CNI_ARGS malformed", code: 4, env: { CNI_ARGS: "IgnoreUnknown=1;garbage" } },
  // port mappings
  ...(
    [
      ["HostPort", 0],
      ["HostPort", 65536],
      ["HostPort", -1],
      ["HostPort", "80"],
      ["HostPort", 80.5],
      ["HostPort", null],
      ["HostPort", 1e300],
      ["ContainerPort", 0],
      ["ContainerPort", "80"],
      ["Protocol", "icmp"],
      ["Protocol", "all"],
      ["Protocol", "tcp -j ACCEPT"],
      ["Protocol", "tcp\n"],
      ["Protocol", 6],
    ] as const
  ).map(([key, value]): Case => ({ what: `portMapping ${key} ${JSON.stringify(value)}`, code: 7, stdin: withPort(key, value) })),
  {
    what: "portMappings duplicate (same hostPort/protocol, no hostIP)",
    code: 7,
    stdin: (b) => withMappings(b, [containerdMapping(8080, 80), containerdMapping(8080, 81)]),
  },
  {
    what: "portMappings duplicate, spec and containerd spelling",
    code: 7,
    stdin: (b) => withMappings(b, [containerdMapping(8080, 80), { hostPort: 8080, containerPort: 80, protocol: "TCP" }]),
  },
  // host IPs from the runtime and the annotation
  ...badSyntaxIPs.map((ip): Case => ({ what: `runtime hostIP ${JSON.stringify(ip)}`, code: 7, stdin: (b) => withHostIP(b, ip) })),
  ...badSyntaxIPs.map((ip): Case => ({ what: `annotation ${JSON.stringify(ip)}`, code: 101, stdin: (b) => withAnnotation(b, ip) })),
  ...refusedIPs.map((ip): Case => ({ what: `runtime hostIP ${ip}`, code: 100, stdin: (b) => withHostIP(b, ip) })),
  ...refusedIPs.map((ip): Case => ({ what: `annotation ${ip}`, code: 100, stdin: (b) => withAnnotation(b, ip) })),
  ...refusedIPs.map((ip): Case => ({ what: `annotation 8080/tcp=${ip}`, code: 100, stdin: (b) => withAnnotation(b, `8080/tcp=${ip}`) })),
  { what: "annotation: a good IP and a bad one", code: 101, stdin: (b) => withAnnotation(b, `${NODE_IP2},1.2.3.4 -j ACCEPT`) },
  { what: "annotation: a good IP and a refused one", code: 100, stdin: (b) => withAnnotation(b, `${NODE_IP2},${CLUSTER_IP}`) },
  { what: "annotation: port 0", code: 101, stdin: (b) => withAnnotation(b, `0=${NODE_IP2}`) },
  { what: "annotation: port 65536", code: 101, stdin: (b) => withAnnotation(b, `65536=${NODE_IP2}`) },
  { what: "annotation: protocol icmp", code: 101, stdin: (b) => withAnnotation(b, `8080/icmp=${NODE_IP2}`) },
  { what: "annotation: 10,000 entries", code: 101, stdin: (b) => withAnnotation(b, tenThousand) },
  { what: "annotation: 1 MB", code: 101, stdin: (b) => withAnnotation(b, `${NODE_IP2} `.repeat(80_000)) },
  // the administrator's configuration
  { what: "config defaultHostIP 0.0.0.0/0", code: 7, stdin: (b) => ({ ...b, defaultHostIP: "0.0.0.0/0" }) },
  { what: "config nodeIPs injection", code: 7, stdin: (b) => ({ ...b, nodeIPs: ["192.0.2.10 -j ACCEPT"] }) },
  { what: "config allowedHostCIDRs injection", code: 7, stdin: (b) => ({ ...b, allowedHostCIDRs: ["0.0.0.0/0 -j ACCEPT"] }) },
  { what: "config annotation key with space", code: 7, stdin: (b) => ({ ...b, annotation: "host ip" }) },
  { what: "config excludeInterfaces bad name", code: 7, stdin: (b) => ({ ...b, excludeInterfaces: ["kube ipvs0"] }) },
];

/** Addresses as the plugin may write them after `-d`: validated, canonical, host length. */
const HOST_CIDR = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\/32$|^[0-9a-f:]+\/128$/;

/**
 * The whole vocabulary of what the plugin may hand to iptables: fixed argv, and restore input made of the
 * chain's declaration and portmap's own rules (from `portmapRules`), each with at most one `-d` host address.
 */
function assertVocabulary(calls: readonly Invocation[], chain: string, portmapRules: ReadonlySet<string>): void {
  for (const call of calls) {
    const argv = call.argv.join(" ");
    if (call.program === "iptables" || call.program === "ip6tables") {
      expect(argv, call.program).toMatch(/^-w 5 -t nat -S (CNI-DN-[0-9a-f]{21}|POSTROUTING)$/);
      continue;
    }
    expect(call.program).toMatch(/^ip6?tables-restore$/);
    expect(argv).toMatch(/^-w 5 --noflush( --test)?$/);
    const lines = call.stdin.split("\n");
    expect(lines.at(-1)).toBe("");
    expect(lines[0]).toBe("*nat");
    expect(lines.at(-2)).toBe("COMMIT");
    if (lines.length === 3) continue; // STATUS' empty transaction
    expect(lines[1]).toBe(`:${chain} - [0:0]`);
    for (const line of lines.slice(2, -2)) {
      const m = / -d (\S+)/.exec(line);
      const bare = m ? line.replace(` -d ${m[1]}`, "") : line;
      if (m) expect(m[1], line).toMatch(HOST_CIDR);
      expect(line.match(/ -d /g)?.length ?? 0, line).toBeLessThanOrEqual(1);
      expect(portmapRules.has(bare), `${line}\n is not one of portmap's rules with a -d added`).toBe(true);
    }
  }
}

describeAsRoot("hostile and broken input", () => {
  const h = useHarness();
  let list: NetConfList;
  let rt: RuntimeConf;
  let base: Json;
  let baseEnv: Record<string, string>;
  let standins: Standins;
  let chain: string;
  let original: NatSnapshot;

  const snapshot = async (): Promise<NatSnapshot> => ({ v4: await natSave(h.topo.node, 4), v6: await natSave(h.topo.node, 6) });

  beforeAll(async () => {
    list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    // portmap alone, then we feed our plugin whatever we like on top of the chain it wrote.
    const started = await h.startPod("victim", withoutPlugin(list), { portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")] });
    expect(started.add.ok, describeRun(started.add)).toBe(true);
    rt = podRuntime(started.pod, { portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")] });
    const ours = list.plugins.find((p) => p.type === PLUGIN_TYPE)!;
    base = h.cni.pluginStdin(list, ours, rt, started.add.result);
    standins = createStandins(h.topo.tmpDir);
    baseEnv = {
      PATH: standins.path,
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: rt.containerID,
      CNI_NETNS: rt.netns,
      CNI_IFNAME: "eth0",
      CNI_ARGS: rt.args ?? "",
      CNI_PATH: h.cni.cniPath.join(":"),
    };
    chain = dnChainName(list.name, rt.containerID);
    original = await snapshot();
    expect(rulesIn(original.v4, chain).length).toBe(6);
    expect(rulesIn(original.v6, chain).length).toBe(4);
  });

  afterAll(() => {
    // Across every hostile input, the listings that did run had fixed arguments only (each case checks
    // that iptables-restore did not run).
    assertVocabulary(
      invocations(standins).filter((c) => !c.program.endsWith("-restore")),
      chain,
      new Set(),
    );
  });

  async function runCase(c: Case, path = standins.path): Promise<RawRun> {
    const env: Record<string, string> = { ...baseEnv, PATH: path };
    for (const [k, v] of Object.entries(c.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const stdin = c.stdin ?? base;
    const input = typeof stdin === "function" ? stdin(structuredClone(base)) : stdin;
    return runPluginRaw(h.topo.node, { env, input: typeof input === "string" || Buffer.isBuffer(input) ? input : JSON.stringify(input) });
  }

  /** Puts portmap's chain back as it was (after a case that changed it, so that the next one starts clean). */
  async function resetChain(): Promise<void> {
    for (const family of [4, 6] as const) await replaceChain(h.topo.node, family, chain, rulesIn(family === 4 ? original.v4 : original.v6, chain));
  }

  it.each(cases)("$what → CNI error $code, no change, no iptables-restore", async (c) => {
    const before = invocations(standins).length;
    const r = await runCase(c);
    const calls = invocations(standins).slice(before);
    const after = await snapshot();
    if (JSON.stringify(after) !== JSON.stringify(original)) await resetChain();
    expect(r.signal, r.stderr).toBeNull();
    expect(r.code, `stdout: ${r.stdout.slice(0, 500)}\nstderr: ${r.stderr.slice(0, 500)}`).toBe(1);
    expect(r.stderr).not.toMatch(CRASH_TRACE);
    expect(r.output, r.stdout.slice(0, 500)).toMatchObject({ cniVersion: expect.any(String), msg: expect.any(String) });
    expect([c.code].flat(), r.stdout.slice(0, 500)).toContain(r.output!["code"]);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(calls.filter((i) => i.program.endsWith("-restore")), "iptables-restore must not run").toEqual([]);
    expect(after).toEqual(original);
  });

  it("a valid ADD writes only portmap's rules with validated -d addresses (mapped IPv6 forms normalised)", async () => {
    const portmapRules = new Set([...rulesIn(original.v4, chain), ...rulesIn(original.v6, chain)]);
    const audited = createStandins(h.topo.tmpDir);
    for (const annotation of ["::ffff:192.0.2.11", "::ffff:c000:20b", `8080=${NODE_IP1}, 5353/UDP = ::ffff:${NODE_IP2}`, ""]) {
      const before = invocations(audited).length;
      const r = await runCase({ what: annotation, code: 0, stdin: (b) => (annotation === "" ? b : withAnnotation(b, annotation)) }, audited.path);
      const calls = invocations(audited).slice(before);
      expect(r.code, r.stdout).toBe(0);
      // Only the plugin's own notes (a mapping left without IPv6 host IPs), never a trace.
      expect(r.stderr.split("\n").filter((l) => l && !l.startsWith("portmap-hostip: "))).toEqual([]);
      expect(calls.filter((c) => c.program.endsWith("-restore")).length).toBeGreaterThan(0);
      assertVocabulary(calls, chain, portmapRules);
      const after = await snapshot();
      const v4 = rulesIn(after.v4, chain);
      const allowed = annotation === "" ? [NODE_IP1, NODE_IP2, "127.0.0.1"] : annotation.includes("8080=") ? [NODE_IP1, NODE_IP2] : [NODE_IP2];
      expect(v4.length).toBeGreaterThan(0);
      for (const rule of v4) expect(allowed.map((ip) => `${ip}/32`)).toContain(/ -d (\S+)/.exec(rule)?.[1]);
      // Put portmap's chain back for the next round (and the cases above, whatever order they run in).
      await resetChain();
      expect(await snapshot()).toEqual(original);
    }
  });
});
