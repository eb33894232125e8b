// Stale UDP conntrack entries after a hostPort's rules changed. A UDP "connection" keeps the NAT decision of
// its first datagram for as long as datagrams keep coming, so a client that sends steadily never sees new
// rules: after a pod re-creation (new pod IP), a firewall reload or our own rewrite of portmap's rules, its
// datagrams keep going where the old rules sent them. The entries to drop are chosen from the rules:
// for every entry of the host port, the DNAT target the rules now give its original destination address;
// an entry that goes elsewhere is stale, and so is one that goes to this pod from an address the rules no
// longer map (portmap's unscoped rule caught it in the moment before we scoped it). Entries that already
// go where the rules say are kept: their flows continue untouched.
import { readFileSync } from "node:fs";
import { type Family, parseIp } from "../core/ip.js";
import { destinationOf, dnatOf, dportOf, protocolOf, type Rule } from "../core/rule.js";
import { type RunResult, run } from "../host/run.js";

export interface UdpRule {
  /** Destination address without prefix; undefined: every local address. */
  destination: string | undefined;
  /** `ip:port` / `[ip6]:port` as in --to-destination. */
  target: string;
}

/** The UDP DNAT rules of a chain, per host port, in order. */
function udpRules(rules: readonly Rule[]): Map<number, UdpRule[]> {
  const out = new Map<number, UdpRule[]>();
  for (const rule of rules) {
    const target = dnatOf(rule);
    const port = dportOf(rule);
    if (protocolOf(rule) !== "udp" || !target || port === undefined) continue;
    out.set(port, [...(out.get(port) ?? []), { destination: destinationOf(rule), target }]);
  }
  return out;
}

export interface UdpChange {
  hostPort: number;
  /** The rules for the port now (possibly none). */
  rules: UdpRule[];
  /** Every target the port had before or has now: this chain's pods. */
  targets: Set<string>;
}

const same = (a: readonly UdpRule[], b: readonly UdpRule[]) =>
  a.length === b.length && a.every((r, i) => r.destination === b[i]?.destination && r.target === b[i]?.target);

/** UDP host ports whose DNAT rules differ between the chain before and after a write. */
export function udpChanges(before: readonly Rule[], after: readonly Rule[]): UdpChange[] {
  const old = udpRules(before);
  const now = udpRules(after);
  return [...new Set([...old.keys(), ...now.keys()])].flatMap((hostPort) => {
    const was = old.get(hostPort) ?? [];
    const is = now.get(hostPort) ?? [];
    return same(was, is) ? [] : [{ hostPort, rules: is, targets: new Set([...was, ...is].map((r) => r.target)) }];
  });
}

export interface ConntrackEntry {
  /** The original tuple, as `conntrack -D` selects it. */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Where the reply comes from: the DNAT target (or the original destination when not translated). */
  replyTarget: string;
}

