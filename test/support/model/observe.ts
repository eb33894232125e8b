// Reading the model test's node: every table a portmap may write (both iptables variants' nat tables, portmap's
// nftables tables, both families), each pod's rules there as the model compares them (coverage keys), the
// traces of pods where they must not be, and every rule that is neither portmap's nor ours.

import { dnChainName } from "../iptables.js";
import { nsRun } from "../netns.js";
import { coverageKey, entry, FAMILIES, type Family, type Proto, type RuleTable } from "./policy.js";

/** A pod as the reader needs it: its chain name and container ID, and the table its portmap uses. */
export interface PodRef {
  name: string;
  id: string;
  network: string;
  table: RuleTable;
}

export interface NodeRead {
  /** Per pod ID, its rules' coverage in its own table, per family. */
  coverage: Map<string, Record<Family, string>>;
  /** What breaks an invariant by itself: a pod's rules in a table its portmap does not use, unknown chains. */
  misplaced: string[];
  /** Every line that is neither portmap's nor ours (the kube-proxy-like rules, the filter table, nft's). */
  foreign: string[];
  /** The raw dumps, for a failure report. */
  dumps: Record<string, string[]>;
}

const SAVE = { "iptables-nft": "nft", "iptables-legacy": "legacy" } as const;
const NFT_FAMILY = { 4: "ip", 6: "ip6" } as const;
/** A table of our own in nftables that stands for whatever else a node keeps there. */
export const FOREIGN_NFT_TABLE = ["inet", "pmh_foreign"] as const;
/** The never-matching destination the plugin gives a family left without host IPs (portmap's count holds). */
const NEVER = new Set(["0.0.0.0", "::"]);

async function dump(ns: string, cmd: string, args: readonly string[]): Promise<string[]> {
  const r = await nsRun(ns, cmd, args, { timeoutMs: 30_000 });
  if (r.code !== 0 && !/No such file or directory/.test(r.stderr))
    throw new Error(`${cmd} ${args.join(" ")} in ${ns} exited ${r.code}: ${r.stderr.trim()}`);
  return r.code === 0
    ? r.stdout
        .split("\n")
        .filter((l) => l.trim() !== "" && !l.startsWith("#"))
        .map((l) => l.replace(/\[\d+:\d+\]$/, "[0:0]"))
    : [];
}

/** The `*nat` section of an iptables-save dump of every table. */
function natSection(lines: readonly string[]): string[] {
  const start = lines.indexOf("*nat");
  if (start < 0) return [];
  const end = lines.indexOf("COMMIT", start);
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** A pod's DNAT rules in an iptables nat table, as coverage: unreachable ones (no jump to the chain) marked. */
function iptablesCoverage(nat: readonly string[], chain: string): string {
  const jumped = nat.some((l) => l.startsWith("-A CNI-HOSTPORT-DNAT ") && l.endsWith(` -j ${chain}`));
  const out: string[] = [];
  for (const l of nat) {
    if (!l.startsWith(`-A ${chain} `)) continue;
    const m = / -j DNAT --to-destination (\S+)$/.exec(l);
    if (!m) continue;
    const dest = / -d (\S+?)\/\d+ /.exec(l)?.[1] ?? "*";
    const proto = / -p (tcp|udp) /.exec(l)?.[1] as Proto;
    const port = Number(/--dport (\d+)/.exec(l)?.[1]);
    out.push(`${entry({ proto, hostPort: port }, dest, m[1] as string)}${jumped ? "" : "(unreachable)"}`);
  }
  return coverageKey(out);
}

/** A container's DNAT rules in nftables `hostports` (comment = its ID), as coverage. */
function nftCoverage(table: readonly string[], id: string): string {
  const out: string[] = [];
  let chain = "";
  for (const l of table) {
    chain = /^\s*chain (\S+) \{/.exec(l)?.[1] ?? chain;
    if (chain !== "hostports" || !l.endsWith(` comment "${id}"`)) continue;
    const m = /(?:ip6? daddr (\S+) )?(tcp|udp) dport (\d+) dnat (?:ip6? )?to (\S+)/.exec(l);
    if (!m || NEVER.has(m[1] ?? "")) continue;
    out.push(entry({ proto: m[2] as Proto, hostPort: Number(m[3]) }, m[1] ?? "*", m[4] as string));
  }
  return coverageKey(out);
}

const mentionsIptables = (l: string, chain: string, id: string) => l.includes(chain) || l.includes(`id: \\"${id}\\"`);
const mentionsNft = (l: string, id: string) => l.includes(`"${id}"`);

/** Reads every table of the node namespace `ns` and what each of `pods` has in them. */
export async function readNode(ns: string, pods: readonly PodRef[]): Promise<NodeRead> {
  const dumps: Record<string, string[]> = {};
  for (const variant of ["iptables-nft", "iptables-legacy"] as const)
    for (const f of FAMILIES)
      dumps[`${variant} IPv${f}`] = await dump(ns, `${f === 4 ? "iptables" : "ip6tables"}-${SAVE[variant]}-save`, []);
  for (const f of FAMILIES)
    dumps[`nftables IPv${f}`] = await dump(ns, "nft", ["list", "table", NFT_FAMILY[f], "cni_hostport"]);
  dumps["nftables foreign"] = await dump(ns, "nft", ["list", "table", ...FOREIGN_NFT_TABLE]);

  const coverage = new Map<string, Record<Family, string>>();
  const misplaced: string[] = [];
  const known = new Set<string>();
  for (const p of pods) {
    const chain = dnChainName(p.network, p.id);
    known.add(chain);
    const cov: Record<Family, string> = { 4: "", 6: "" };
    for (const f of FAMILIES) {
      for (const table of ["iptables-nft", "iptables-legacy", "nftables"] as const) {
        const lines = dumps[`${table} IPv${f}`] ?? [];
        const mine =
          table === "nftables"
            ? lines.filter((l) => mentionsNft(l, p.id))
            : natSection(lines).filter((l) => mentionsIptables(l, chain, p.id));
        if (table !== p.table) {
          for (const l of mine) misplaced.push(`${p.name} (${p.table}) has a rule in ${table} IPv${f}: ${l.trim()}`);
          continue;
        }
        cov[f] = table === "nftables" ? nftCoverage(lines, p.id) : iptablesCoverage(natSection(lines), chain);
      }
    }
    coverage.set(p.id, cov);
  }
  const ids = new Set(pods.map((p) => p.id));
  for (const [name, lines] of Object.entries(dumps)) {
    if (name.startsWith("iptables"))
      for (const l of natSection(lines)) {
        const chain = /^:(CNI-DN-\S+) /.exec(l)?.[1];
        if (chain && !known.has(chain)) misplaced.push(`${name}: a chain of no pod of the run: ${l}`);
      }
    else if (name !== "nftables foreign")
      for (const l of lines) {
        const id = / comment "([^"]+)"$/.exec(l)?.[1];
        if (id !== undefined && !ids.has(id)) misplaced.push(`${name}: a rule of no pod of the run: ${l.trim()}`);
      }
  }
  // Rules and user chains; a table's header and built-in chains come with its first rule, whoever writes it.
  const foreign = Object.entries(dumps)
    .filter(([name]) => name.startsWith("iptables") || name === "nftables foreign")
    .flatMap(([name, lines]) =>
      lines
        .filter((l) => !l.includes("CNI-") && !/^(\*|COMMIT$|:\S+ (ACCEPT|DROP) )/.test(l))
        .map((l) => `${name}: ${l}`),
    );
  return { coverage, misplaced, foreign, dumps };
}
