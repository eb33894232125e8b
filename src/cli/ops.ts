// `portmap-hostip status | reconcile | gc`: operator commands on the namespace they run in.
import { readNodeNetwork } from "../host/network.js";
import { DEFAULT_CACHE_DIR, type CacheRead, readResultCache, selectsNetwork } from "../ops/cache.js";
import { collect } from "../ops/gc.js";
import { collectNft } from "../ops/gc-nft.js";
import { readNftTables, readTables } from "../ops/kernel.js";
import { runReconcile } from "../ops/reconcile.js";
import { resolveLayout } from "../install/files.js";
import { statusJson, statusTable } from "../ops/render.js";
import { status } from "../ops/status.js";
import { type CliContext, type Out, UsageError, parseFlags as parseCommandLine, runCommand } from "./args.js";

interface Flags {
  cacheDir: string;
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
  reconcile: `usage: portmap-hostip reconcile [--cache-dir DIR] [--network NAME]... [--cni-bin-dir DIR] [--dry-run]
  Rebuilds the hostPort rules of every cached attachment whose chain is missing or wrong (portmap's rules,
  scoped by the policy), and portmap's shared chains; one atomic write per family. Attachments of portmap's
  nftables backend: rules still there are re-scoped; rules gone are written again by running the node's
  portmap ADD from the cache, then scoped.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only the attachments of this network (repeatable; default: every network)
  --cni-bin-dir DIR where the node's portmap is (default /opt/cni/bin, or k3s's /var/lib/rancher/k3s/data/cni)
  --dry-run         print the plan and the iptables-restore input, change nothing
`,
  gc: `usage: portmap-hostip gc [--cache-dir DIR] [--network NAME]... [--grace SECONDS] [--dry-run]
  Deletes portmap chains (and their CNI-HOSTPORT-DNAT jumps) of the networks named by --network (default:
  every network named in the result cache) whose container has no cached attachment; without --network
  also the nftables rules of portmap's nftables backend whose container has no cached attachment at all
  (they name no network). A chain is deleted only if it is still an orphan after --grace seconds (default
  30), so that a pod whose ADD is still running keeps its rules.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only this network's chains (repeatable); a network the cache no longer names too
  --dry-run         print what would be deleted, change nothing
`,
};

