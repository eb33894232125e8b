// A libcni-like invoker for conflists: ADD in order with chained prevResult, DEL in reverse order with the
// cached result (cniVersion >= 0.4.0), CHECK in order with the cached result. Plugins run inside the
// node namespace (`ip netns exec <node> <plugin>`), as a runtime runs them in the host namespace.
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunResult, run } from "./exec.js";
import { nsRun } from "./netns.js";
import { pluginBinary, pluginPath, SYSTEM_CNI_DIR } from "./paths.js";
import { portmapVariant } from "./portmap-variant.js";
import { cacheEntryJson, cacheFileName } from "./result-cache.js";

export const PLUGIN_TYPE = "portmap-hostip";

export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface NetConfList {
  name: string;
  cniVersion: string;
  plugins: PluginConf[];
  [key: string]: unknown;
}

/** A port mapping exactly as the runtime sends it (containerd: capitalised keys; CRI-O/spec: lowercase). */
export type PortMapping = Record<string, string | number>;

export interface RuntimeConf {
  containerID: string;
  /** Path of the sandbox's network namespace, e.g. /var/run/netns/<pod>. */
  netns: string;
  ifName?: string;
  /** CNI_ARGS, e.g. "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;…". */
  args?: string;
  /** Capability values, e.g. { portMappings: [...], "io.kubernetes.cri.pod-annotations": {...} }. */
  capabilityArgs?: Record<string, unknown>;
}

export type CniCommand = "ADD" | "DEL" | "CHECK" | "GC";

export interface PluginRun {
  type: string;
  command: CniCommand;
  /** What the plugin got on stdin. */
  stdin: Record<string, unknown>;
  env: Record<string, string>;
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, when it is JSON. */
  output?: Record<string, unknown>;
}

export interface ChainRun {
  ok: boolean;
  runs: PluginRun[];
  /** ADD: the final result (the last plugin's output). */
  result?: Record<string, unknown>;
  /** The failing plugin's run, when !ok. */
  failed?: PluginRun;
}

export interface AddOptions {
  /** Index of the first plugin to run (default 0). */
  from?: number;
  /** Index after the last plugin to run (default: the whole list). */
  to?: number;
  /** Result handed to the first plugin run (e.g. the result of plugins before `from`). */
  prevResult?: Record<string, unknown>;
  /** PATH for these plugins (e.g. stand-ins first); default: the invoker's. */
  path?: string;
}

