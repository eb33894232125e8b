// Which iptables the node uses (nft or legacy), for a keeper that runs in a container carrying both: the
// choice kube-proxy's image makes (kubernetes-sigs/iptables-wrappers). kubelet marks its variant with the
// KUBE-IPTABLES-HINT chain in mangle; without it, the variant holding more rules wins; nft on a tie (an
// empty node). Then `iptables`, `ip6tables` and their -save/-restore resolve to it through a PATH directory.
import { mkdir, readdir, rm, symlink } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { run } from "../host/run.js";

export type Variant = "nft" | "legacy";

const HINT = /^:KUBE-IPTABLES-HINT /m;
const ruleLines = (save: string): number => save.split("\n").filter((l) => l.startsWith("-")).length;

/** Pure: the variant from `iptables-<variant>-save` output (the mangle table, and every table of both families). */
export function chooseVariant(saves: Record<Variant, { mangle: string; all: string }>): {
  variant: Variant;
  why: string;
} {
  if (HINT.test(saves.nft.mangle))
    return { variant: "nft", why: "kubelet's KUBE-IPTABLES-HINT chain is in nft's mangle table" };
  if (HINT.test(saves.legacy.mangle))
    return { variant: "legacy", why: "kubelet's KUBE-IPTABLES-HINT chain is in legacy's mangle table" };
  const legacy = ruleLines(saves.legacy.all);
  const nft = ruleLines(saves.nft.all);
  return legacy > nft
    ? { variant: "legacy", why: `${legacy} legacy rules against ${nft} nft rules` }
    : { variant: "nft", why: `${nft} nft rules against ${legacy} legacy rules` };
}

const TOOLS = [
  "iptables",
  "iptables-save",
  "iptables-restore",
  "ip6tables",
  "ip6tables-save",
  "ip6tables-restore",
] as const;
const LIMIT_MS = 10_000;

async function save(tool: string, args: string[]): Promise<string> {
  // A variant the kernel cannot serve (no nf_tables, no x_tables) has no rules: it loses.
  const r = await run(tool, args, { timeoutMs: LIMIT_MS }).catch(() => undefined);
  return r?.code === 0 ? r.stdout : "";
}

/** Reads both variants' tables and picks one. */
export async function detectVariant(): Promise<{ variant: Variant; why: string }> {
  const read = async (v: Variant) => {
    const [mangle, v4, v6] = await Promise.all([
      save(`iptables-${v}-save`, ["-t", "mangle"]),
      save(`iptables-${v}-save`, []),
      save(`ip6tables-${v}-save`, []),
    ]);
    return { mangle, all: v4 + v6 };
  };
  const [nft, legacy] = await Promise.all([read("nft"), read("legacy")]);
  return chooseVariant({ nft, legacy });
}

/**
 * Makes `dir` hold iptables, ip6tables and their -save/-restore as links to the chosen variant's programs
 * (found on `path`), and returns the PATH with `dir` first.
 */
export async function useVariant(variant: Variant, dir: string, path: string): Promise<string> {
  const dirs = path.split(delimiter).filter((d) => d !== "" && d !== dir);
  await mkdir(dir, { recursive: true });
  for (const old of await readdir(dir)) await rm(join(dir, old), { force: true });
  for (const tool of TOOLS) {
    const name = tool.replace(/^(ip6?tables)/, `$1-${variant}`);
    let found: string | undefined;
    for (const d of dirs) {
      if ((await readdir(d).catch(() => [] as string[])).includes(name)) {
        found = join(d, name);
        break;
      }
    }
    if (found === undefined) throw new Error(`${name} is not on PATH: this image cannot use iptables-${variant}`);
    await symlink(found, join(dir, tool));
  }
  return [dir, ...dirs].join(delimiter);
}
