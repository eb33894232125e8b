// The one way this project runs a program (the plugin, the tests and the bench import it): an argument array,
// never a shell, and a time limit on every call, after which the program is killed with SIGKILL.
import { spawn } from "node:child_process";

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

/** Runs `file args…` and collects its output; rejects only when the program cannot be started. */
export function run(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    let ns = 0;
    let timedOut = false;
    const child = spawn(file, args, { env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const timer = setTimeout(() => {
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
      const stderr = Buffer.concat(err).toString("utf8");
      resolve({
        code: timedOut ? 124 : (code ?? 128),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut
          ? `${stderr}${stderr && !stderr.endsWith("\n") ? "\n" : ""}${file} killed: no exit within ${options.timeoutMs} ms`
          : stderr + (signal ? `killed by ${signal}` : ""),
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
