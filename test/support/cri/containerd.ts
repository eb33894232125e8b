// A private containerd (Debian's, with runc) inside a node network namespace, driven through CRI: its own
// root, state, sockets, runc root and cgroup parent under one temporary directory, its CNI conf dir holding one
// conflist and its bin dir Debian's plugins plus the plugin under test behind a recorder. Whatever it leaves
// is removed by destroy() or, at the latest, at exit: sandboxes, containerd, shims, pause processes, cgroups,
// its files in libcni's shared cache (/var/lib/cni, unless a cache dir of the run's own is bind-mounted there
// for it), the directory. Facts: ../shared/reference/containerd-facts.md.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { runOk } from "../exec.js";
import { atLastResort } from "../netns.js";
import { REPO_ROOT, SYSTEM_CNI_DIR } from "../paths.js";
import { removeNodeRecords } from "../records.js";
import { CriClient, type VersionResponse } from "./client.js";
import { buildPauseImage, PAUSE_IMAGE } from "./image.js";

/** libcni's cache of containerd 1.6: fixed, shared with whatever else runs on the machine. */
export const LIBCNI_CACHE_DIR = "/var/lib/cni";
const CRI_NAMESPACE = "k8s.io";
// containerd 1.6 puts shim sockets here whatever its state dir; a shim killed (not shut down) leaves its own.
const SHIM_SOCKET_DIR = "/run/containerd/s";
const ENTER_NODE = join(REPO_ROOT, "test/support/cri/enter-node.sh");
const RECORDER = join(REPO_ROOT, "test/support/cri/record-plugin.sh");
const PLUGIN_TYPE = "portmap-hostip";
// Plugins in this sandbox that cannot start (and would only add noise or fail the CRI plugin).
const DISABLED_PLUGINS = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
];

export interface ContainerdOptions {
  /** The node network namespace containerd (and so every CNI plugin) runs in. */
  node: string;
  /** An empty directory of ours for everything containerd writes (except libcni's cache). */
  dir: string;
  /** PATH of containerd and so of the plugins. */
  path: string;
  /** The one conflist of its CNI conf dir; its name must be unique to this run. */
  conflist: { name: string; [key: string]: unknown };
  /** The plugin binary under test. */
  plugin: string;
  /** Parent of the sandboxes' cgroups, e.g. /pmh-abc123; must be unique to this run. */
  cgroupParent: string;
  /** Its CNI conf dir (default: one of its own in `dir`), where the conflist is written. */
  confDir?: string;
  /**
   * A directory of ours that containerd sees as libcni's cache (/var/lib/cni, bind-mounted in its own mount
   * namespace): its results stay out of the machine's. Default: the machine's /var/lib/cni.
   */
  cacheDir?: string;
}

/** One call of the plugin as containerd made it, captured by the recorder. */
export interface PluginCall {
  command: string;
  stdin: string;
  /** CNI_* variables and PATH. */
  env: Record<string, string>;
  stdout: string;
  code: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Our cgroup mounts as (fstype, options, target) triples, to mount again inside `ip netns exec`. */
export async function cgroupMounts(): Promise<string[][]> {
  const out = await runOk("findmnt", ["--raw", "--noheadings", "-t", "cgroup,cgroup2", "-o", "FSTYPE,OPTIONS,TARGET"], {
    timeoutMs: 10_000,
  });
  return out
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split(" "));
}

/** containerd's configuration: its own root, state, sockets and runc root; the CRI plugin's CNI directories. */
export function configToml(paths: {
  root: string;
  state: string;
  socket: string;
  runcRoot: string;
  binDir: string;
  confDir: string;
}): string {
  const q = JSON.stringify;
  const cri = `plugins."io.containerd.grpc.v1.cri"`;
  return [
    "version = 2",
    `root = ${q(paths.root)}`,
    `state = ${q(paths.state)}`,
    `disabled_plugins = ${q(DISABLED_PLUGINS)}`,
    "[grpc]",
    `  address = ${q(paths.socket)}`,
    "[ttrpc]",
    `  address = ${q(`${paths.socket}.ttrpc`)}`,
    `[${cri}]`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    // The pod netns mounts stay in our state dir (and in containerd's private mount namespace).
    "  netns_mounts_under_state_dir = true",
    "  disable_apparmor = true",
    "  enable_selinux = false",
    // No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj to the pause container's -998.
    "  restrict_oom_score_adj = true",
    `[${cri}.cni]`,
    `  bin_dir = ${q(paths.binDir)}`,
    `  conf_dir = ${q(paths.confDir)}`,
    "  max_conf_num = 1",
    `[${cri}.containerd.runtimes.runc]`,
    `  runtime_type = "io.containerd.runc.v2"`,
    `[${cri}.containerd.runtimes.runc.options]`,
    "  SystemdCgroup = false",
    `  Root = ${q(paths.runcRoot)}`,
    "",
  ].join("\n");
}

/** PIDs of live processes whose command line contains `needle` as one argument. */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").includes(needle)) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

