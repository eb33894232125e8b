// `portmap-hostip install`: its flags, parsed, checked for syntax and mapped onto the plugin's conflist entry
// keys; the installer itself is install/.
import { isAnnotationKey, isLogFilePath } from "../core/config.js";
import { parseCidr, parseIp } from "../core/ip.js";
import { isInterfaceName } from "../core/names.js";
import { type InstallOptions, Installer } from "../install/main.js";
import { type CliContext, UsageError, parseFlags, runCommand } from "./args.js";

export interface InstallContext extends CliContext {
  /** Where the default (standard and k3s) CNI directories are looked for. */
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
    await new Installer(options, context.root ?? "/", context.signal, stdout, stderr).run();
    return 0;
  });
}

export const INSTALL_HELP = `Usage: portmap-hostip install [options]

Copies the plugin into the CNI bin directory (write to a temporary file, then rename) and inserts
its entry right after "portmap" in the conflist the runtime uses. Running it again changes nothing.

Where:
  --cni-bin-dir DIR          default /opt/cni/bin (k3s: /var/lib/rancher/k3s/data/cni)
  --cni-conf-dir DIR         default /etc/cni/net.d (k3s: /var/lib/rancher/k3s/agent/etc/cni/net.d)
  --conflist FILE            default: the lexicographically first *.conf, *.conflist or *.json there
  --binary PATH              what to copy; default: this executable

Entry options (omitted ones use the plugin's defaults); lists are comma-separated or repeated:
  --default-host-ip VALUE    node (default), any, or IP[,IP...]: host IPs of a mapping with no hostIP
  --node-ips IP,...          this node's IPs, instead of reading them from the interfaces
  --kube-node-ips IP,...     the node's Kubernetes addresses (status.hostIPs), in addition to the
                             default-route interfaces' addresses
  --node-interfaces IF,...   interfaces whose addresses are node IPs
  --exclude-interfaces IF,...  interfaces whose addresses never are (default kube-ipvs0; "" for none)
  --allowed-host-cidrs CIDR,...  host IPs a pod may ask for by annotation
  --annotation KEY           pod annotation that carries host IPs (default portmap-hostip/host-ip)
  --log-file PATH            append one line per CNI call to this file (absolute path; default: no log)

Modes:
  --watch                    keep running; put the entry back within 2 s whenever someone (flannel)
                             rewrites the conflist; SIGTERM ends it
  --uninstall                remove the entry, then the binary
  --dry-run                  print what would change (a diff of the conflist) and change nothing
`;


export function parseInstallArgs(args: string[]): InstallOptions {
  const v = parseFlags(args, {
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
  });
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
  setList(settings, "kubeNodeIPs", "kube-node-ips", v["kube-node-ips"], isIp, "expected IP addresses");
  setList(settings, "nodeInterfaces", "node-interfaces", v["node-interfaces"], isInterfaceName, "expected interface names");
  setList(settings, "excludeInterfaces", "exclude-interfaces", v["exclude-interfaces"], isInterfaceName, "expected interface names");
  setList(settings, "allowedHostCIDRs", "allowed-host-cidrs", v["allowed-host-cidrs"], isCidr, "expected CIDRs such as 192.0.2.0/24");
  if (v.annotation !== undefined) {
    if (!isAnnotationKey(v.annotation)) throw invalid("annotation", v.annotation, "expected an annotation key such as example.com/host-ip");
    settings["annotation"] = v.annotation;
  }
  const logFile = v["log-file"];
  if (logFile !== undefined) {
    if (!isLogFilePath(logFile)) throw invalid("log-file", logFile, "expected an absolute path of a file such as /var/log/portmap-hostip.log");
    settings["logFile"] = logFile;
  }

  return {
    mode: v.help ? "help" : v.watch ? "watch" : v.uninstall ? "uninstall" : "install",
    dryRun: v["dry-run"] ?? false,
    cniBinDir: v["cni-bin-dir"],
    cniConfDir: v["cni-conf-dir"],
    conflist: v.conflist,
    binary: v.binary,
    settings,
  };
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

