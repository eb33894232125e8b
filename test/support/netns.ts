// Network namespaces and background processes owned by this process, with a last-resort cleanup on exit.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunOptions, type RunResult, run, runOk } from "./exec.js";

/** Every name starts with this, so a leftover is recognisable as ours. */
export const NETNS_PREFIX = "pmh-";

const liveNamespaces = new Set<string>();
const liveChildren = new Set<ChildProcess>();
const liveTempDirs = new Set<string>();
const lastResorts = new Set<() => void>();

/**
 * A fresh `pmh-<random>` prefix for one topology's namespaces; with $PMH_NETNS_TAG set, `pmh-<tag>-<random>`
 * (so that a wrapper script can find and remove whatever a killed run left behind).
 */
export function uniquePrefix(): string {
  const tag = process.env["PMH_NETNS_TAG"];
  const rand = randomBytes(3).toString("hex");
  return tag ? `${NETNS_PREFIX}${tag}-${rand}` : `${NETNS_PREFIX}${rand}`;
}

/** A temporary directory named `<prefix>-XXXXXX`, removed by removeTempDir() or, at the latest, at exit. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  liveTempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  liveTempDirs.delete(dir);
}

export function netnsPath(name: string): string {
  return `/var/run/netns/${name}`;
}

export async function addNetns(name: string): Promise<void> {
  if (!name.startsWith(NETNS_PREFIX))
    throw new Error(`refusing to create a namespace without the ${NETNS_PREFIX} prefix: ${name}`);
  await runOk("ip", ["netns", "add", name]);
  liveNamespaces.add(name);
  await runOk("ip", ["-n", name, "link", "set", "lo", "up"]);
}

/** Names (`ip netns attach`) the network namespace of a process we started, e.g. a pod sandbox's. */
export async function attachNetns(name: string, pid: number): Promise<void> {
  if (!name.startsWith(NETNS_PREFIX))
    throw new Error(`refusing to name a namespace without the ${NETNS_PREFIX} prefix: ${name}`);
  await runOk("ip", ["netns", "attach", name, String(pid)]);
  liveNamespaces.add(name);
}

/** Deletes a namespace we created; tolerates one that is already gone. */
export async function deleteNetns(name: string): Promise<void> {
  const r = await run("ip", ["netns", "delete", name]);
  if (r.code !== 0 && !/No such file|not found|Invalid argument/i.test(r.stderr)) {
    throw new Error(`ip netns delete ${name}: ${r.stderr.trim()}`);
  }
  liveNamespaces.delete(name);
}

/** Runs a command inside a namespace (`ip netns exec`). */
export function nsRun(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run("ip", ["netns", "exec", ns, cmd, ...args], opts);
}

export function nsRunOk(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return runOk("ip", ["netns", "exec", ns, cmd, ...args], opts);
}

/** `ip -n <ns> …` */
export function ipIn(ns: string, ...args: string[]): Promise<string> {
  return runOk("ip", ["-n", ns, ...args]);
}

export async function sysctlIn(ns: string, settings: Record<string, string | number>): Promise<void> {
  const args = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  await nsRunOk(ns, "sysctl", ["-q", "-w", ...args]);
}

/** Waits until no IPv6 address in the namespace is tentative (DAD finished). */
export async function waitNoTentative(ns: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await ipIn(ns, "-6", "addr", "show", "tentative");
    if (out.trim() === "") return;
    if (Date.now() > deadline) throw new Error(`IPv6 addresses still tentative in ${ns}:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a long-running process inside a namespace and resolves once it prints `readyLine` on stdout.
 * The process is tracked and killed by stopChild() or, at the latest, when this process exits.
 */
export function spawnInNs(
  ns: string,
  cmd: string,
  args: readonly string[],
  readyLine: string,
  timeoutMs = 10_000,
): Promise<ChildProcess> {
  return spawnUntilReady("ip", ["netns", "exec", ns, cmd, ...args], readyLine, timeoutMs, `${cmd} in ${ns}`);
}

/**
 * spawnInNs() for any command line (`what` names it in errors); `sink` gets everything it prints on stdout and
 * stderr, from the start.
 */
export function spawnUntilReady(
  cmd: string,
  args: readonly string[],
  readyLine: string | RegExp,
  timeoutMs: number,
  what = cmd,
  sink: (text: string) => void = () => {},
): Promise<ChildProcess> {
  // A line equal to `readyLine`, or matching it.
  const ready = (out: string) =>
    out.split("\n").some((line) => (typeof readyLine === "string" ? line === readyLine : readyLine.test(line)));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    liveChildren.add(child);
    child.stdout?.on("data", (d: Buffer) => sink(d.toString()));
    child.stderr?.on("data", (d: Buffer) => sink(d.toString()));
    let out = "";
    let err = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      liveChildren.delete(child);
      reject(new Error(`${what} (${args.join(" ")}): ${why}\n${err}`));
    };
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (ready(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => {
      liveChildren.delete(child);
      if (!ready(out)) fail(`exited ${code} before ready`);
    });
    child.on("error", (e) => fail(e.message));
  });
}

/** Starts a long-running process inside a namespace, tracked as spawnInNs' are; its readiness is the caller's. */
export function startInNs(ns: string, cmd: string, args: readonly string[]): ChildProcess {
  const child = spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  liveChildren.add(child);
  return child;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }
  liveChildren.delete(child);
}

/**
 * Registers a synchronous clean-up (e.g. stopping a daemon and what it started) to run at exit if it was not
 * unregistered (the returned function) before; it runs before namespaces and temporary directories go.
 */
export function atLastResort(cleanup: () => void): () => void {
  lastResorts.add(cleanup);
  return () => lastResorts.delete(cleanup);
}

// Last resort (a crashed or interrupted run, or hooks that never ran): run the registered clean-ups, kill our
// children, remove our namespaces and temporary directories, synchronously.
function cleanupSync(): void {
  for (const cleanup of lastResorts) {
    try {
      cleanup();
    } catch {
      // best effort
    }
  }
  lastResorts.clear();
  for (const child of liveChildren) child.kill("SIGKILL");
  liveChildren.clear();
  for (const ns of liveNamespaces) {
    try {
      execFileSync("ip", ["netns", "delete", ns], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
  liveNamespaces.clear();
  for (const dir of liveTempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
  liveTempDirs.clear();
}
process.once("exit", cleanupSync);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(sig, () => {
    cleanupSync();
    process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
  });
}
