// `portmap-hostip install`: its flags, parsed, checked for syntax and mapped onto the plugin's conflist entry
// keys; the installer itself is install/.
// Over 300 lines: 45 of them are the --help text, and each flag's check sits beside its key.
import { hostname } from "node:os";
import { join } from "node:path";
import { DEFAULT_STATE_DIR, isAnnotationKey, isLogFilePath, isStateDir } from "../core/config.js";
import { parseCidr, parseIp } from "../core/ip.js";
import { isInterfaceName } from "../core/names.js";
import type { IptablesVariant } from "../core/node.js";
import { resolveLayout } from "../install/files.js";
import { Installer, type InstallOptions, terminationSignal } from "../install/main.js";
import { type CliContext, cniIptablesFlag, parseFlags, runCommand, UsageError } from "./args.js";
import type { PassObserver } from "./keeper.js";
import { keeperLog, LOG_FORMATS, type Log, type LogFormat, linesTo } from "./log.js";
import type { MetricsAddress } from "./metrics.js";

export interface InstallContext extends CliContext {
  /** Where the default (standard and k3s) CNI directories and the default state directory are. */
  root?: string;
  /** Ends --watch; by default SIGTERM or SIGINT do. */
  signal?: AbortSignal;
}

export async function runInstall(args: string[], context: InstallContext = {}): Promise<number> {
  // A usage error names the flag; the help is one --help away.
  return runCommand("portmap-hostip install", "", context, async (stdout, stderr) => {
    const options = parseInstallArgs(args);
    if (options.mode === "help") {
      stdout(INSTALL_HELP);
      return 0;
    }
    const root = context.root ?? "/";
    const keeper = keeperFlags(args, root);
    if (options.mode === "check") {
      await new Installer(options, root, undefined, stdout, stderr).run();
      if (keeper) stdout(`${await checkKeeperAlive(keeper.stateDir)}\n`);
      return 0;
    }
    if (options.mode === "uninstall" && !options.dryRun) await refuseWhileKeeperRuns(args, root);
    if (options.mode !== "watch" || !keeper) {
      await new Installer(options, root, context.signal, stdout, stderr).run();
      return 0;
    }
    const signal = context.signal ?? terminationSignal();
    // In JSON, the installer's lines too: one object each.
    const log = keeperLog(keeper.logFormat, stdout, stderr);
    const [out, err] =
      keeper.logFormat === "json"
        ? [linesTo(log, "info", "installer"), linesTo(log, "warning", "installer")]
        : [stdout, stderr];
    const [{ Keeper }, observers] = await Promise.all([import("./keeper.js"), keeperObservers(keeper, signal, log)]);
    // The bin directory the plugin goes to holds the node's portmap (run again for its nftables backend's pods).
    const { binDir } = await resolveLayout({ binDir: options.cniBinDir, confDir: options.cniConfDir }, root);
    const installer = new Installer(options, root, signal, out, err, (why) =>
      why === "entry put back" ? k.entryPutBack() : k.trigger(why),
    );
    const k = new Keeper(
      { ...keeper, graceMs: KEEPER_GRACE_MS, managed: () => installer.managed(), cniBinDir: binDir },
      stdout,
      stderr,
      observers,
    );
    await Promise.all([installer.run(), k.run(signal)]);
    return 0;
  });
}

// As gc's default grace: a pod's ADD has long reached our plugin (and written its record) by then.
const KEEPER_GRACE_MS = 30_000;

interface KeeperFlags {
  cacheDir: string;
  stateDir: string;
  resyncMs: number;
  cniIptables: IptablesVariant | undefined;
  logFormat: LogFormat;
  metricsAddress: MetricsAddress | undefined;
}

/**
 * What follows each pass besides its lines, each loaded only when asked for: the metrics (--metrics-address),
 * Kubernetes Events (a service account in a cluster; without one the keeper runs as ever).
 */