export interface InvokerOptions {
  /** Namespace the plugins run in (the "host" namespace of the runtime). */
  nodeNs: string;
  /** Binary that the type `portmap-hostip` resolves to (default: pluginBinary()). */
  pluginBinary?: string;
  /** Binary that the type `portmap` resolves to (default: the matrix's, portmapVariant()). */
  portmapBinary?: string;
  /** Directories searched for plugin types after our binary's (default [/usr/lib/cni]). */
  cniPath?: string[];
  /** PATH given to plugins (default: pluginPath()) — e.g. a directory of iptables-legacy links first. */
  path?: string;
  /** Directory to create the plugin link directory in (default: the system temp directory). */
  workDir?: string;
  /** Extra environment for every plugin (e.g. NODE_OPTIONS as a runtime would leak it). */
  extraEnv?: Record<string, string>;
  timeoutMs?: number;
  /** How plugins enter the node, instead of `ip netns exec <nodeNs>` (a scratch node: its mount namespace too). */
  enter?: readonly string[];
  /**
   * libcni's cache directory: when set, a successful ADD also writes `<cacheDir>/results/<name>-<id>-<ifname>`
   * as libcni does (and DEL removes it), for the operator commands to read.
   */
  cacheDir?: string;
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split(".").map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/** The same conflist without the plugin of the given type (default: ours) — "portmap alone". */
export function withoutPlugin(list: NetConfList, type: string = PLUGIN_TYPE): NetConfList {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== type) };
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export class CniInvoker {
  readonly nodeNs: string;
  readonly cniPath: string[];
  private readonly opts: InvokerOptions;
  /** libcni's result cache (in memory here; the real one lives in /var/lib/cni/results). */
  private readonly cache = new Map<string, Record<string, unknown>>();
  private readonly binDir: string;

  constructor(opts: InvokerOptions) {
    this.opts = opts;
    this.nodeNs = opts.nodeNs;
    // Our binary is reachable as `portmap-hostip` through a directory holding just a link to it, and so is
    // the matrix's portmap ($PMH_PORTMAP), ahead of the system's.
    this.binDir = mkdtempSync(join(opts.workDir ?? tmpdir(), "pmh-cnibin-"));
    symlinkSync(opts.pluginBinary ?? pluginBinary(), join(this.binDir, PLUGIN_TYPE));
    symlinkSync(opts.portmapBinary ?? portmapVariant().binary, join(this.binDir, "portmap"));
    this.cniPath = [this.binDir, ...(opts.cniPath ?? [SYSTEM_CNI_DIR])];
  }

  /** Removes the link directory. */
  dispose(): void {
    rmSync(this.binDir, { recursive: true, force: true });
  }

  private cacheKey(list: NetConfList, rt: RuntimeConf): string {
    return `${list.name}-${rt.containerID}-${rt.ifName ?? "eth0"}`;
  }

  cachedResult(list: NetConfList, rt: RuntimeConf): Record<string, unknown> | undefined {
    return this.cache.get(this.cacheKey(list, rt));
  }

  private resolve(type: string): string {
    for (const dir of this.cniPath) {
      const candidate = join(dir, type);
      if (existsSync(candidate)) return candidate;
    }
    throw new Error(`plugin type ${type} not found in ${this.cniPath.join(":")}`);
  }

  /** Runs a plugin in the node, as a runtime does on its host. */
  private inNode(plugin: string, input: string, env: Record<string, string>): Promise<RunResult> {
    const opts = { input, env, timeoutMs: this.opts.timeoutMs ?? 30_000 };
    const enter = this.opts.enter;
    return enter ? run(enter[0] as string, [...enter.slice(1), plugin], opts) : nsRun(this.nodeNs, plugin, [], opts);
  }

  /** The stdin libcni builds for one entry of the list. */
  pluginStdin(
    list: NetConfList,
    conf: PluginConf,
    rt: RuntimeConf,
    prevResult: Record<string, unknown> | undefined,
  ): Record<string, unknown> {
    const stdin: Record<string, unknown> = { ...conf, name: list.name, cniVersion: list.cniVersion };
    if (prevResult !== undefined) stdin["prevResult"] = prevResult;
    const runtimeConfig: Record<string, unknown> = {};
    for (const [cap, declared] of Object.entries(conf.capabilities ?? {})) {
      if (declared === true && rt.capabilityArgs && cap in rt.capabilityArgs)
        runtimeConfig[cap] = rt.capabilityArgs[cap];
    }
    if (Object.keys(runtimeConfig).length > 0) stdin["runtimeConfig"] = runtimeConfig;
    return stdin;
  }

  /** The environment libcni gives a plugin for `rt` (PATH: `path`, else the invoker's). */
  pluginEnv(command: CniCommand, rt: RuntimeConf, path?: string): Record<string, string> {
    return {
      PATH: path ?? this.opts.path ?? pluginPath(),
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt.containerID,
      CNI_NETNS: rt.netns,
      CNI_IFNAME: rt.ifName ?? "eth0",
      CNI_ARGS: rt.args ?? "",
      CNI_PATH: this.cniPath.join(":"),
    };
  }

  /** Runs one plugin of the list with one command. */
  async invoke(
    command: CniCommand,
    list: NetConfList,
    conf: PluginConf,
    rt: RuntimeConf,
    prevResult?: Record<string, unknown>,
    path?: string,
  ): Promise<PluginRun> {
    const stdin = this.pluginStdin(list, conf, rt, prevResult);
    const env: Record<string, string> = { ...(this.opts.extraEnv ?? {}), ...this.pluginEnv(command, rt, path) };
    const r = await this.inNode(this.resolve(conf.type), JSON.stringify(stdin), env);
    const run: PluginRun = { type: conf.type, command, stdin, env, code: r.code, stdout: r.stdout, stderr: r.stderr };
    const output = parseJson(r.stdout);
    if (output !== undefined) run.output = output;
    return run;
  }

  /**
   * ADD over the list (or the slice [from, to) of it, starting from `prevResult`), as libcni: each plugin gets
   * the previous one's result, the first failure stops the chain, and a chain that reaches the end is cached.
   */
  async add(list: NetConfList, rt: RuntimeConf, opts: AddOptions = {}): Promise<ChainRun> {
    const runs: PluginRun[] = [];
    const to = opts.to ?? list.plugins.length;
    let prev = opts.prevResult;
    for (const conf of list.plugins.slice(opts.from ?? 0, to)) {
      const run = await this.invoke("ADD", list, conf, rt, prev, opts.path);
      runs.push(run);
      // ADD must print a result
      if (run.code !== 0 || run.output === undefined) return { ok: false, runs, failed: run };
      prev = run.output;
    }
    if (prev !== undefined && to === list.plugins.length) {
      this.cache.set(this.cacheKey(list, rt), prev);
      this.writeCacheFile(list, rt, prev);
    }
    return prev === undefined ? { ok: true, runs } : { ok: true, runs, result: prev };
  }

  async del(list: NetConfList, rt: RuntimeConf): Promise<ChainRun> {
    const runs: PluginRun[] = [];
    const cached = versionAtLeast(list.cniVersion, "0.4.0") ? this.cachedResult(list, rt) : undefined;
    for (const conf of [...list.plugins].reverse()) {
      const run = await this.invoke("DEL", list, conf, rt, cached);
      runs.push(run);
      if (run.code !== 0) return { ok: false, runs, failed: run };
    }
    this.cache.delete(this.cacheKey(list, rt));
    if (this.opts.cacheDir !== undefined) rmSync(this.cacheFilePath(list, rt), { force: true });
    return { ok: true, runs };
  }

  /** Path of the attachment's libcni cache file (only written with the cacheDir option). */
  cacheFilePath(list: NetConfList, rt: RuntimeConf): string {
    if (this.opts.cacheDir === undefined) throw new Error("the invoker has no cacheDir");
    return join(
      this.opts.cacheDir,
      "results",
      cacheFileName({ list, containerID: rt.containerID, ifName: rt.ifName ?? "eth0" }),
    );
  }

  private writeCacheFile(list: NetConfList, rt: RuntimeConf, result: Record<string, unknown>): void {
    if (this.opts.cacheDir === undefined) return;
    mkdirSync(join(this.opts.cacheDir, "results"), { recursive: true });
    const entry = { list, containerID: rt.containerID, ifName: rt.ifName ?? "eth0", netns: rt.netns, result };
    writeFileSync(
      this.cacheFilePath(list, rt),
      cacheEntryJson({
        ...entry,
        ...(rt.args === undefined ? {} : { args: rt.args }),
        ...(rt.capabilityArgs === undefined ? {} : { capabilityArgs: rt.capabilityArgs }),
      }),
    );
  }

  /**
   * GC as libcni sends it (cniVersion >= 1.1.0) to each plugin of the list: no container, the list's name and
   * version with `cni.dev/valid-attachments` (and the older `cni.dev/attachments`) injected.
   */
  async gc(list: NetConfList, validAttachments: Array<{ containerID: string; ifname: string }>): Promise<ChainRun> {
    const runs: PluginRun[] = [];
    for (const conf of list.plugins) {
      const stdin = {
        ...conf,
        name: list.name,
        cniVersion: list.cniVersion,
        "cni.dev/valid-attachments": validAttachments,
        "cni.dev/attachments": validAttachments,
      };
      const env = {
        ...(this.opts.extraEnv ?? {}),
        PATH: this.opts.path ?? pluginPath(),
        CNI_COMMAND: "GC",
        CNI_PATH: this.cniPath.join(":"),
      };
      const r = await this.inNode(this.resolve(conf.type), JSON.stringify(stdin), env);
      const run: PluginRun = {
        type: conf.type,
        command: "GC",
        stdin,
        env,
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
      };
      runs.push(run);
      if (r.code !== 0) return { ok: false, runs, failed: run };
    }
    return { ok: true, runs };
  }

  async check(list: NetConfList, rt: RuntimeConf): Promise<ChainRun> {
    if (!versionAtLeast(list.cniVersion, "0.4.0"))
      throw new Error(`CHECK needs cniVersion >= 0.4.0, list has ${list.cniVersion}`);
    const cached = this.cachedResult(list, rt);
    if (cached === undefined) throw new Error(`no cached result for ${this.cacheKey(list, rt)}`);
    const runs: PluginRun[] = [];
    for (const conf of list.plugins) {
      const run = await this.invoke("CHECK", list, conf, rt, cached);
      runs.push(run);
      if (run.code !== 0) return { ok: false, runs, failed: run };
    }
    return { ok: true, runs };
  }
}

/** A one-line summary of a failed chain run, for assertion messages. */
export function describeRun(run: ChainRun): string {
  return run.runs
    .map((r) => `${r.command} ${r.type} → exit ${r.code}\n  stdout: ${r.stdout.trim()}\n  stderr: ${r.stderr.trim()}`)
    .join("\n");
}
