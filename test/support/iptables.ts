// Reading the nat table inside a namespace with the iptables binaries on PATH (the ones portmap uses).
import { createHash } from "node:crypto";
import { mkdtempSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { RunOptions } from "./exec.js";
import { nsRunOk } from "./netns.js";
import { pluginPath } from "./paths.js";

export type Family = 4 | 6;

export interface IptablesOptions {
  /** PATH to find iptables/ip6tables(-save) in (default: ours), e.g. legacyIptablesPath(). */
  path?: string;
}

function runOpts(opts: IptablesOptions): RunOptions {
  return opts.path === undefined ? {} : { env: { ...process.env, PATH: opts.path } };
}

/**
 * A PATH whose first directory holds iptables*, ip6tables* links to the legacy (x_tables) variants, so that
 * portmap, the plugin and these helpers all use iptables-legacy. The directory lives in `parent`.
 */
export function legacyIptablesPath(parent: string): string {
  const dir = mkdtempSync(join(parent, "legacy-bin-"));
  for (const fam of ["iptables", "ip6tables"]) {
    for (const suffix of ["", "-save", "-restore"])
      symlinkSync(`/usr/sbin/${fam}-legacy${suffix}`, join(dir, `${fam}${suffix}`));
  }
  return `${dir}:${pluginPath()}`;
}

/** portmap's per-pod chain: ("CNI-DN-" + sha512hex(networkName + containerID)) cut to 28 characters. */
export function dnChainName(networkName: string, containerID: string): string {
  return `CNI-DN-${createHash("sha512")
    .update(networkName + containerID)
    .digest("hex")}`.slice(0, 28);
}

/**
 * `iptables-save -t nat` (or ip6tables-save) inside `ns`, without the comment lines (they carry
 * timestamps) and with chain counters zeroed, as lines.
 */
export async function natSave(ns: string, family: Family = 4, opts: IptablesOptions = {}): Promise<string[]> {
  const out = await nsRunOk(ns, family === 4 ? "iptables-save" : "ip6tables-save", ["-t", "nat"], runOpts(opts));
  return out
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.replace(/\[\d+:\d+\]$/, "[0:0]"));
}

/**
 * The rules of one nat chain as `-A CHAIN …` lines, or null when the chain does not exist. Read from
 * iptables-save: iptables-nft 1.8.9's `-S CHAIN` calls a missing chain "incompatible".
 */
export async function chainRules(
  ns: string,
  chain: string,
  family: Family = 4,
  opts: IptablesOptions = {},
): Promise<string[] | null> {
  const save = await natSave(ns, family, opts);
  return save.some((l) => l.startsWith(`:${chain} `)) ? rulesIn(save, chain) : null;
}

/** The `-A CHAIN …` lines of a natSave() dump. */
export function rulesIn(save: readonly string[], chain: string): string[] {
  return save.filter((l) => l.startsWith(`-A ${chain} `));
}

/** A natSave() dump without the `-A CHAIN …` lines of `chain` (its `:CHAIN` declaration stays). */
export function withoutRulesOf(save: readonly string[], chain: string): string[] {
  return save.filter((l) => !l.startsWith(`-A ${chain} `));
}

/** Every line of a dump that mentions the chain (declaration, its rules, jumps to it). */
export function linesMentioning(save: readonly string[], chain: string): string[] {
  return save.filter((l) => l.includes(chain));
}

/** The `-d` destinations of rules, e.g. ["192.0.2.11/32", …]; rules without -d give "". */
export function destinations(rules: readonly string[]): string[] {
  return rules.map((r) => / -d (\S+)/.exec(r)?.[1] ?? "");
}

export interface MappingRuleSpec {
  chain: string;
  family: Family;
  /** The pod subnet (hairpin mark source), e.g. 10.244.1.0/24. */
  podSubnet: string;
  /** The pod address, e.g. 10.244.1.2. */
  podIP: string;
  hostPort: number;
  containerPort: number;
  protocol?: "tcp" | "udp";
  /** A specific host IP (→ `-d ip/32|/128`), or undefined for none. */
  hostIP?: string;
}

/**
 * The rules (iptables -S form) that portmap (default options: snat on, masqAll off) writes for one mapping:
 * hairpin mark, localhost mark (IPv4 only), DNAT — each with `-d` when a host IP is given.
 */
export function portmapRules(spec: MappingRuleSpec): string[] {
  const proto = spec.protocol ?? "tcp";
  const dst = spec.hostIP === undefined ? "" : ` -d ${spec.hostIP}/${spec.family === 4 ? 32 : 128}`;
  const match = `-p ${proto} -m ${proto} --dport ${spec.hostPort}`;
  const to = spec.family === 4 ? `${spec.podIP}:${spec.containerPort}` : `[${spec.podIP}]:${spec.containerPort}`;
  const rules = [`-A ${spec.chain} -s ${spec.podSubnet}${dst} ${match} -j CNI-HOSTPORT-SETMARK`];
  if (spec.family === 4) rules.push(`-A ${spec.chain} -s 127.0.0.1/32${dst} ${match} -j CNI-HOSTPORT-SETMARK`);
  rules.push(`-A ${spec.chain}${dst} ${match} -j DNAT --to-destination ${to}`);
  return rules;
}

/** portmapRules() for each host IP in turn (a multi-IP scoped mapping). */
export function scopedRules(spec: Omit<MappingRuleSpec, "hostIP">, hostIPs: readonly string[]): string[] {
  return hostIPs.flatMap((hostIP) => portmapRules({ ...spec, hostIP }));
}