async function keeperObservers(flags: KeeperFlags, signal: AbortSignal, log: Log): Promise<PassObserver[]> {
  const observers: PassObserver[] = [];
  let failed = (): void => {};
  if (flags.metricsAddress !== undefined) {
    const { KeeperMetrics, serveMetrics } = await import("./metrics.js");
    const metrics = new KeeperMetrics();
    await serveMetrics(metrics, flags.metricsAddress, signal);
    observers.push(metrics);
    failed = () => metrics.failed("event");
  }
  if (process.env["KUBERNETES_SERVICE_HOST"]) {
    const { inCluster } = await import("../host/kube.js");
    const kube = await inCluster().catch((err: Error) => {
      log("warning", `keeper: no Kubernetes Events: ${err.message}`, { event: "events" });
      return undefined;
    });
    if (kube) {
      const { KubeEvents } = await import("./events.js");
      const node = process.env["NODE_NAME"] || hostname();
      observers.push(new KubeEvents({ kube, node, log, failed }));
      log("info", `keeper: recording Kubernetes Events on pods as node ${node}`, { event: "events" });
    }
  }
  return observers;
}

/** The keeper's flags; undefined without --cache-dir (then --watch keeps only the conflist entry). */
function keeperFlags(args: string[], root: string): KeeperFlags | undefined {
  const v = parseFlags(args, INSTALL_FLAGS);
  if (v["cache-dir"] === undefined) {
    // --uninstall reads the keeper's heartbeat there.
    const keeperOnly = ["resync", "iptables", "log-format", "metrics-address"] as const;
    for (const flag of v.uninstall ? keeperOnly : (["state-dir", ...keeperOnly] as const))
      if (v[flag] !== undefined) throw new UsageError(`--${flag} needs --cache-dir (the keeper)`);
    return undefined;
  }
  const stateDir = v["state-dir"] ?? join(root, DEFAULT_STATE_DIR);
  if (v["cache-dir"] === "") throw new UsageError("--cache-dir must not be empty");
  if (!isStateDir(stateDir)) throw invalid("state-dir", stateDir, "expected an absolute path");
  const resync = v.resync ?? "10";
  if (!/^\d{1,4}$/.test(resync) || Number(resync) < 1)
    throw invalid("resync", resync, "expected a number of seconds from 1 to 9999");
  const logFormat = v["log-format"] ?? "text";
  if (!(LOG_FORMATS as readonly string[]).includes(logFormat))
    throw invalid("log-format", logFormat, "expected text or json");
  const metrics = v["metrics-address"];
  return {
    cacheDir: v["cache-dir"],
    stateDir,
    resyncMs: Number(resync) * 1000,
    cniIptables: cniIptablesFlag(v.iptables),
    logFormat: logFormat as LogFormat,
    metricsAddress: metrics === undefined ? undefined : metricsAddress(metrics),
  };
}

/** IP:PORT ([…] around IPv6), or :PORT for every address of the node. */
function metricsAddress(value: string): MetricsAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const ip = host ? parseIp(host) : undefined;
  const port = Number(m?.[3]);
  const hostOk = host === "" || (ip !== undefined && (m?.[1] !== undefined) === (ip.family === 6));
  if (!m || !hostOk || !(port >= 1 && port <= 65535))
    throw invalid("metrics-address", value, "expected IP:PORT or :PORT, such as :9731, 127.0.0.1:9731 or [::1]:9731");
  return { host: ip?.text, port };
}

/**
 * A keeper on the node would put the entry back and, with it, the binary: --uninstall waits (fails, and the
 * uninstall DaemonSet's pod is retried) until it ended. A keeper that ended removed its heartbeat.
 */
async function refuseWhileKeeperRuns(args: string[], root: string): Promise<void> {
  const stateDir = parseFlags(args, INSTALL_FLAGS)["state-dir"] ?? join(root, DEFAULT_STATE_DIR);
  const alive = await checkKeeperAlive(stateDir).catch(() => undefined);
  if (alive !== undefined)
    throw new Error(
      `a keeper runs on this node (${alive}): stop it first (by hand: systemctl disable --now portmap-hostip; on a cluster: kubectl delete daemonset -n kube-system portmap-hostip), or it puts the entry back`,
    );
}

async function checkKeeperAlive(stateDir: string): Promise<string> {
  const { checkKeeper } = await import("./keeper.js");
  return checkKeeper(stateDir);
}

