// Process helpers for the harness: the plugin's own runner (argument arrays only, a time limit on every call).
import { type RunResult, run as runProgram } from "../../src/host/run.js";

export type { RunResult };

export interface RunOptions {
  /** Written to stdin, then stdin is closed (stdin is always closed). */
  input?: string | Buffer;
  /** The whole environment of the child (defaults to ours). */
  env?: NodeJS.ProcessEnv;
  /** Killed (SIGKILL) after this long (default 2 minutes); the result then has code 124. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 120_000;

/** Runs `cmd args…` and collects its output; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runProgram(cmd, args, { ...opts, timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
}

/** Like run(), but throws (with the command line and its stderr) unless the exit code is 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${[cmd, ...args].join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}
