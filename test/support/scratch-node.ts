// A scratch node, for commands run exactly as the docs write them: the topology's node network namespace, and a
// mount namespace of its own in which the node's directories are the test's. The CNI directories, libcni's cache and
// /usr/local/bin start empty (fresh temporary directories); /etc, /opt, /usr/local and /var are copy-on-write (an
// overlay whose writes land in the test's temporary directory: a unit file into /etc/systemd/system, a log under
// /var/log); /run is a fresh tmpfs holding the machine's /run/netns, so pod namespaces stay reachable. Nothing a
// command writes reaches the machine's own directories; the mount namespace ends with its last process.
import type { ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { CniInvoker } from "./cni.js";
import { type RunResult, run } from "./exec.js";
import { spawnInNs, spawnUntilReady, stopChild } from "./netns.js";
import { REPO_ROOT, SYSTEM_CNI_DIR } from "./paths.js";
import type { Topology } from "./topology.js";

/** Empty at the start, as on a node where the network plugin has not written its conflist yet. */
const FRESH = ["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/usr/local/bin"];
const OVERLAID = ["/etc", "/opt", "/usr/local", "/var"];
/** What a shell of root has. */
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface ScratchNode {
  /** Where a path of the node is on the machine (under the test's temporary directory). */
  hostPath(path: string): string;
  /** Runs a shell command line in the node from the repository's root, as root runs it: time-limited. */
  sh(line: string, timeoutMs?: number): Promise<RunResult>;
  /** Starts a long-running command in the node; resolves once it prints a line equal to `readyLine` or matching it. */
  spawn(argv: readonly string[], readyLine: string | RegExp): Promise<{ child: ChildProcess; output: () => string }>;
  /** A libcni-like runtime on the node: plugins from its /opt/cni/bin, results in its /var/lib/cni. */
  cni: CniInvoker;
  destroy(): Promise<void>;
}

/** Where a program is on this process's PATH. */
function program(name: string): string {
  const found = (process.env["PATH"] ?? "")
    .split(":")
    .map((dir) => join(dir, name))
    .find((path) => existsSync(path));
  if (found === undefined) throw new Error(`${name} is not on PATH (util-linux)`);
  return found;
}

export async function createScratchNode(topo: Topology): Promise<ScratchNode> {
  const base = join(topo.tmpDir, "scratch");
  const fresh = (path: string) => join(base, "root", path);
  const upper = (path: string) => join(base, "upper", path);
  for (const path of FRESH) mkdirSync(fresh(path), { recursive: true });
  for (const path of OVERLAID) mkdirSync(upper(path), { recursive: true });
  mkdirSync(join(base, "netns"));
  const script = [
    "set -eu",
    // /run: a tmpfs of its own, with the machine's named network namespaces (new ones keep appearing: slave).
    `mount --rbind /run/netns ${join(base, "netns")}`,
    "mount -t tmpfs -o mode=0755 tmpfs /run",
    "mkdir /run/netns",
    `mount --move ${join(base, "netns")} /run/netns`,
    ...OVERLAID.map((dir) => {
      const work = join(base, "work", dir);
      return `mkdir -p ${work} && mount -t overlay overlay -o lowerdir=${dir},upperdir=${upper(dir)},workdir=${work} ${dir}`;
    }),
    ...FRESH.map((dir) => `mkdir -p ${dir} && mount --bind ${fresh(dir)} ${dir}`),
    "echo ready",
    // The namespace's anchor, bounded: the test ends it long before.
    "exec sleep 1800",
  ].join("\n");
  const anchor = await spawnInNs(
    topo.node,
    "unshare",
    ["--mount", "--propagation", "slave", "bash", "-c", script],
    "ready",
  );
  // By its path: the plugins run it with the PATH a runtime gives them, which may not hold it.
  const enter = [program("nsenter"), "-t", String(anchor.pid), "-m", "-n", "--"];
  const started: ChildProcess[] = [];
  // Debian's bridge, host-local and portmap, where a node has its CNI plugins.
  for (const plugin of ["bridge", "host-local", "loopback", "portmap"])
    copyFileSync(join(SYSTEM_CNI_DIR, plugin), join(fresh("/opt/cni/bin"), plugin));

  const hostPath = (path: string): string => {
    const bound = FRESH.find((dir) => path === dir || path.startsWith(`${dir}/`));
    if (bound) return join(fresh(bound), path.slice(bound.length));
    const overlaid = OVERLAID.find((dir) => path === dir || path.startsWith(`${dir}/`));
    if (overlaid) return join(upper(overlaid), path.slice(overlaid.length));
    throw new Error(`${path} is the machine's own in the scratch node`);
  };
  const cni = new CniInvoker({
    nodeNs: topo.node,
    workDir: topo.tmpDir,
    enter,
    pluginBinary: hostPath("/opt/cni/bin/portmap-hostip"),
    cniPath: [hostPath("/opt/cni/bin")],
    cacheDir: hostPath("/var/lib/cni"),
  });
  return {
    hostPath,
    sh: (line, timeoutMs = 60_000) =>
      run(enter[0] as string, [...enter.slice(1), "bash", "-c", `cd ${REPO_ROOT} && ${line}`], {
        env: { PATH },
        timeoutMs,
      }),
    async spawn(argv, readyLine) {
      let output = "";
      const [cmd = "", ...args] = [...enter, "env", `PATH=${PATH}`, ...argv];
      const child = await spawnUntilReady(cmd, args, readyLine, 30_000, argv.join(" "), (text) => {
        output += text;
      });
      started.push(child);
      return { child, output: () => output };
    },
    cni,
    async destroy() {
      for (const child of [...started, anchor]) await stopChild(child);
      cni.dispose();
    },
  };
}
