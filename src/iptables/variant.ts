// Which implementation an iptables binary is — iptables-nft (the nf_tables API) or iptables-legacy (x_tables) —
// told from the program its links end at, without running it: a few stat calls, cheap enough for every hostPort
// ADD to record the variant of the `iptables` it shares with portmap (the runtime's PATH). Synchronous node:fs on
// purpose: ADD loads nothing more for it.
import { realpathSync, statSync } from "node:fs";
import { basename, delimiter, isAbsolute, join } from "node:path";
import { IPTABLES_VARIANTS, type IptablesVariant } from "../core/node.js";

// The multi-call programs every iptables ≥ 1.8 links its commands to (1.6 had xtables-multi, legacy only), and
// the variant commands themselves where a distribution ships them as files.
const PROGRAMS: Readonly<Record<string, IptablesVariant>> = {
  "xtables-nft-multi": "nft",
  "xtables-legacy-multi": "legacy",
  "xtables-multi": "legacy",
  "iptables-nft": "nft",
  "iptables-legacy": "legacy",
};

/** The first executable `name` in the absolute directories of `path`, as `which` finds it; undefined: none. */
export function onPath(name: string, path = process.env["PATH"] ?? ""): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!isAbsolute(dir)) continue;
    const file = join(dir, name);
    // No exception for the directories that lack it (most of them): each would cost more than the lookup.
    const stat = statSync(file, { throwIfNoEntry: false });
    if (stat?.isFile() && (stat.mode & 0o111) !== 0) return file;
  }
  return undefined;
}

/** The variant `file` is; undefined when its links end elsewhere (a wrapper that picks one when it runs). */
export function variantOf(file: string): IptablesVariant | undefined {
  try {
    return PROGRAMS[basename(realpathSync.native(file))];
  } catch {
    return undefined;
  }
}

/** The variant of the `iptables` on `path`: on the runtime's PATH, the one portmap runs. */
export function pathVariant(path?: string): IptablesVariant | undefined {
  const file = onPath("iptables", path);
  return file === undefined ? undefined : variantOf(file);
}

/** Whether `path` has both variants' iptables and iptables-restore, by name: both nat tables can be read. */
export const bothVariants = (path?: string): boolean =>
  IPTABLES_VARIANTS.every((v) => onPath(`iptables-${v}`, path) !== undefined && onPath(`iptables-${v}-restore`, path));
