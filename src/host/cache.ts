// libcni's result cache (<cacheDir>/results/<network>-<containerID>-<ifname>): what the runtime set up, with
// the conflist it used, its CNI_ARGS, capability arguments and final result. Every file is untrusted input: a
// malformed one is reported and skipped.
import { lstat, readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import * as z from "zod/mini";
import { SUPPORTED_VERSIONS } from "../core/config.js";
import { isContainerId, isInterfaceName, kubernetesPod } from "../core/names.js";

export const DEFAULT_CACHE_DIR = "/var/lib/cni";
// A cached attachment is a few KiB; anything near this is not one.
const MAX_FILE_BYTES = 1 << 20;
// Network names go into iptables comments and restore payloads: printable, no quotes or backslashes.
const NETWORK_NAME = /^[\x21\x23-\x5b\x5d-\x7e]{1,255}$/;

const CacheSchema = z.looseObject({
  kind: z.literal("cniCacheV1"),
  containerId: z.string(),
  config: z.string(),
  ifName: z.string(),
  networkName: z.string(),
  cniArgs: z.optional(z.nullable(z.array(z.tuple([z.string(), z.string()])))),
  capabilityArgs: z.optional(z.nullable(z.record(z.string(), z.unknown()))),
  result: z.optional(z.nullable(z.record(z.string(), z.unknown()))),
});

const PluginSchema = z.looseObject({ type: z.string() });
// A conflist of spec 1.1.0 may give cniVersions (the versions it is valid for) instead of cniVersion.
const ConfSchema = z.looseObject({
  name: z.string(),
  cniVersion: z.optional(z.string()),
  cniVersions: z.optional(z.array(z.string())),
  plugins: z.optional(z.array(PluginSchema)),
});

/** The version libcni runs a list with: cniVersion, else the highest of cniVersions we speak too. */
function listVersion(conf: { cniVersion?: string | undefined; cniVersions?: string[] | undefined }): string {
  if (conf.cniVersion !== undefined) return conf.cniVersion;
  const known = (conf.cniVersions ?? []).filter((v) => (SUPPORTED_VERSIONS as readonly string[]).includes(v));
  const highest = known
    .sort((a, b) => SUPPORTED_VERSIONS.indexOf(a as never) - SUPPORTED_VERSIONS.indexOf(b as never))
    .at(-1);
  if (highest === undefined)
    throw new Error(
      `config has no cniVersion and no supported cniVersions (${JSON.stringify(conf.cniVersions ?? null)})`,
    );
  return highest;
}

export interface CachedAttachment {
  file: string;
  /** When libcni wrote it: the order of ADDs. */
  mtimeMs: number;
  network: string;
  cniVersion: string;
  containerId: string;
  ifname: string;
  /** The conflist's entries (a single-plugin config is a list of one). */
  plugins: Array<Record<string, unknown> & { type: string }>;
  cniArgs: Map<string, string>;
  capabilityArgs: Record<string, unknown>;
  result: Record<string, unknown> | undefined;
}

export interface CacheRead {
  dir: string;
  /** False when the results directory does not exist: nothing can be said about liveness. */
  present: boolean;
  attachments: CachedAttachment[];
  /** Files that are not readable attachments: never taken as "no attachment" (see ownedByUnreadable). */
  unreadable: string[];
  problems: string[];
}

function issue(error: z.core.$ZodError): string {
  const first = error.issues[0];
  return first ? `${first.path.join(".") || "(top)"}: ${first.message}` : "invalid";
}

/** One cache file's text; throws an Error saying what is wrong with it. */
export function parseCacheFile(text: string, file: string, mtimeMs: number): CachedAttachment {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = z.safeParse(CacheSchema, json);
  if (!parsed.success) throw new Error(`not a libcni cache entry (${issue(parsed.error)})`);
  const c = parsed.data;
  if (!isContainerId(c.containerId))
    throw new Error(`containerId ${JSON.stringify(c.containerId)} is not a container ID`);
  if (!isInterfaceName(c.ifName)) throw new Error(`ifName ${JSON.stringify(c.ifName)} is not an interface name`);
  if (!NETWORK_NAME.test(c.networkName))
    throw new Error(`networkName ${JSON.stringify(c.networkName)} is not a usable network name`);
  let conf: unknown;
  try {
    conf = JSON.parse(Buffer.from(c.config, "base64").toString("utf8"));
  } catch (err) {
    throw new Error("config is not base64 of a JSON network configuration", { cause: err });
  }
  const list = z.safeParse(ConfSchema, conf);
  if (!list.success) throw new Error(`config is not a network configuration (${issue(list.error)})`);
  if (list.data.name !== c.networkName)
    throw new Error(
      `config names network ${JSON.stringify(list.data.name)}, the entry ${JSON.stringify(c.networkName)}`,
    );
  return {
    file,
    mtimeMs,
    network: c.networkName,
    cniVersion: listVersion(list.data),
    containerId: c.containerId,
    ifname: c.ifName,
    plugins:
      list.data.plugins ?? (typeof list.data["type"] === "string" ? [{ ...list.data, type: list.data["type"] }] : []),
    cniArgs: new Map(c.cniArgs ?? []),
    capabilityArgs: c.capabilityArgs ?? {},
    result: c.result ?? undefined,
  };
}

/** Files parsed by an earlier read, by path: reused while their mtime and size are the same (the keeper's resync). */
export type CacheMemo = Map<string, { mtimeMs: number; size: number; attachment: CachedAttachment }>;

/** Every readable attachment of the cache, oldest first (the order the runtime added them). */
export async function readResultCache(cacheDir: string, memo?: CacheMemo): Promise<CacheRead> {
  const dir = join(cacheDir, "results");
  const read: CacheRead = { dir, present: true, attachments: [], unreadable: [], problems: [] };
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { ...read, present: false };
    throw new Error(`cannot read the result cache ${dir}: ${(err as Error).message}`, { cause: err });
  }
  for (const name of names) {
    const file = join(dir, name);
    try {
      const st = await lstat(file);
      if (!st.isFile()) throw new Error("not a regular file");
      if (st.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      const known = memo?.get(file);
      if (known && known.mtimeMs === st.mtimeMs && known.size === st.size) {
        read.attachments.push(known.attachment);
        continue;
      }
      const attachment = parseCacheFile(await readFile(file, "utf8"), file, st.mtimeMs);
      memo?.set(file, { mtimeMs: st.mtimeMs, size: st.size, attachment });
      read.attachments.push(attachment);
    } catch (err) {
      read.unreadable.push(file);
      read.problems.push(`unreadable cache file ${file}: ${(err as Error).message} (its container's chains are kept)`);
    }
  }
  if (memo) {
    const present = new Set(names);
    for (const file of memo.keys()) if (!present.has(basename(file))) memo.delete(file);
  }
  read.attachments.sort((a, b) => a.mtimeMs - b.mtimeMs || a.file.localeCompare(b.file));
  return read;
}

/**
 * Whether an unreadable cache file may be this container's attachment: libcni names it
 * <network>-<containerID>-<ifname>. Such a container is live as far as anyone can tell.
 */
export function ownedByUnreadable(cache: CacheRead, network: string | null, containerId: string): boolean {
  // Without a network (portmap's nftables rules name none), any network's file of that container.
  const owns = (name: string) =>
    network === null ? name.includes(`-${containerId}-`) : name.startsWith(`${network}-${containerId}-`);
  return cache.unreadable.some((file) => owns(basename(file)));
}

/** Whether an operator command given `--network` names (none: every network) acts on `network` (null: unknown). */
export function selectsNetwork(networks: readonly string[], network: string | null): boolean {
  return networks.length === 0 || (network !== null && networks.includes(network));
}

/** How status and reports name the pod: namespace/name from kubelet's CNI_ARGS, else the container ID. */
export function attachmentLabel(a: CachedAttachment): string {
  return kubernetesPod(a.cniArgs) ?? a.containerId;
}

/** How the keeper's lines name one attachment: "default/web (cbr0, 3f2a…)". */
export const attachmentRef = (a: CachedAttachment): string => `${attachmentLabel(a)} (${a.network}, ${a.containerId})`;
