// `portmap-hostip status | reconcile | gc`: operator commands on the namespace they run in.
import { readFile } from "node:fs/promises";
import { DEFAULT_STATE_DIR, isStateDir } from "../core/config.js";
import { readNodeNetwork } from "../host/network.js";
import { addMayBeRunning, readRecords, withKeeperLock } from "../host/state.js";
import { installedEntry } from "../install/conflist.js";
import { findConflist, resolveLayout } from "../install/files.js";
import { type CacheRead, DEFAULT_CACHE_DIR, ownedByUnreadable, readResultCache, selectsNetwork } from "../ops/cache.js";
import { collect } from "../ops/gc.js";
import { collectNft } from "../ops/gc-nft.js";
import { judge, runReconcile } from "../ops/keep.js";
import { readNftTables, readTables } from "../ops/kernel.js";
import { statusJson, statusTable } from "../ops/render.js";
import { status } from "../ops/status.js";
import { type CliContext, type Out, parseFlags as parseCommandLine, runCommand, UsageError } from "./args.js";

interface Flags {
  cacheDir: string;
  stateDir: string;
  cniConfDir: string | undefined;
  cniBinDir: string | undefined;
  json: boolean;
  dryRun: boolean;
  networks: string[];
  graceSeconds: number;
  help: boolean;
}

const USAGE: Record<string, string> = {
  status: `usage: portmap-hostip status [--cache-dir DIR] [--network NAME]... [--json]
  One row per hostPort mapping in both nat tables and in portmap's nftables tables: pod, port, the addresses
  it matches, pod address, state (scoped, unscoped, captures-service, conflict, orphan).
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only the mappings of this network (repeatable; default: every network)
  --json            machine-readable output
`,
  reconcile: `usage: portmap-hostip reconcile [--cache-dir DIR] [--network NAME]... [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--dry-run]
  Rebuilds the hostPort rules of every cached attachment whose chain is missing or wrong (portmap's rules,
  scoped by the policy: the cached entry's, else the installed conflist's), and portmap's shared chains;
  deletes at once the chains of dead pods that take a live pod's hostPort; one atomic write per family.
  Attachments of portmap's nftables backend: rules still there are re-scoped; rules gone are written again
  by running the node's portmap ADD from the cache, then scoped.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only the attachments of this network (repeatable; default: every network)
  --cni-conf-dir DIR  where the installed conflist is (default: the node's, as install finds it)
  --cni-bin-dir DIR where the node's portmap is (default /opt/cni/bin, or k3s's /var/lib/rancher/k3s/data/cni)
  --state-dir DIR   the plugin's records of ADD and DEL (default ${DEFAULT_STATE_DIR})
  --dry-run         print the plan and the iptables-restore input, change nothing
`,
  gc: `usage: portmap-hostip gc [--cache-dir DIR] [--network NAME]... [--grace SECONDS] [--dry-run]
  Deletes portmap chains (and their CNI-HOSTPORT-DNAT jumps) of the networks named by --network (default:
  every network named in the result cache) whose container has no cached attachment; without --network
  also the nftables rules of portmap's nftables backend whose container has no cached attachment at all
  (they name no network). A chain is deleted only if it is still an orphan after --grace seconds (default
  30), so that a pod whose ADD is still running keeps its rules.
  A chain is never deleted while its container's ADD may be running or its cache file is unreadable.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only this network's chains (repeatable); a network the cache no longer names too
  --state-dir DIR   the plugin's records of ADD and DEL (default ${DEFAULT_STATE_DIR})
  --dry-run         print what would be deleted, change nothing
`,
};

