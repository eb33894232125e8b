// The one way this project runs a program (the plugin, the tests and the bench import it): an argument array,
// never a shell, and a time limit on every call, after which the program is killed with SIGKILL.
import { spawn, spawnSync } from "node:child_process";

export interface RunOptions {
  /** Written to stdin, which is then closed (stdin is always closed). */
  input?: string | Buffer;
  /** The child's whole environment (defaults to ours). */
  env?: NodeJS.ProcessEnv;
  /** Killed with SIGKILL after this long. */
  timeoutMs: number;
}

export interface RunResult {
  /** The exit code; 124 when the time limit killed it, 128 when a signal did. */
  code: number;
  stdout: string;
  /** With a line naming the program and the limit when the limit killed it. */
  stderr: string;
  timedOut: boolean;
  /** The signal that ended it, if one did. */
  signal: NodeJS.Signals | null;
  /** Nanoseconds from the spawn to the exit. */
  ns: number;
}

/** How a program is run: `run` (processes side by side) or `runBlocking` (one at a time, cheaper to start). */
export type Runner = (file: string, args: readonly string[], options: RunOptions) => Promise<RunResult>;

const killedLine = (stderr: string, file: string, timeoutMs: number): string =>
  `${stderr}${stderr && !stderr.endsWith("\n") ? "\n" : ""}${file} killed: no exit within ${timeoutMs} ms`;

/** Runs `file args…` and collects its output; rejects only when the program cannot be started. */
export function run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let ns = 0;
    let timedOut = false;
    const child = spawn(file, args, { env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const timer = setTimeout(() => {
      // Exited in time, its output still draining: not a timeout.
      if (child.exitCode !== null || child.signalCode !== null) return;
      timedOut = true;
      child.kill("SIGKILL");
    }, options.timeoutMs);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("exit", () => {
      ns = Number(process.hrtime.bigint() - started);
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // The limit struck as the program exited on its own: its own exit is the outcome.
      if (signal !== "SIGKILL") timedOut = false;
      const stderr = Buffer.concat(err).toString("utf8");
      resolve({
        code: timedOut ? 124 : (code ?? 128),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut ? killedLine(stderr, file, options.timeoutMs) : stderr + (signal ? `killed by ${signal}` : ""),
        timedOut,
        signal,
        ns,
      });
    });
    // A child that exits before reading everything must not crash us with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

// A program's whole output; spawnSync's 1 MiB default would cut a large nat table.
const MAX_OUTPUT = 512 * 1024 * 1024;

/**
 * `run` with spawnSync: blocks until the program exits. A process that starts one program at a time pays less
 * this way (~6 ms for the first spawnSync against ~12 ms for the first spawn: no pipes as streams, no `net`).
 */
export const runBlocking: Runner = (file, args, options) => {
  const started = process.hrtime.bigint();
  const r = spawnSync(file, args, {
    env: options.env ?? process.env,
    input: options.input ?? "",
    timeout: options.timeoutMs,
    killSignal: "SIGKILL",
    maxBuffer: MAX_OUTPUT,
    encoding: "utf8",
  });
  const ns = Number(process.hrtime.bigint() - started);
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT";
  if (r.error && !timedOut) return Promise.reject(r.error);
  const stderr = r.stderr ?? "";
  return Promise.resolve({
    code: timedOut ? 124 : (r.status ?? 128),
    stdout: r.stdout ?? "",
    stderr: timedOut ? killedLine(stderr, file, options.timeoutMs) : stderr + (r.signal ? `killed by ${r.signal}` : ""),
    timedOut,
    signal: r.signal,
    ns,
  });
};