export class Containerd {
  readonly socket: string;
  readonly cri: CriClient;
  readonly recordsDir: string;
  readonly configFile: string;
  readonly logFile: string;
  private readonly binDir: string;
  private daemon: ChildProcess | undefined;
  private mounts: string[][] = [];
  /** Sandbox IDs whose shim may have left a socket. */
  private readonly sandboxIds = new Set<string>();
  /** Directories of /run/containerd this run had to create. */
  private readonly createdRunDirs = ["/run/containerd", SHIM_SOCKET_DIR].filter((d) => !existsSync(d));
  private readonly unregister: () => void;

  private constructor(private readonly o: ContainerdOptions) {
    const root = join(o.dir, "root");
    const state = join(o.dir, "state");
    this.socket = join(o.dir, "containerd.sock");
    this.binDir = join(o.dir, "cni-bin");
    const confDir = o.confDir ?? join(o.dir, "cni-conf");
    this.recordsDir = join(this.binDir, `${PLUGIN_TYPE}.records`);
    this.configFile = join(o.dir, "config.toml");
    this.logFile = join(o.dir, "containerd.log");
    for (const d of [root, state, this.binDir, confDir, this.recordsDir]) mkdirSync(d, { recursive: true });
    // Debian's plugins (loopback too: containerd sets up the pod's lo with it), ours behind the recorder.
    for (const name of readdirSync(SYSTEM_CNI_DIR)) symlinkSync(join(SYSTEM_CNI_DIR, name), join(this.binDir, name));
    copyFileSync(RECORDER, join(this.binDir, PLUGIN_TYPE));
    symlinkSync(o.plugin, join(this.binDir, `${PLUGIN_TYPE}.real`));
    writeFileSync(join(confDir, `10-${o.conflist.name}.conflist`), JSON.stringify(o.conflist, null, 2));
    writeFileSync(
      this.configFile,
      configToml({ root, state, socket: this.socket, runcRoot: join(o.dir, "runc"), binDir: this.binDir, confDir }),
    );
    this.cri = new CriClient(this.socket);
    this.unregister = atLastResort(() => this.killEverything());
  }

  /** Starts containerd in the node namespace and imports the pause image. */
  static async start(o: ContainerdOptions): Promise<Containerd> {
    const c = new Containerd(o);
    try {
      c.mounts = await cgroupMounts();
      await c.launch();
      const image = await buildPauseImage(join(o.dir, "image"));
      await runOk("ctr", ["--address", c.socket, "--namespace", CRI_NAMESPACE, "images", "import", image], {
        timeoutMs: 60_000,
      });
    } catch (e) {
      await c.destroy().catch(() => {});
      throw e;
    }
    return c;
  }

  /** What Version says (runtime name and version). */
  version(): Promise<VersionResponse> {
    return this.cri.version();
  }

