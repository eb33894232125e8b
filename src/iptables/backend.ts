// The nat table through the iptables binaries on PATH (the ones portmap used: nft or legacy alike).
import { CniError, Code } from "../cni/errors.js";
import type { Family } from "../policy/ip.js";
import { type RunResult, run } from "../system/run.js";
import { appendRules, restorePayload } from "./rules.js";

const BINARIES: Record<Family, { iptables: string; restore: string }> = {
  4: { iptables: "iptables", restore: "iptables-restore" },
  6: { iptables: "ip6tables", restore: "ip6tables-restore" },
};

// iptables-nft 1.8.9 answers `-S` of a missing chain with "… is incompatible, use 'nft' tool". A chain
// it cannot read is as good as missing to us: we never write one we could not read.
const NO_CHAIN = /No chain\/target\/match by that name|does not exist|is incompatible/;
// Lock contention (legacy) or a concurrent nftables transaction: the runtime should retry.
const BUSY = /xtables lock|Resource temporarily unavailable|Device or resource busy/;

async function exec(file: string, args: readonly string[], input?: string): Promise<RunResult> {
  try {
    return await run(file, args, input);
  } catch (err) {
    throw new CniError(Code.IoFailure, `cannot run ${file}: ${(err as Error).message}`);
  }
}

function failure(what: string, result: RunResult): CniError {
  const stderr = result.stderr.trim();
  return new CniError(BUSY.test(stderr) ? Code.TryAgainLater : Code.IoFailure, `${what} failed (exit ${result.code})`, stderr);
}

/**
 * The `-A` rules of a nat chain; undefined when the chain does not exist, or when there is no iptables at
 * all (a node left to portmap's nftables backend: portmap cannot have written iptables rules there).
 */
export async function readChain(family: Family, chain: string): Promise<string[] | undefined> {
  const bin = BINARIES[family].iptables;
  let result: RunResult;
  try {
    result = await run(bin, ["-w", "-t", "nat", "-S", chain]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(Code.IoFailure, `cannot run ${bin}: ${(err as Error).message}`);
  }
  if (result.code === 0) return appendRules(result.stdout);
  if (NO_CHAIN.test(result.stderr)) return undefined;
  throw failure(`${bin} -t nat -S ${chain}`, result);
}

/** Replaces the chain's rules in one iptables-restore transaction; no other chain or rule is touched. */
export async function writeChain(family: Family, chain: string, rules: readonly string[]): Promise<void> {
  await restoreNat(family, restorePayload(chain, rules), `chain ${chain}`);
}

/** The whole nat table as `iptables -S` prints it (`-P`, `-N`, `-A` lines). */
export async function readTable(family: Family): Promise<string> {
  const bin = BINARIES[family].iptables;
  const result = await exec(bin, ["-w", "-t", "nat", "-S"]);
  if (result.code !== 0) throw failure(`${bin} -t nat -S`, result);
  return result.stdout;
}

/** Applies an iptables-restore payload with --noflush: one transaction, all of it or nothing. */
export async function restoreNat(family: Family, payload: string, what: string): Promise<void> {
  const bin = BINARIES[family].restore;
  const result = await exec(bin, ["-w", "--noflush"], payload);
  if (result.code !== 0) throw failure(`${bin} --noflush of ${what}`, result);
}

/** STATUS: both tools answer and the nat table accepts a (test-only) transaction. */
export async function checkUsable(): Promise<void> {
  const list = await exec(BINARIES[4].iptables, ["-w", "-t", "nat", "-S", "POSTROUTING"]);
  if (list.code !== 0) throw failure(`${BINARIES[4].iptables} -t nat -S POSTROUTING`, list);
  const test = await exec(BINARIES[4].restore, ["-w", "--noflush", "--test"], "*nat\nCOMMIT\n");
  if (test.code !== 0) throw failure(`${BINARIES[4].restore} --test`, test);
}
