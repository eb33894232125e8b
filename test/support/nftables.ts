// Reading portmap's nftables tables (`ip`/`ip6 cni_hostport`) inside a namespace, and the rules portmap's
// nftables backend writes, as `nft list` prints them.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Family } from "./iptables.js";
import { nsRun } from "./netns.js";

const NFT_FAMILY = { 4: "ip", 6: "ip6" } as const;

/** The destination portmap-hostip gives the rule of a mapping left with no host IP in a family (it matches nothing). */
export const NEVER_MATCHING_IP = { 4: "0.0.0.0", 6: "::" } as const;

/** `nft list chain <family> cni_hostport <chain>` as rule lines (no handles), or null when there is no such chain. */
export async function nftChain(ns: string, family: Family, chain = "hostports"): Promise<string[] | null> {
  const r = await nsRun(ns, "nft", ["list", "chain", NFT_FAMILY[family], "cni_hostport", chain], { timeoutMs: 15_000 });
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return null;
    throw new Error(`nft list chain ${NFT_FAMILY[family]} cni_hostport ${chain}: ${r.stderr.trim()}`);
  }
  return r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !/^(table|chain|type) |^}$/.test(l));
}

/** The rules of one container (comment = its ID) in `hostports`, or null when there is no such chain. */
export async function nftPodRules(ns: string, family: Family, containerID: string): Promise<string[] | null> {
  const rules = await nftChain(ns, family);
  return rules ? rules.filter((l) => l.endsWith(` comment "${containerID}"`)) : null;
}

/** Whether each line of `nft list table` output is a rule of chain `hostports` of one container. */
export function hostportsRuleMask(table: readonly string[], containerID: string): boolean[] {
  let chain = "";
  return table.map((l) => {
    chain = /^\s*chain (\S+) \{/.exec(l)?.[1] ?? chain;
    return chain === "hostports" && l.endsWith(` comment "${containerID}"`);
  });
}

/** Both `cni_hostport` tables as `nft list table` prints them (empty when absent). */
export async function nftTables(ns: string): Promise<{ v4: string[]; v6: string[] }> {
  const table = async (family: Family) => {
    const r = await nsRun(ns, "nft", ["list", "table", NFT_FAMILY[family], "cni_hostport"], { timeoutMs: 15_000 });
    if (r.code !== 0 && /No such file or directory/.test(r.stderr)) return [];
    if (r.code !== 0) throw new Error(`nft list table ${NFT_FAMILY[family]} cni_hostport: ${r.stderr.trim()}`);
    return r.stdout.split("\n").filter((l) => l.trim() !== "");
  };
  return { v4: await table(4), v6: await table(6) };
}

export interface NftRuleSpec {
  family: Family;
  podIP: string;
  hostPort: number;
  containerPort: number;
  protocol?: "tcp" | "udp";
  containerID: string;
}

/** The `hostports` rule portmap's nftables backend writes for one mapping, with `ip daddr` for a host IP. */
export function nftPortmapRule(spec: NftRuleSpec, hostIP?: string): string {
  const daddr = hostIP === undefined ? "" : `${NFT_FAMILY[spec.family]} daddr ${hostIP} `;
  const to = spec.family === 4 ? `${spec.podIP}:${spec.containerPort}` : `[${spec.podIP}]:${spec.containerPort}`;
  return `${daddr}${spec.protocol ?? "tcp"} dport ${spec.hostPort} dnat to ${to} comment "${spec.containerID}"`;
}

/**
 * An `nft` stand-in (first on PATH: `${dir}:…`) that, before each of the first `races` batches (`nft -j …`),
 * deletes every rule of both `hostports` chains and adds it back: what a DEL and ADD of a pod between the
 * plugin's read and its batch do (same rules, new handles). Then it runs the real nft.
 */
export function racingNft(parent: string, races: number): { dir: string; racesLeft(): number } {
  const dir = mkdtempSync(join(parent, "racing-nft-"));
  writeFileSync(join(dir, "races"), `${races}\n`);
  const script = [
    "#!/bin/bash",
    `dir=${dir}`,
    // Coreutils after the real nft: the single executable's suite runs on a PATH without /usr/bin.
    'export PATH="${PATH#$dir:}:/usr/bin:/bin"',
    'left=$(cat "$dir/races")',
    'if [ "$1" = "-j" ] && [ "$left" -gt 0 ]; then',
    '  echo $((left - 1)) > "$dir/races"',
    "  for family in ip ip6; do",
    `    nft -a list chain $family cni_hostport hostports 2>/dev/null | grep ' comment "' | while read -r line; do`,
    '      nft delete rule $family cni_hostport hostports handle "${line##*# handle }"',
    "      nft add rule $family cni_hostport hostports ${line% # handle*}",
    "    done",
    "  done",
    "fi",
    'exec nft "$@"',
    "",
  ].join("\n");
  writeFileSync(join(dir, "nft"), script, { mode: 0o755 });
  return { dir, racesLeft: () => Number(readFileSync(join(dir, "races"), "utf8")) };
}