const hostPortText = (ip: string, port: string) => (ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`);

/** `conntrack -L` lines (protocol udp): original tuple, then the reply tuple. */
export function parseConntrack(text: string): ConntrackEntry[] {
  return text.split("\n").flatMap((line) => {
    const fields = [...line.matchAll(/\b(src|dst|sport|dport)=(\S+)/g)].map((m) => [m[1], m[2]] as const);
    if (!line.startsWith("udp") || fields.length < 8) return [];
    const v = (i: number) => fields[i]?.[1] as string;
    const [src, dst, sport, dport, replySrc, , replySport] = [v(0), v(1), v(2), v(3), v(4), v(5), v(6)];
    return [{ src, dst, sport: Number(sport), dport: Number(dport), replyTarget: hostPortText(replySrc, replySport) }];
  });
}

/** The entries of a changed host port that the rules would no longer give the same destination. */
export function staleEntries(entries: readonly ConntrackEntry[], change: UdpChange): ConntrackEntry[] {
  return entries.filter((e) => {
    if (e.dport !== change.hostPort) return false;
    const expected = change.rules.find((r) => r.destination === undefined || r.destination === e.dst)?.target;
    return expected === undefined ? change.targets.has(e.replyTarget) : e.replyTarget !== expected;
  });
}

const FAMILY_ARG: Record<Family, string> = { 4: "ipv4", 6: "ipv6" };

/**
 * /proc/net/nf_conntrack (every flow of every protocol) as `conntrack -L -f <family>` prints it: the leading
 * "ipv4     2 " dropped, IPv6 addresses (printed in full by the kernel) in the tool's canonical form.
 */
export function procConntrack(text: string, family: Family): string {
  const prefix = `${FAMILY_ARG[family]} `;
  return text
    .split("\n")
    .filter((line) => line.startsWith(prefix))
    .map((line) => {
      const rest = line.replace(/^\S+\s+\d+\s+/, "");
      return family === 4
        ? rest
        : rest.replace(/\b(src|dst)=(\S+)/g, (_m, key: string, ip: string) => `${key}=${parseIp(ip)?.text ?? ip}`);
    })
    .join("\n");
}

/** The kernel's table of every flow, as /proc prints it; undefined: the tool lists them. */
export type ConntrackSource = () => string | undefined;

// Reading the file takes well under a millisecond with few flows, and ~6 ms with 3,000 (500 KB), where
// starting `conntrack -L` costs an ADD 12–21 ms; a busier node's table is left to the tool, which filters
// as it lists.
const PROC_MAX_FLOWS = 5_000;

/**
 * /proc/net/nf_conntrack, where CONFIG_NF_CONNTRACK_PROCFS offers it and it is small, read once however many
 * families ask (a dual-stack pod's ADD).
 */
export function procSource(
  table = "/proc/net/nf_conntrack",
  count = "/proc/sys/net/netfilter/nf_conntrack_count",
): ConntrackSource {
  let read: { text: string | undefined } | undefined;
  return () => {
    read ??= { text: readTable(table, count) };
    return read.text;
  };
}

function readTable(table: string, count: string): string | undefined {
  try {
    if (Number(readFileSync(count, "utf8")) > PROC_MAX_FLOWS) return undefined;
    return readFileSync(table, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * The lines of a listing that may be flows to these ports (original or reply direction: the parser tells),
 * picked before any parsing, which costs ~9 ms for a table of 3,000 flows.
 */
export function linesToPorts(text: string, ports: readonly number[]): string {
  const dport = new RegExp(` dport=(?:${ports.join("|")})(?: |$)`);
  return text
    .split("\n")
    .filter((line) => dport.test(line))
    .join("\n");
}
// Listing a busy node's UDP flows takes well under a second; a conntrack stuck longer is given up (best effort).
const LIMIT_MS = 10_000;

export interface Rewrite {
  before: readonly Rule[];
  after: readonly Rule[];
}

/**
 * Deletes the stale entries of every UDP host port whose rules changed in the rewrites of one family: one
 * listing of the family's UDP entries, then one deletion per stale entry. Best effort: without the conntrack
 * tool, or when it fails, it says so through `warn` and returns.
 */
export async function dropStaleUdp(
  family: Family,
  rewrites: readonly Rewrite[],
  warn: (text: string) => void,
  source = procSource(),
): Promise<number> {
  const changes = rewrites.flatMap((r) => udpChanges(r.before, r.after));
  if (changes.length === 0) return 0;
  const base = ["-f", FAMILY_ARG[family], "-p", "udp"];
  // A pod's ADD changes a port or two: list just that port, not every UDP flow of a busy node.
  const only = changes.length === 1 ? ["--orig-port-dst", String(changes[0]?.hostPort)] : [];
  const notUsable = (err: Error) =>
    warn(
      `conntrack not usable (${err.message}): stale UDP conntrack entries of hostPort ${changes.map((c) => c.hostPort).join(", ")} are not removed`,
    );
  const ports = changes.map((c) => c.hostPort);
  const table = source();
  let listing = table === undefined ? undefined : procConntrack(linesToPorts(table, ports), family);
  if (listing === undefined) {
    let listed: RunResult;
    try {
      listed = await run("conntrack", ["-L", ...base, ...only], { timeoutMs: LIMIT_MS });
    } catch (err) {
      notUsable(err as Error);
      return 0;
    }
    if (listed.code !== 0) {
      warn(`conntrack -L failed (exit ${listed.code}): ${listed.stderr.trim()}`);
      return 0;
    }
    listing = linesToPorts(listed.stdout, ports);
  }
  const entries = parseConntrack(listing);
  let dropped = 0;
  for (const e of changes.flatMap((c) => staleEntries(entries, c))) {
    const args = [
      "-D",
      ...base,
      "--orig-src",
      e.src,
      "--orig-dst",
      e.dst,
      "--orig-port-src",
      String(e.sport),
      "--orig-port-dst",
      String(e.dport),
    ];
    let r: RunResult;
    try {
      r = await run("conntrack", args, { timeoutMs: LIMIT_MS });
    } catch (err) {
      // Listed from /proc, but there is no tool to delete with.
      notUsable(err as Error);
      break;
    }
    // Exit 1 with "0 flow entries": the entry expired or was deleted meanwhile.
    if (r.code === 0) dropped++;
    else if (!/0 flow entries/.test(r.stderr))
      warn(`conntrack ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return dropped;
}
