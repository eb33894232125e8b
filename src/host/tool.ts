// A rule tool (iptables, nft) run for the plugin: a time limit on every call, its failures as CNI errors.
import { CniError, Code } from "../core/errors.js";
import { type Runner, type RunResult, run } from "./run.js";

/** The program is not installed (a node left to portmap's nftables backend has no iptables at all). */
export class NotInstalled extends CniError {}

/** Runs a tool. One that cannot start is code 5 (NotInstalled when missing); one killed at the limit, 11. */
export async function runTool(
  file: string,
  args: readonly string[],
  timeoutMs: number,
  input?: string,
  runner: Runner = run,
): Promise<RunResult> {
  let result: RunResult;
  try {
    result = await runner(file, args, { input, timeoutMs });
  } catch (err) {
    const Failure = (err as NodeJS.ErrnoException).code === "ENOENT" ? NotInstalled : CniError;
    throw new Failure(Code.IoFailure, `cannot run ${file}: ${(err as Error).message}`, "", { cause: err });
  }
  if (result.timedOut) {
    throw new CniError(
      Code.TryAgainLater,
      `${file} did not finish within ${timeoutMs} ms and was killed`,
      result.stderr.trim(),
    );
  }
  return result;
}

/** A failed run as a CNI error: 11 (try again later) when its stderr says `busy`, else 5. */
export function toolFailure(what: string, result: RunResult, busy: RegExp): CniError {
  const stderr = result.stderr.trim();
  return new CniError(
    busy.test(stderr) ? Code.TryAgainLater : Code.IoFailure,
    `${what} failed (exit ${result.code})`,
    stderr,
  );
}
