// Process helpers for the harness: argument arrays only, never a shell string.
import { spawn } from "node:child_process";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to stdin, then stdin is closed (stdin is always closed). */
  input?: string;
  /** The whole environment of the child (defaults to ours). */
  env?: NodeJS.ProcessEnv;
  /** Killed (SIGKILL) after this long; the result then has code 124. */
  timeoutMs?: number;
}

/** Runs `cmd args…` and collects its output; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, opts.timeoutMs);
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.stdin.on("error", () => {}); // the child may exit before reading its stdin
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const stderr = Buffer.concat(err).toString("utf8");
      resolve({
        code: timedOut ? 124 : (code ?? (signal ? 128 : 1)),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut ? `${stderr}\n[killed after ${opts.timeoutMs} ms]` : stderr,
      });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/** Like run(), but throws (with the command line and its stderr) unless the exit code is 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${[cmd, ...args].join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}
