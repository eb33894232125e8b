// What the installer and the operator commands share on the command line: strict flag parsing, where output
// goes (a test passes its own), and how errors end a command (usage: exit 2; anything else: exit 1).
import { type ParseArgsConfig, parseArgs } from "node:util";
import type { IptablesVariant } from "../core/node.js";

export type Out = (text: string) => void;

export interface CliContext {
  stdout?: Out;
  stderr?: Out;
}

/** A wrong command line: exit code 2. */
export class UsageError extends Error {}

/** Flags only (no positionals), unknown ones refused; a parse error is a UsageError. */
export function parseFlags<const O extends NonNullable<ParseArgsConfig["options"]>>(
  args: readonly string[],
  options: O,
) {
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message, { cause: err });
  }
}

/**
 * Runs one command with its output on the context's streams (default: the process's). A UsageError prints
 * `<name>: <message>` and `usage` on stderr and gives 2; any other error prints its message (and details) and
 * gives 1.
 */
export async function runCommand(
  name: string,
  usage: string,
  context: CliContext,
  body: (stdout: Out, stderr: Out) => Promise<number>,
): Promise<number> {
  const stdout = context.stdout ?? ((text: string) => void process.stdout.write(text));
  const stderr = context.stderr ?? ((text: string) => void process.stderr.write(text));
  try {
    return await body(stdout, stderr);
  } catch (err) {
    if (err instanceof UsageError) {
      stderr(`${name}: ${err.message}\n${usage}`);
      return 2;
    }
    const details = (err as { details?: unknown }).details;
    stderr(`${name}: ${(err as Error).message}${typeof details === "string" && details ? `\n${details}` : ""}\n`);
    return 1;
  }
}

/**
 * `--iptables auto|nft|legacy`: which iptables the node's CNI plugins run, for pods whose rules are in no nat table
 * and whose ADD recorded none. auto (the default): only what the node tells (ops/placement.ts).
 */
export function cniIptablesFlag(value: string | undefined): IptablesVariant | undefined {
  if (value === undefined || value === "auto") return undefined;
  if (value === "nft" || value === "legacy") return value;
  throw new UsageError(`--iptables: invalid value ${JSON.stringify(value)}: expected auto, nft or legacy`);
}
