// `portmap-hostip status | reconcile | gc`: operator commands on the namespace they run in.
import { readFile } from "node:fs/promises";
import type { ManagedList, NodeRules } from "../backends/backend.js";
import { nodeBackends } from "../backends/registry.js";
import { DEFAULT_STATE_DIR, isStateDir } from "../core/config.js";
import type { IptablesVariant } from "../core/node.js";
import { type CacheRead, DEFAULT_CACHE_DIR, readResultCache, selectsNetwork } from "../host/cache.js";
import { judge } from "../host/liveness.js";
import { readNodeNetwork } from "../host/network.js";
import { readRecords } from "../host/state.js";
import { managedList } from "../install/conflist.js";
import { findConflist, needDirectory, resolveLayout } from "../install/files.js";
import { gc } from "../ops/gc.js";
import { reconcile } from "../ops/reconcile.js";
import { statusJson, statusTable } from "../ops/render.js";
import { changeLines, droppedLine, familyLabel, removedText } from "../ops/report.js";
import { status, variantWarnings } from "../ops/status.js";
import {
  type CliContext,
  cniIptablesFlag,
  type Out,
  parseFlags as parseCommandLine,
  runCommand,
  UsageError,
} from "./args.js";

interface Flags {
  cacheDir: string;
  stateDir: string;
  cniConfDir: string | undefined;
  cniBinDir: string | undefined;
  json: boolean;
  dryRun: boolean;
  networks: string[];
  graceSeconds: number;
  cniIptables: IptablesVariant | undefined;
  help: boolean;
}