const OPTIONS = {
  "cache-dir": { type: "string" },
  json: { type: "boolean" },
  "dry-run": { type: "boolean" },
  network: { type: "string", multiple: true },
  grace: { type: "string" },
  "state-dir": { type: "string" },
  "cni-bin-dir": { type: "string" },
  "cni-conf-dir": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const ALLOWED: Record<string, ReadonlyArray<keyof typeof OPTIONS>> = {
  status: ["cache-dir", "json", "network", "help"],
  reconcile: ["cache-dir", "dry-run", "network", "state-dir", "cni-conf-dir", "cni-bin-dir", "help"],
  gc: ["cache-dir", "dry-run", "network", "grace", "state-dir", "help"],
};

function parseFlags(command: string, args: readonly string[]): Flags {
  const values = parseCommandLine(args, OPTIONS);
  for (const key of Object.keys(values)) {
    if (!ALLOWED[command]?.includes(key as keyof typeof OPTIONS)) throw new UsageError(`unknown option "--${key}"`);
  }
  const cacheDir = values["cache-dir"];
  if (cacheDir === "") throw new UsageError("--cache-dir needs a value");
  const stateDir = values["state-dir"] ?? DEFAULT_STATE_DIR;
  if (!isStateDir(stateDir))
    throw new UsageError(`--state-dir needs an absolute path, not ${JSON.stringify(stateDir)}`);
  if (values["cni-conf-dir"] === "") throw new UsageError("--cni-conf-dir needs a value");
  if (values["cni-bin-dir"] === "") throw new UsageError("--cni-bin-dir needs a value");
  if (values.network?.includes("")) throw new UsageError("--network needs a value");
  const grace = values.grace;
  if (grace !== undefined && !/^\d{1,5}$/.test(grace))
    throw new UsageError(`--grace needs a number of seconds, not ${JSON.stringify(grace)}`);
  return {
    cacheDir: cacheDir ?? DEFAULT_CACHE_DIR,
    stateDir,
    cniConfDir: values["cni-conf-dir"],
    cniBinDir: values["cni-bin-dir"],
    json: values.json ?? false,
    dryRun: values["dry-run"] ?? false,
    networks: values.network ?? [],
    graceSeconds: grace === undefined ? 30 : Number(grace),
    help: values.help ?? false,
  };
}

async function readCache(dir: string, stderr: Out): Promise<CacheRead> {
  const cache = await readResultCache(dir);
  if (!cache.present) stderr(`portmap-hostip: no result cache at ${cache.dir}: owners unknown, orphans not judged\n`);
  for (const p of cache.problems) stderr(`portmap-hostip: ${p}\n`);
  return cache;
}

async function runStatus(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  const [cache, { tables, problems }, network, nft] = await Promise.all([
    readCache(flags.cacheDir, stderr),
    readTables(),
    readNodeNetwork(),
    readNftTables(),
  ]);
  for (const p of problems) stderr(`portmap-hostip: ${p}\n`);
  if (tables.size === 0 && nft.size === 0) return 1;
  // Owners come from the whole cache; only the rows are filtered (another network's chain is no orphan).
  const rows = status(tables, cache, network, nft).filter((row) => selectsNetwork(flags.networks, row.network));
  stdout(
    flags.json
      ? statusJson(rows, [
          ...(cache.present ? [] : [`no result cache at ${cache.dir}`]),
          ...cache.problems,
          ...problems,
        ])
      : statusTable(rows),
  );
  return 0;
}

async function runGc(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  // Dead: no cache entry (readable or not) and no ADD that may still be running (host/state.ts).
  const liveness = async () => {
    const [cache, { records, problems }] = await Promise.all([
      readCache(flags.cacheDir, stderr),
      readRecords(flags.stateDir),
    ]);
    for (const p of problems) stderr(`portmap-hostip: ${p}\n`);
    // A wrong --cache-dir must not make every chain of a --network look dead.
    if (!cache.present) throw new Error(`no result cache at ${cache.dir}: refusing to judge which chains are dead`);
    const networks = new Set(flags.networks.length > 0 ? flags.networks : cache.attachments.map((a) => a.network));
    const now = Date.now();
    const verdict = judge({ cache, records, now });
    const containers = new Set(cache.attachments.map((a) => a.containerId));
    const adding = new Set([...records.values()].filter((r) => addMayBeRunning(r, now)).map((r) => r.containerId));
    return {
      networks,
      isDead: (network: string, id: string) =>
        networks.has(network) && ["dead", "deleting"].includes(verdict(network, id)),
      // portmap's nftables rules name no network: dead only when no attachment at all has the container (nor
      // an unreadable file, nor a running ADD), and only judged when no --network narrows the GC.
      isDeadContainer: (id: string) =>
        flags.networks.length === 0 && !containers.has(id) && !adding.has(id) && !ownedByUnreadable(cache, null, id),
    };
  };
  const first = await liveness();
  if (first.networks.size === 0) {
    stderr(
      "portmap-hostip gc: no cached attachment names a network, so nothing says which chains are dead: pass --network NAME\n",
    );
    return 1;
  }
  if (!flags.dryRun && flags.graceSeconds > 0) {
    // A pod whose ADD is running has its chain before libcni caches its result: wait, and ask both reads.
    const candidates = await collect((_f, n, id) => first.isDead(n, id), true);
    const nftCandidates = await collectNft(first.isDeadContainer, true);
    if (candidates.plans.every((p) => p.orphans.length === 0) && nftCandidates.length === 0) {
      stdout("no orphan portmap chains\n");
      return 0;
    }
    await new Promise((r) => setTimeout(r, flags.graceSeconds * 1000));
  }
  // The second read and the write under the keeper lock: no ADD record can slip in between.
  const { plans, problems, nft } = await withKeeperLock(flags.stateDir, 30_000, async () => {
    const second = flags.dryRun ? first : await liveness();
    const chains = await collect((_f, n, id) => first.isDead(n, id) && second.isDead(n, id), flags.dryRun);
    return {
      ...chains,
      nft: await collectNft((id) => first.isDeadContainer(id) && second.isDeadContainer(id), flags.dryRun),
    };
  });
  for (const p of problems) stderr(`portmap-hostip gc: ${p}\n`);
  const verb = flags.dryRun ? "would delete" : "deleted";
  for (const plan of plans) {
    for (const o of plan.orphans)
      stdout(
        `IPv${plan.family}: ${verb} ${o.chain} (network ${o.network}, container ${o.containerId}) and ${o.jumps.length} jump(s)\n`,
      );
    for (const s of plan.skipped) stdout(`IPv${plan.family}: left alone ${s}\n`);
  }
  for (const o of nft) stdout(`nftables: ${verb} ${o.rules} rule(s) of container ${o.containerId}\n`);
  if (plans.every((p) => p.orphans.length === 0) && nft.length === 0) stdout("no orphan portmap chains\n");
  return plans.length === 0 ? 1 : 0;
}

/** Our entry in the installed conflist, for reconcile's pods whose cached conflist lacks it (none: undefined). */
async function installedFallback(flags: Flags, stderr: Out): Promise<Record<string, unknown> | undefined> {
  try {
    const { confDir } = await resolveLayout({ confDir: flags.cniConfDir }, "/");
    const file = await findConflist(confDir, undefined);
    return installedEntry(await readFile(file, "utf8"), file);
  } catch (err) {
    if (flags.cniConfDir !== undefined)
      stderr(
        `portmap-hostip reconcile: no installed entry to scope pods whose cached conflist lacks ours: ${(err as Error).message}\n`,
      );
    return undefined;
  }
}

async function runReconcileCommand(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  const { binDir } = await resolveLayout(flags.cniBinDir === undefined ? {} : { binDir: flags.cniBinDir }, "/");
  return runReconcile(
    { ...flags, fallbackEntry: await installedFallback(flags, stderr), cniBinDir: binDir },
    stdout,
    stderr,
  );
}

export async function runOps(
  command: "status" | "reconcile" | "gc",
  args: readonly string[],
  context: CliContext = {},
): Promise<number> {
  return runCommand(`portmap-hostip ${command}`, USAGE[command] as string, context, async (stdout, stderr) => {
    const flags = parseFlags(command, args);
    if (flags.help) {
      stdout(USAGE[command] as string);
      return 0;
    }
    const commands = { status: runStatus, reconcile: runReconcileCommand, gc: runGc };
    return commands[command](flags, stdout, stderr);
  });
}