const OPTIONS = {
  "cache-dir": { type: "string" },
  "cni-bin-dir": { type: "string" },
  json: { type: "boolean" },
  "dry-run": { type: "boolean" },
  network: { type: "string", multiple: true },
  grace: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const ALLOWED: Record<string, ReadonlyArray<keyof typeof OPTIONS>> = {
  status: ["cache-dir", "json", "network", "help"],
  reconcile: ["cache-dir", "cni-bin-dir", "dry-run", "network", "help"],
  gc: ["cache-dir", "dry-run", "network", "grace", "help"],
};

function parseFlags(command: string, args: readonly string[]): Flags {
  const values = parseCommandLine(args, OPTIONS);
  for (const key of Object.keys(values)) {
    if (!ALLOWED[command]?.includes(key as keyof typeof OPTIONS)) throw new UsageError(`unknown option "--${key}"`);
  }
  const cacheDir = values["cache-dir"];
  if (cacheDir === "") throw new UsageError("--cache-dir needs a value");
  if (values.network?.includes("")) throw new UsageError("--network needs a value");
  const grace = values.grace;
  if (grace !== undefined && !/^\d{1,5}$/.test(grace)) throw new UsageError(`--grace needs a number of seconds, not ${JSON.stringify(grace)}`);
  if (values["cni-bin-dir"] === "") throw new UsageError("--cni-bin-dir needs a value");
  return {
    cacheDir: cacheDir ?? DEFAULT_CACHE_DIR,
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
  const [cache, { tables, problems }, network, nft] = await Promise.all([readCache(flags.cacheDir, stderr), readTables(), readNodeNetwork(), readNftTables()]);
  for (const p of problems) stderr(`portmap-hostip: ${p}\n`);
  if (tables.size === 0 && nft.size === 0) return 1;
  // Owners come from the whole cache; only the rows are filtered (another network's chain is no orphan).
  const rows = status(tables, cache, network, nft).filter((row) => selectsNetwork(flags.networks, row.network));
  stdout(flags.json ? statusJson(rows, [...(cache.present ? [] : [`no result cache at ${cache.dir}`]), ...cache.problems, ...problems]) : statusTable(rows));
  return 0;
}

async function runGc(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  const liveness = async () => {
    const cache = await readCache(flags.cacheDir, stderr);
    // A wrong --cache-dir must not make every chain of a --network look dead.
    if (!cache.present) throw new Error(`no result cache at ${cache.dir}: refusing to judge which chains are dead`);
    const networks = new Set(flags.networks.length > 0 ? flags.networks : cache.attachments.map((a) => a.network));
    const live = new Set(cache.attachments.map((a) => `${a.network}\n${a.containerId}`));
    const containers = new Set(cache.attachments.map((a) => a.containerId));
    return {
      networks,
      isDead: (network: string, id: string) => networks.has(network) && !live.has(`${network}\n${id}`),
      // portmap's nftables rules name no network: dead only when no attachment at all has the container, and
      // only judged when no --network narrows the GC.
      isDeadContainer: (id: string) => flags.networks.length === 0 && !containers.has(id),
    };
  };
  const first = await liveness();
  if (first.networks.size === 0) {
    stderr("portmap-hostip gc: no cached attachment names a network, so nothing says which chains are dead: pass --network NAME\n");
    return 1;
  }
  let isDead = first.isDead;
  let isDeadContainer = first.isDeadContainer;
  if (!flags.dryRun && flags.graceSeconds > 0) {
    // A pod whose ADD is running has its chain before libcni caches its result: wait, and ask both reads.
    const candidates = await collect((_f, n, id) => first.isDead(n, id), true);
    const nftCandidates = await collectNft(first.isDeadContainer, true);
    if (candidates.plans.every((p) => p.orphans.length === 0) && nftCandidates.length === 0) {
      stdout("no orphan portmap chains\n");
      return 0;
    }
    await new Promise((r) => setTimeout(r, flags.graceSeconds * 1000));
    const second = await liveness();
    isDead = (n, id) => first.isDead(n, id) && second.isDead(n, id);
    isDeadContainer = (id) => first.isDeadContainer(id) && second.isDeadContainer(id);
  }
  const { plans, problems } = await collect((_f, n, id) => isDead(n, id), flags.dryRun);
  for (const p of problems) stderr(`portmap-hostip gc: ${p}\n`);
  const verb = flags.dryRun ? "would delete" : "deleted";
  for (const plan of plans) {
    for (const o of plan.orphans) stdout(`IPv${plan.family}: ${verb} ${o.chain} (network ${o.network}, container ${o.containerId}) and ${o.jumps.length} jump(s)\n`);
    for (const s of plan.skipped) stdout(`IPv${plan.family}: left alone ${s}\n`);
  }
  const nft = await collectNft(isDeadContainer, flags.dryRun);
  for (const o of nft) stdout(`nftables: ${verb} ${o.rules} rule(s) of container ${o.containerId}\n`);
  if (plans.every((p) => p.orphans.length === 0) && nft.length === 0) stdout("no orphan portmap chains\n");
  return plans.length === 0 ? 1 : 0;
}

export async function runOps(command: "status" | "reconcile" | "gc", args: readonly string[], context: CliContext = {}): Promise<number> {
  return runCommand(`portmap-hostip ${command}`, USAGE[command] as string, context, async (stdout, stderr) => {
    const flags = parseFlags(command, args);
    if (flags.help) {
      stdout(USAGE[command] as string);
      return 0;
    }
    const reconcile = async (f: Flags, out: Out, err: Out) =>
      runReconcile({ ...f, cniBinDir: (await resolveLayout(f.cniBinDir === undefined ? {} : { binDir: f.cniBinDir }, "/")).binDir }, out, err);
    const commands = { status: runStatus, reconcile, gc: runGc };
    return commands[command](flags, stdout, stderr);
  });
}