export const INSTALL_HELP = `Usage: portmap-hostip install [options]

Copies the plugin into the CNI bin directory (write to a temporary file, then rename) and inserts
its entry right after "portmap" in the conflist the runtime uses. Running it again changes nothing.

Where:
  --cni-bin-dir DIR          default /opt/cni/bin (k3s: /var/lib/rancher/k3s/data/cni)
  --cni-conf-dir DIR         default /etc/cni/net.d (k3s: /var/lib/rancher/k3s/agent/etc/cni/net.d)
  --conflist FILE            default: the lexicographically first *.conf, *.conflist or *.json there
  --binary PATH              what to copy; default: this executable

Entry options; install writes exactly these (omitted ones use the plugin's defaults), --watch sets
them in the entry it finds and keeps its other options; lists are comma-separated or repeated:
  --default-host-ip VALUE    node (default), any, or IP[,IP...]: host IPs of a mapping with no hostIP
  --node-ips IP,...          this node's IPs, instead of reading them from the interfaces
  --kube-node-ips IP,...     the node's Kubernetes addresses (status.hostIPs), in addition to the
                             default-route interfaces' addresses
  --node-interfaces IF,...   interfaces whose addresses are node IPs
  --exclude-interfaces IF,...  interfaces whose addresses never are (default kube-ipvs0; "" for none)
  --allowed-host-cidrs CIDR,...  host IPs a pod may ask for by annotation
  --annotation KEY           pod annotation that carries host IPs (default portmap-hostip/host-ip)
  --log-file PATH            append one line per CNI call to this file (absolute path; default: no log)

Modes (default: install once):
  --watch                    keep running; put the entry back within 2 s whenever someone (flannel)
                             rewrites the conflist; SIGTERM ends it (exit 0)
  --check                    exit 0 when the binary and the entry are in place (and, with --cache-dir,
                             the keeper completed a pass lately): the DaemonSet's exec probe
  --uninstall                remove the entry, then the binary (stop --watch first: it puts them back)
  --dry-run                  with install or --uninstall: print what would change (a diff of the
                             conflist) and change nothing
  -h, --help                 this text

The keeper (--watch with --cache-dir): also keep every cached pod's hostPort rules as they must be,
after conflist rewrites, nat table flushes or restores, and node address changes:
  --cache-dir DIR            libcni's cache directory (the node's: /var/lib/cni)
  --state-dir DIR            where the plugin records ADD and DEL (default ${DEFAULT_STATE_DIR})
  --resync SECONDS           full resync period (default 10)
  --iptables auto|nft|legacy the iptables the node's CNI plugins run (where portmap writes), for pods whose
                             rules are in no nat table and whose ADD recorded none; auto (default): what
                             the node's other pods, portmap's chains and the tables there tell
  --metrics-address [IP]:PORT  serve Prometheus metrics on http://IP:PORT/metrics (no IP: every address
                             of the node; default: none)
  --log-format text|json     the keeper's lines as text (default), or one JSON object a line
`;

export const INSTALL_FLAGS = {
  "cni-bin-dir": { type: "string" },
  "cni-conf-dir": { type: "string" },
  conflist: { type: "string" },
  binary: { type: "string" },
  "default-host-ip": { type: "string", multiple: true },
  "node-ips": { type: "string", multiple: true },
  "kube-node-ips": { type: "string", multiple: true },
  "node-interfaces": { type: "string", multiple: true },
  "exclude-interfaces": { type: "string", multiple: true },
  "allowed-host-cidrs": { type: "string", multiple: true },
  annotation: { type: "string" },
  "log-file": { type: "string" },
  watch: { type: "boolean" },
  uninstall: { type: "boolean" },
  "dry-run": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  check: { type: "boolean" },
  "cache-dir": { type: "string" },
  "state-dir": { type: "string" },
  resync: { type: "string" },
  iptables: { type: "string" },
  "log-format": { type: "string" },
  "metrics-address": { type: "string" },
} as const;

