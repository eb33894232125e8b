// The nat table through the iptables binaries on PATH (the ones portmap used: nft or legacy alike).
import type { CniError } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { Rule } from "../core/rule.js";
import { type Runner, type RunResult, run } from "../host/run.js";
import { NotInstalled, runTool, toolFailure } from "../host/tool.js";
import { appendRules, restorePayload, swapPayload } from "./text.js";

const BINARIES: Record<Family, { iptables: string; restore: string }> = {
  4: { iptables: "iptables", restore: "iptables-restore" },
  6: { iptables: "ip6tables", restore: "ip6tables-restore" },
};

// iptables-nft 1.8.9 answers `-S` of a missing chain with "… is incompatible, use 'nft' tool". A chain
// it cannot read is as good as missing to us: we never write one we could not read.
const NO_CHAIN = /No chain\/target\/match by that name|does not exist|is incompatible/;
// Lock contention (legacy) or a concurrent nftables transaction: the runtime should retry.
const BUSY = /xtables lock|Resource temporarily unavailable|Device or resource busy/;
// iptables-restore refused a line of its input, applying nothing: `line N failed` (both variants), or
// iptables-nft's parser `Error occurred at line: N`.
const REFUSED_LINE = /line \d+ failed|Error occurred at line: \d+/;
// iptables-legacy waits for the machine-wide xtables lock; `-w` alone waits forever, and a pod's ADD stuck
// behind another program's lock holds the runtime's sandbox setup with it. Five seconds is many times what
// any of our calls holds the lock, and an ADD that ends with code 11 is retried by the runtime.
// (iptables-nft takes no lock and ignores the value.)
const WAIT = ["-w", "5"];
// Every call ends by then, lock wait included (reading a 20,000-rule table takes under a second here);
// a tool killed at the limit is "try again later" too.
const LIMIT_MS = 15_000;

const exec = (file: string, args: readonly string[], input?: string, runner: Runner = run): Promise<RunResult> =>
  runTool(file, [...WAIT, ...args], LIMIT_MS, input, runner);

const failure = (what: string, result: RunResult): CniError => toolFailure(what, result, BUSY);

/**
 * The rules of a nat chain; undefined when the chain does not exist, or there is no iptables at all (then
 * portmap cannot have written iptables rules either).
 */
export async function readChain(family: Family, chain: string, runner: Runner = run): Promise<Rule[] | undefined> {
  const bin = BINARIES[family].iptables;
  const result = await exec(bin, ["-t", "nat", "-S", chain], undefined, runner).catch((err: Error) => {
    if (err instanceof NotInstalled) return undefined;
    throw err;
  });
  if (result === undefined) return undefined;
  if (result.code === 0) return appendRules(result.stdout);
  if (NO_CHAIN.test(result.stderr)) return undefined;
  throw failure(`${bin} -t nat -S ${chain}`, result);
}

/** Replaces the chain's rules in one iptables-restore transaction; no other chain or rule is touched. */
export async function writeChain(
  family: Family,
  chain: string,
  rules: readonly Rule[],
  runner: Runner = run,
): Promise<void> {
  await restoreNat(family, restorePayload(chain, rules), `chain ${chain}`, runner);
}

/**
 * Deletes the rules `from` and appends `to`, in one iptables-restore transaction. False when it changed
 * nothing because it refused a line of its input (a rule to delete, or its chain, is not there: iptables-nft
 * checks deletions last, so it may name a rule it could not append to a missing chain first), or there is no
 * iptables; any other failure is a CniError, as a write's.
 */
export async function swapRules(
  family: Family,
  from: readonly Rule[],
  to: readonly Rule[],
  runner: Runner = run,
): Promise<boolean> {
  const bin = BINARIES[family].restore;
  const result = await exec(bin, ["--noflush"], swapPayload(from, to), runner).catch((err: Error) => {
    if (err instanceof NotInstalled) return undefined;
    throw err;
  });
  if (result === undefined) return false;
  if (result.code === 0) return true;
  if (REFUSED_LINE.test(result.stderr)) return false;
  throw failure(`${bin} --noflush of chain ${from[0]?.chain ?? to[0]?.chain}`, result);
}

/** The whole nat table as `iptables -S` prints it (`-P`, `-N`, `-A` lines). */
export async function readTable(family: Family): Promise<string> {
  const bin = BINARIES[family].iptables;
  const result = await exec(bin, ["-t", "nat", "-S"]);
  if (result.code !== 0) throw failure(`${bin} -t nat -S`, result);
  return result.stdout;
}

/** Applies an iptables-restore payload with --noflush: one transaction, all of it or nothing. */
export async function restoreNat(family: Family, payload: string, what: string, runner: Runner = run): Promise<void> {
  const bin = BINARIES[family].restore;
  const result = await exec(bin, ["--noflush"], payload, runner);
  if (result.code !== 0) throw failure(`${bin} --noflush of ${what}`, result);
}

/** STATUS: both tools answer and the nat table accepts a (test-only) transaction. */
export async function checkUsable(): Promise<void> {
  const list = await exec(BINARIES[4].iptables, ["-t", "nat", "-S", "POSTROUTING"]);
  if (list.code !== 0) throw failure(`${BINARIES[4].iptables} -t nat -S POSTROUTING`, list);
  const test = await exec(BINARIES[4].restore, ["--noflush", "--test"], "*nat\nCOMMIT\n");
  if (test.code !== 0) throw failure(`${BINARIES[4].restore} --test`, test);
}
