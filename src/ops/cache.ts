// libcni's result cache (<cacheDir>/results/<network>-<containerID>-<ifname>): what the runtime set up, with
// the conflist it used, its CNI_ARGS, capability arguments and final result. Every file is untrusted input: a
// malformed one is reported and skipped.
import { lstat, readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod/mini";
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
const ConfSchema = z.looseObject({ name: z.string(), cniVersion: z.string(), plugins: z.optional(z.array(PluginSchema)) });

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
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  const parsed = z.safeParse(CacheSchema, json);
  if (!parsed.success) throw new Error(`not a libcni cache entry (${issue(parsed.error)})`);
  const c = parsed.data;
  if (!isContainerId(c.containerId)) throw new Error(`containerId ${JSON.stringify(c.containerId)} is not a container ID`);
  if (!isInterfaceName(c.ifName)) throw new Error(`ifName ${JSON.stringify(c.ifName)} is not an interface name`);
  if (!NETWORK_NAME.test(c.networkName)) throw new Error(`networkName ${JSON.stringify(c.networkName)} is not a usable network name`);
  let conf: unknown;
  try {
    conf = JSON.parse(Buffer.from(c.config, "base64").toString("utf8"));
  } catch {
    throw new Error("config is not base64 of a JSON network configuration");
  }
  const list = z.safeParse(ConfSchema, conf);
  if (!list.success) throw new Error(`config is not a network configuration (${issue(list.error)})`);
  if (list.data.name !== c.networkName) throw new Error(`config names network ${JSON.stringify(list.data.name)}, the entry ${JSON.stringify(c.networkName)}`);
  return {
    file,
    mtimeMs,
    network: c.networkName,
    cniVersion: list.data.cniVersion,
    containerId: c.containerId,
    ifname: c.ifName,
    plugins: list.data.plugins ?? (typeof list.data["type"] === "string" ? [{ ...list.data, type: list.data["type"] }] : []),
    cniArgs: new Map(c.cniArgs ?? []),
    capabilityArgs: c.capabilityArgs ?? {},
    result: c.result ?? undefined,
  };
}

/** Every readable attachment of the cache, oldest first (the order the runtime added them). */
export async function readResultCache(cacheDir: string): Promise<CacheRead> {
  const dir = join(cacheDir, "results");
  const read: CacheRead = { dir, present: true, attachments: [], problems: [] };
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { ...read, present: false };
    throw new Error(`cannot read the result cache ${dir}: ${(err as Error).message}`);
  }
  for (const name of names) {
    const file = join(dir, name);
    try {
      const st = await lstat(file);
      if (!st.isFile()) throw new Error("not a regular file");
      if (st.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      read.attachments.push(parseCacheFile(await readFile(file, "utf8"), file, st.mtimeMs));
    } catch (err) {
      read.problems.push(`skipped cache file ${file}: ${(err as Error).message}`);
    }
  }
  read.attachments.sort((a, b) => a.mtimeMs - b.mtimeMs || a.file.localeCompare(b.file));
  return read;
}

/** Whether an operator command given `--network` names (none: every network) acts on `network` (null: unknown). */
export function selectsNetwork(networks: readonly string[], network: string | null): boolean {
  return networks.length === 0 || (network !== null && networks.includes(network));
}

/** How status and reports name the pod: namespace/name from kubelet's CNI_ARGS, else the container ID. */
export function attachmentLabel(a: CachedAttachment): string {
  return kubernetesPod(a.cniArgs) ?? a.containerId;
}