export function parseInstallArgs(args: string[]): InstallOptions {
  const v = parseFlags(args, INSTALL_FLAGS);
  if (v.check && (v.watch || v.uninstall || v["dry-run"]))
    throw new UsageError("--check excludes --watch, --uninstall and --dry-run");
  if (v.watch && v.uninstall) throw new UsageError("--watch and --uninstall exclude each other");
  if (v.watch && v["dry-run"]) throw new UsageError("--watch and --dry-run exclude each other");
  for (const flag of ["cni-bin-dir", "cni-conf-dir", "conflist", "binary"] as const) {
    if (v[flag] === "") throw new UsageError(`--${flag} must not be empty`);
  }

  const settings: Record<string, unknown> = {};
  const defaultHostIP = v["default-host-ip"];
  if (defaultHostIP) {
    const items = list(defaultHostIP);
    if (items.length === 1 && (items[0] === "node" || items[0] === "any")) settings["defaultHostIP"] = items[0];
    else {
      const ips = checked("default-host-ip", items, isIp, 'expected "node", "any" or IP addresses');
      settings["defaultHostIP"] = ips.length === 1 ? ips[0] : ips;
    }
  }
  setList(settings, "nodeIPs", "node-ips", v["node-ips"], isIp, "expected IP addresses");
  const notes: string[] = [];
  setList(
    settings,
    "kubeNodeIPs",
    "kube-node-ips",
    downwardApiValues(v["kube-node-ips"], notes),
    isIp,
    "expected IP addresses",
  );
  setList(
    settings,
    "nodeInterfaces",
    "node-interfaces",
    v["node-interfaces"],
    isInterfaceName,
    "expected interface names",
  );
  setList(
    settings,
    "excludeInterfaces",
    "exclude-interfaces",
    v["exclude-interfaces"],
    isInterfaceName,
    "expected interface names",
  );
  setList(
    settings,
    "allowedHostCIDRs",
    "allowed-host-cidrs",
    v["allowed-host-cidrs"],
    isCidr,
    "expected CIDRs such as 192.0.2.0/24",
  );
  if (v.annotation !== undefined) {
    if (!isAnnotationKey(v.annotation))
      throw invalid("annotation", v.annotation, "expected an annotation key such as example.com/host-ip");
    settings["annotation"] = v.annotation;
  }
  const logFile = v["log-file"];
  if (logFile !== undefined) {
    if (!isLogFilePath(logFile))
      throw invalid("log-file", logFile, "expected an absolute path of a file such as /var/log/portmap-hostip.log");
    settings["logFile"] = logFile;
  }
  // The keeper's records directory is the plugin's too: a directory other than the default goes into the
  // entry, so ADD and DEL write where the keeper reads (keeperFlags checks it and that --cache-dir comes too).
  const stateDir = v["state-dir"];
  if (stateDir !== undefined && stateDir !== DEFAULT_STATE_DIR) settings["stateDir"] = stateDir;

  return {
    mode: v.help ? "help" : v.watch ? "watch" : v.uninstall ? "uninstall" : v.check ? "check" : "install",
    // The keeper's records are where it reads them: an entry naming another directory than its own loses it.
    clears: v.watch && v["cache-dir"] !== undefined && settings["stateDir"] === undefined ? ["stateDir"] : [],
    dryRun: v["dry-run"] ?? false,
    cniBinDir: v["cni-bin-dir"],
    cniConfDir: v["cni-conf-dir"],
    conflist: v.conflist,
    binary: v.binary,
    settings,
    notes,
  };
}

// kubelet leaves `$(NAME)` as it is when the container has no variable NAME.
const UNEXPANDED = /^\$\([A-Za-z_][A-Za-z0-9_]*\)$/;

/**
 * --kube-node-ips as the DaemonSet passes it, from the downward API: an empty value (no addresses yet) or an
 * unexpanded `$(HOST_IPS)` (the variable missing) leaves the flag out, with a note, instead of failing the
 * pod at every start. Undefined when nothing is left.
 */
function downwardApiValues(values: string[] | undefined, notes: string[]): string[] | undefined {
  const kept = (values ?? []).filter((value) => {
    if (UNEXPANDED.test(value)) notes.push(`--kube-node-ips ${value}: not expanded (no such variable), left out`);
    else if (value === "") notes.push("--kube-node-ips is empty (no Kubernetes addresses), left out");
    else return true;
    return false;
  });
  return kept.length > 0 ? kept : undefined;
}

function list(values: string[]): string[] {
  return values.flatMap((value) => value.split(",")).filter((item) => item !== "");
}

function setList(
  settings: Record<string, unknown>,
  key: string,
  flag: string,
  values: string[] | undefined,
  valid: (item: string) => boolean,
  expected: string,
): void {
  if (values) settings[key] = checked(flag, list(values), valid, expected);
}

function checked(flag: string, items: string[], valid: (item: string) => boolean, expected: string): string[] {
  const bad = items.find((item) => !valid(item));
  if (bad !== undefined) throw invalid(flag, bad, expected);
  return items;
}

function invalid(flag: string, value: string, expected: string): UsageError {
  return new UsageError(`--${flag}: invalid value ${JSON.stringify(value)}: ${expected}`);
}

const isIp = (item: string): boolean => parseIp(item) !== undefined;
const isCidr = (item: string): boolean => parseCidr(item) !== undefined;
