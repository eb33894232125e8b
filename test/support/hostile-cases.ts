// Hostile and broken inputs for the plugin, each with the CNI error code it must give: shared by the e2e
// files that feed them to the real binary (hostile.test.ts behind iptables stand-ins, nftables.test.ts
// behind an nft stand-in).
import { ANNOTATIONS_CAP, CLUSTER_IP, containerdMapping, FOREIGN_IP, HOST_IP_ANNOTATION, NODE_IP2 } from "./harness.js";

export type Json = Record<string, unknown>;

export interface Case {
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
const withMappings = (base: Json, portMappings: unknown[]): Json => ({
  ...base,
  runtimeConfig: { ...(base["runtimeConfig"] as Json), portMappings },
});
export const withAnnotation = (base: Json, value: unknown): Json => ({
  ...base,
  runtimeConfig: { ...(base["runtimeConfig"] as Json), [ANNOTATIONS_CAP]: { [HOST_IP_ANNOTATION]: value } },
});
const withHostIP = (base: Json, hostIP: unknown): Json =>
  withMappings(base, [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: hostIP }]);
const withPort = (key: string, value: unknown) => (base: Json) =>
  withMappings(base, [{ HostPort: 8080, ContainerPort: 80, Protocol: "tcp", [key]: value }]);

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

const tenThousand = Array.from({ length: 10_000 }, (_, i) => `192.0.${2 + Math.floor(i / 250)}.${(i % 250) + 1}`).join(
  ",",
);

export const cases: Case[] = [
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
  {
    what: "stdin prevResult.ips not a list",
    code: 7,
    stdin: (b) => ({ ...b, prevResult: { ...(b["prevResult"] as Json), ips: { address: "x" } } }),
  },
  {
    what: "stdin portMappings an object",
    code: 7,
    stdin: (b) => ({ ...b, runtimeConfig: { portMappings: { HostPort: 8080 } } }),
  },
  { what: "stdin annotations not strings", code: 7, stdin: (b) => withAnnotation(b, 5) },
  { what: "stdin 10 MB", code: 6, stdin: (b) => ({ ...b, padding: "x".repeat(10 * 1024 * 1024) }) },
  {
    what: "stdin 10 MB of spaces after valid JSON",
    code: 6,
    stdin: (b) => JSON.stringify(b) + " ".repeat(10 * 1024 * 1024),
  },
  { what: "stdin nested 10,000 deep", code: [6, 7], stdin: deepText(10_000) },
  {
    what: "stdin nested 10,000 deep in cniVersion",
    code: [6, 7],
    stdin: nestedAt(10_000, (b, m) => ({ ...b, cniVersion: m })),
  },
  {
    what: "stdin nested 10,000 deep in runtimeConfig.portMappings",
    code: [6, 7],
    stdin: nestedAt(10_000, (b, m) => withMappings(b, [m])),
  },
  {
    what: "stdin nested 10,000 deep in the annotation",
    code: [6, 7],
    stdin: nestedAt(10_000, (b, m) => withAnnotation(b, m)),
  },
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
    stdin: (b) =>
      Buffer.concat([
        Buffer.from(`${JSON.stringify(b).slice(0, -1)},"x":"`),
        Buffer.from([0xc3, 0x28, 0xff]),
        Buffer.from('"}'),
      ]),
  },
  {
    what: "stdin UTF-16 (BOM)",
    code: 6,
    stdin: (b) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(JSON.stringify(b), "utf16le")]),
  },
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
  ).map(
    ([key, value]): Case => ({
      what: `portMapping ${key} ${JSON.stringify(value)}`,
      code: 7,
      stdin: withPort(key, value),
    }),
  ),
  {
    what: "portMappings duplicate (same hostPort/protocol, no hostIP)",
    code: 7,
    stdin: (b) => withMappings(b, [containerdMapping(8080, 80), containerdMapping(8080, 81)]),
  },
  {
    what: "portMappings duplicate, spec and containerd spelling",
    code: 7,
    stdin: (b) =>
      withMappings(b, [containerdMapping(8080, 80), { hostPort: 8080, containerPort: 80, protocol: "TCP" }]),
  },
  // host IPs from the runtime and the annotation
  ...badSyntaxIPs.map(
    (ip): Case => ({ what: `runtime hostIP ${JSON.stringify(ip)}`, code: 7, stdin: (b) => withHostIP(b, ip) }),
  ),
  ...badSyntaxIPs.map(
    (ip): Case => ({ what: `annotation ${JSON.stringify(ip)}`, code: 101, stdin: (b) => withAnnotation(b, ip) }),
  ),
  ...refusedIPs.map((ip): Case => ({ what: `runtime hostIP ${ip}`, code: 100, stdin: (b) => withHostIP(b, ip) })),
  ...refusedIPs.map((ip): Case => ({ what: `annotation ${ip}`, code: 100, stdin: (b) => withAnnotation(b, ip) })),
  ...refusedIPs.map(
    (ip): Case => ({ what: `annotation 8080/tcp=${ip}`, code: 100, stdin: (b) => withAnnotation(b, `8080/tcp=${ip}`) }),
  ),
  {
    what: "annotation: a good IP and a bad one",
    code: 101,
    stdin: (b) => withAnnotation(b, `${NODE_IP2},1.2.3.4 -j ACCEPT`),
  },
  {
    what: "annotation: a good IP and a refused one",
    code: 100,
    stdin: (b) => withAnnotation(b, `${NODE_IP2},${CLUSTER_IP}`),
  },
  { what: "annotation: port 0", code: 101, stdin: (b) => withAnnotation(b, `0=${NODE_IP2}`) },
  { what: "annotation: port 65536", code: 101, stdin: (b) => withAnnotation(b, `65536=${NODE_IP2}`) },
  { what: "annotation: protocol icmp", code: 101, stdin: (b) => withAnnotation(b, `8080/icmp=${NODE_IP2}`) },
  { what: "annotation: 10,000 entries", code: 101, stdin: (b) => withAnnotation(b, tenThousand) },
  { what: "annotation: 1 MB", code: 101, stdin: (b) => withAnnotation(b, `${NODE_IP2} `.repeat(80_000)) },
  // the administrator's configuration
  { what: "config defaultHostIP 0.0.0.0/0", code: 7, stdin: (b) => ({ ...b, defaultHostIP: "0.0.0.0/0" }) },
  { what: "config nodeIPs injection", code: 7, stdin: (b) => ({ ...b, nodeIPs: ["192.0.2.10 -j ACCEPT"] }) },
  {
    what: "config allowedHostCIDRs injection",
    code: 7,
    stdin: (b) => ({ ...b, allowedHostCIDRs: ["0.0.0.0/0 -j ACCEPT"] }),
  },
  { what: "config annotation key with space", code: 7, stdin: (b) => ({ ...b, annotation: "host ip" }) },
  { what: "config excludeInterfaces bad name", code: 7, stdin: (b) => ({ ...b, excludeInterfaces: ["kube ipvs0"] }) },
];