  private async launch(): Promise<void> {
    const log = openSync(this.logFile, "a");
    const child = spawn(
      "/usr/sbin/ip",
      [
        "netns",
        "exec",
        this.o.node,
        "/bin/bash",
        ENTER_NODE,
        ...this.mounts.flat(),
        ...(this.o.cacheDir === undefined ? [] : ["bind", this.o.cacheDir, LIBCNI_CACHE_DIR]),
        "--",
        "/usr/bin/containerd",
        "--config",
        this.configFile,
      ],
      { env: { PATH: this.o.path }, stdio: ["ignore", log, log] },
    );
    closeSync(log);
    this.daemon = child;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`containerd exited (${child.exitCode ?? child.signalCode}):\n${this.logTail()}`);
      if (existsSync(this.socket)) {
        try {
          await this.cri.version(2000);
          return;
        } catch {
          // not serving CRI yet
        }
      }
      if (Date.now() > deadline) throw new Error(`containerd not ready after 30 s:\n${this.logTail()}`);
      await Promise.race([sleep(100), exited]);
    }
  }

  private logTail(): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-20).join("\n");
    } catch {
      return "(no log)";
    }
  }

  /** Stops containerd (SIGTERM, then SIGKILL after 15 s); sandboxes and their shims keep running. */
  async stopDaemon(): Promise<void> {
    const child = this.daemon;
    this.daemon = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  }

  /** containerd restarted while its sandboxes run (as after an upgrade or a crash). */
  async restart(): Promise<void> {
    await this.stopDaemon();
    await this.launch();
  }

  /** The PID of a sandbox's pause process (verbose status). */
  async sandboxPid(id: string): Promise<number> {
    const status = await this.cri.podSandboxStatus(id, true);
    const pid = (JSON.parse(status.info["info"] ?? "{}") as { pid?: number }).pid;
    if (!pid) throw new Error(`no pid in the status of sandbox ${id}`);
    return pid;
  }

  /** Every call of the plugin so far, in order. */
  calls(): PluginCall[] {
    const names = readdirSync(this.recordsDir);
    const bases = [
      ...new Set(names.filter((n) => n.endsWith(".stdin")).map((n) => n.slice(0, -".stdin".length))),
    ].sort();
    return bases.map((base) => {
      const read = (ext: string) => readFileSync(join(this.recordsDir, `${base}.${ext}`), "utf8");
      const env = Object.fromEntries(
        read("env")
          .split("\n")
          .filter((l) => l.includes("="))
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      return {
        command: env["CNI_COMMAND"] ?? "",
        stdin: read("stdin"),
        env,
        stdout: read("stdout"),
        code: Number(read("code").trim()),
      };
    });
  }

  /** Where containerd's libcni writes its results. */
  private get resultsDir(): string {
    return join(this.o.cacheDir ?? LIBCNI_CACHE_DIR, "results");
  }

  /**
   * This run's entries in libcni's shared result cache: those of its network, and those of containerd's own
   * loopback network (`cni-loopback-<id>-lo`, the same name in every containerd) for its sandboxes.
   */
  cacheFiles(): string[] {
    if (!existsSync(this.resultsDir)) return [];
    this.noteSandboxIds();
    const loopback = new Set([...this.sandboxIds].map((id) => `cni-loopback-${id}-lo`));
    return readdirSync(this.resultsDir).filter((f) => f.startsWith(`${this.o.conflist.name}-`) || loopback.has(f));
  }

  /** Stops and removes every sandbox, stops containerd, then removes whatever is left of this run. */
  async destroy(): Promise<void> {
    const errors: unknown[] = [];
    this.noteSandboxIds();
    if (this.daemon) {
      try {
        for (const sandbox of await this.cri.listPodSandbox()) {
          await this.cri.stopPodSandbox(sandbox.id).catch((e: unknown) => errors.push(e));
          await this.cri.removePodSandbox(sandbox.id).catch((e: unknown) => errors.push(e));
        }
      } catch (e) {
        errors.push(e);
      }
    }
    this.cri.close();
    await this.stopDaemon();
    this.killEverything();
    if (!this.removeCgroups()) errors.push(new Error(`cgroups under ${this.o.cgroupParent} could not be removed`));
    this.unregister();
    if (errors.length > 0) throw new AggregateError(errors, `containerd clean-up in ${this.o.dir} failed`);
  }

  /**
   * Synchronous, idempotent: kills containerd, its shims and sandbox processes, removes our cache files, the
   * sockets of killed shims and the /run/containerd directories we created (when empty).
   */
  private killEverything(): void {
    this.noteSandboxIds();
    if (this.daemon?.pid !== undefined && this.daemon.exitCode === null) kill(this.daemon.pid);
    // Shims outlive containerd; each names our socket in its arguments.
    for (const pid of processesWith(this.socket)) kill(pid);
    for (const dir of this.cgroupDirs()) {
      for (const proc of this.cgroupTree(dir)) {
        try {
          for (const pid of readFileSync(join(proc, "cgroup.procs"), "utf8")
            .split("\n")
            .filter((p) => p !== ""))
            kill(Number(pid));
        } catch {
          // gone
        }
      }
    }
    for (const file of this.cacheFiles()) rmSync(join(this.resultsDir, file), { force: true });
    // The plugin's ADD and DEL records (the entry has no stateDir: the node's default directory).
    removeNodeRecords(this.o.conflist.name, this.sandboxIds);
    // The shim's socket name: sha256 of containerd's address, namespace and task ID.
    for (const id of this.sandboxIds)
      rmSync(
        join(
          SHIM_SOCKET_DIR,
          createHash("sha256")
            .update(join(this.socket, CRI_NAMESPACE, id))
            .digest("hex"),
        ),
        { force: true },
      );
    for (const dir of [...this.createdRunDirs].reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty: someone else's too
      }
    }
    // Killed processes leave their cgroups a moment later; this may run at exit, where nothing can be awaited.
    for (let i = 0; i < 40 && !this.removeCgroups(); i++)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }

  /** Every sandbox ID this containerd has had a task for or sent the plugin. */
  private noteSandboxIds(): void {
    const tasks = join(this.o.dir, "state", "io.containerd.runtime.v2.task", CRI_NAMESPACE);
    if (existsSync(tasks)) for (const id of readdirSync(tasks)) this.sandboxIds.add(id);
    if (existsSync(this.recordsDir))
      for (const call of this.calls())
        if (call.env["CNI_CONTAINERID"]) this.sandboxIds.add(call.env["CNI_CONTAINERID"]);
  }

  /** Our cgroup parent in each hierarchy that has it. */
  private cgroupDirs(): string[] {
    return this.mounts.map(([, , target]) => join(target!, this.o.cgroupParent)).filter((d) => existsSync(d));
  }

  /** A cgroup directory and its descendants, deepest first. */
  private cgroupTree(dir: string): string[] {
    const children = readdirSync(dir)
      .map((n) => join(dir, n))
      .filter((p) => {
        try {
          return statSync(p).isDirectory();
        } catch {
          return false;
        }
      });
    return [...children.flatMap((c) => this.cgroupTree(c)), dir];
  }

  /** rmdir of our cgroups (only empty ones go); true when none is left. */
  private removeCgroups(): boolean {
    for (const dir of this.cgroupDirs()) {
      for (const cg of this.cgroupTree(dir)) {
        try {
          rmdirSync(cg);
        } catch {
          // still has processes
        }
      }
    }
    return this.cgroupDirs().length === 0;
  }
}