export const USAGE: Record<string, string> = {
  status: `usage: portmap-hostip status [--cache-dir DIR] [--network NAME]... [--state-dir DIR] [--json]
  One row per hostPort mapping in the nat tables (both iptables variants where both are installed) and in
  portmap's nftables tables: pod, port, the addresses it matches, pod address, state (scoped, unscoped,
  captures-service, conflict, orphan, closed: answers on no address, with the reason), and the table it is in.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only the mappings of this network (repeatable; default: every network)
  --state-dir DIR   the plugin's records of ADD and DEL (default ${DEFAULT_STATE_DIR}): a pod whose ADD is
                    still running is no orphan
  --json            machine-readable output
  -h, --help        this text
`,
  reconcile: `usage: portmap-hostip reconcile [--cache-dir DIR] [--network NAME]... [--state-dir DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR] [--iptables auto|nft|legacy] [--dry-run]
  Rebuilds the hostPort rules of every cached attachment whose chain is missing or wrong (portmap's rules,
  scoped by the policy: the cached entry's, else the installed conflist's), and portmap's shared chains;
  deletes at once the chains of dead pods that take a live pod's hostPort; one atomic write per family.
  Only networks whose cached conflist has the portmap-hostip entry, and the installed conflist's network;
  others are left alone (status shows them).
  Attachments of portmap's nftables backend: rules still there are re-scoped; rules gone are written again
  by running the node's portmap ADD from the cache, then scoped.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only the attachments of this network (repeatable; default: every network)
  --cni-conf-dir DIR  where the installed conflist is (default: the node's, as install finds it)
  --cni-bin-dir DIR where the node's portmap is (default /opt/cni/bin, or k3s's /var/lib/rancher/k3s/data/cni)
  --state-dir DIR   the plugin's records of ADD and DEL (default ${DEFAULT_STATE_DIR})
  --iptables auto|nft|legacy  on a node with both iptables variants: the one the CNI plugins run, for pods
                    whose rules are in no nat table and whose ADD recorded none (auto, the default: what the
                    node's other pods, portmap's chains and the tables there tell; else such a pod is skipped)
  --dry-run         print what a run would do (second looks included) and the iptables-restore input,
                    change nothing
  -h, --help        this text
`,
  gc: `usage: portmap-hostip gc [--cache-dir DIR] [--network NAME]... [--grace SECONDS] [--state-dir DIR] [--dry-run]
  Deletes portmap chains (and their CNI-HOSTPORT-DNAT jumps) of the networks named by --network (default:
  every network named in the result cache) whose container has no cached attachment; without --network
  also the nftables rules of portmap's nftables backend whose container has no cached attachment at all
  (they name no network). A chain is deleted only if it is still an orphan after --grace seconds (default
  30), so that a pod whose ADD is still running keeps its rules.
  A chain is never deleted while its container's ADD may be running or its cache file is unreadable.
  Without --network, chains of a network no cached pod names any more are not judged: gc names them.
  --cache-dir DIR   libcni's cache directory, holding results/ (default ${DEFAULT_CACHE_DIR})
  --network NAME    only this network's chains (repeatable); a network the cache no longer names too
  --grace SECONDS   how long a chain must stay an orphan before it goes (default 30)
  --state-dir DIR   the plugin's records of ADD and DEL (default ${DEFAULT_STATE_DIR})
  --dry-run         print what would be deleted, change nothing
  -h, --help        this text
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
  iptables: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export const OPS_FLAGS: Record<string, ReadonlyArray<keyof typeof OPTIONS>> = {
  status: ["cache-dir", "json", "network", "state-dir", "help"],
  reconcile: ["cache-dir", "dry-run", "network", "state-dir", "cni-conf-dir", "cni-bin-dir", "iptables", "help"],
  gc: ["cache-dir", "dry-run", "network", "grace", "state-dir", "help"],
};

function parseFlags(command: string, args: readonly string[]): Flags {
  const values = parseCommandLine(args, OPTIONS);
  for (const key of Object.keys(values)) {
    if (!OPS_FLAGS[command]?.includes(key as keyof typeof OPTIONS)) throw new UsageError(`unknown option "--${key}"`);
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
    cniIptables: cniIptablesFlag(values.iptables),
    help: values.help ?? false,
  };
}

async function readCache(dir: string, stderr: Out): Promise<CacheRead> {
  const cache = await readResultCache(dir);
  if (!cache.present)
    stderr(`portmap-hostip: no result cache at ${cache.dir} (--cache-dir): owners unknown, orphans not judged\n`);
  for (const p of cache.problems) stderr(`portmap-hostip: ${p}\n`);
  return cache;
}

/** Every backend's rules; one that cannot be read at all is a problem, said once. */
async function readBackends(problems: string[]): Promise<NodeRules[]> {
  const read = await Promise.all(
    (await nodeBackends()).map((b) =>
      b.read().catch((err: Error) => {
        problems.push(`${b.name} rules not read: ${err.message}`);
        return undefined;
      }),
    ),
  );
  return read.flatMap((r) => (r ? [r] : []));
}

async function runStatus(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  const problems: string[] = [];
  const [cache, { records, problems: recordProblems }, network, read] = await Promise.all([
    readCache(flags.cacheDir, stderr),
    readRecords(flags.stateDir),
    readNodeNetwork(),
    readBackends(problems),
  ]);
  problems.push(...recordProblems, ...read.flatMap((r) => r.problems), ...variantWarnings(read));
  for (const p of problems) stderr(`portmap-hostip: ${p}\n`);
  if (read.every((r) => r.families.length === 0)) return 1;
  // Owners come from the whole cache; only the rows are filtered (another network's chain is no orphan).
  const verdict = judge({ cache, records, now: Date.now() });
  const rows = status(read, cache, network, verdict).filter((row) => selectsNetwork(flags.networks, row.network));
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
  const report = await gc(await nodeBackends(), flags);
  if (!report) {
    stderr(
      "portmap-hostip gc: no cached attachment names a network, so nothing says which chains are dead: pass --network NAME\n",
    );
    return 1;
  }
  for (const p of report.problems) stderr(`portmap-hostip gc: ${p}\n`);
  const verb = flags.dryRun ? "would delete" : "deleted";
  for (const f of report.families) {
    for (const r of f.removed) stdout(`${familyLabel(f)}: ${verb} ${removedText(r, false)}\n`);
    for (const s of f.leftAlone) stdout(`${familyLabel(f)}: left alone ${s}\n`);
    if (f.failure !== undefined) stderr(`portmap-hostip gc: ${familyLabel(f)}: ${f.failure}\n`);
  }
  for (const u of report.unjudged)
    stdout(
      `not judged: ${u.place} (network ${u.network}, container ${u.containerId}): no cached pod names network ${u.network}; \`portmap-hostip gc --network ${u.network}\` judges its chains\n`,
    );
  if (report.families.every((f) => f.removed.length === 0))
    stdout(
      report.unjudged.length === 0
        ? "no orphan portmap chains\n"
        : `no orphan portmap chains in the networks the cache names; ${report.unjudged.length} of other networks not judged (above)\n`,
    );
  return !report.read || report.families.some((f) => f.failure !== undefined) ? 1 : 0;
}

/**
 * The installed conflist (the file the runtime uses): its network is ours, and its entry scopes that network's pods
 * whose cached conflist lacks ours. None when the config directory has no conflist.
 */
async function installedList(flags: Flags, stderr: Out): Promise<ManagedList | undefined> {
  const { confDir } = await resolveLayout({ confDir: flags.cniConfDir }, "/");
  if (flags.cniConfDir !== undefined) await needDirectory(confDir, "cni-conf-dir", true);
  try {
    const file = await findConflist(confDir, undefined);
    return managedList(await readFile(file, "utf8"), file);
  } catch (err) {
    if (flags.cniConfDir !== undefined)
      stderr(`portmap-hostip reconcile: no installed conflist: ${(err as Error).message}\n`);
    return undefined;
  }
}

const transactions = (n: number): string => (n === 1 ? "one transaction" : `${n} transactions`);

async function runReconcile(flags: Flags, stdout: Out, stderr: Out): Promise<number> {
  const { binDir } = await resolveLayout(flags.cniBinDir === undefined ? {} : { binDir: flags.cniBinDir }, "/");
  if (flags.cniBinDir !== undefined) await needDirectory(binDir, "cni-bin-dir", true);
  const report = await reconcile(await nodeBackends(), {
    ...flags,
    managed: await installedList(flags, stderr),
    cniBinDir: binDir,
  });
  let failed = report.problems.length;
  for (const p of report.problems) stderr(`portmap-hostip reconcile: ${p}\n`);
  for (const n of report.otherNetworks)
    stdout(`left alone network ${n}: no portmap-hostip entry in its conflist (status shows its hostPorts)\n`);
  const verb = flags.dryRun ? "would write" : "wrote";
  for (const f of report.families) {
    const at = familyLabel(f);
    for (const s of f.skipped) stdout(`${at}: skipped ${s}\n`);
    for (const w of f.waiting)
      stdout(`${at}: waiting ${w}: no record of its ADD, and its rules are missing (its DEL may be under way)\n`);
    failed += f.skipped.length;
    for (const a of changeLines(f)) stdout(`${at}: ${a}\n`);
    stdout(
      `${at}: ${f.correct} attachment(s) correct, left alone; ${f.rebuilt} rebuilt${f.lines > 0 ? ` (${verb} ${f.lines} lines in ${transactions(f.transactions)})` : ""}\n`,
    );
    if (flags.dryRun && f.lines > 0) stdout(`${f.payload.replace(/^/gm, "    ").trimEnd()}\n`);
    if (f.failure !== undefined) {
      failed++;
      stderr(`portmap-hostip reconcile: ${at}: ${f.failure}\n`);
    }
    if (f.droppedUdp > 0) stdout(`${at}: ${droppedLine(f)}\n`);
  }
  return failed > 0 ? 1 : 0;
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
    const commands = { status: runStatus, reconcile: runReconcile, gc: runGc };
    return commands[command](flags, stdout, stderr);
  });
}
