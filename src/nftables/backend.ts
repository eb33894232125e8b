// portmap's nftables tables through the `nft` binary on PATH (the one portmap's knftables runs): read a
// family's `hostports` chain, apply one batch.
import { CniError, Code } from "../cni/errors.js";
import type { Family } from "../policy/ip.js";
import { type RunResult, run } from "../system/run.js";
import { CHAIN, NFT_FAMILY, type NftRule, TABLE, parseChainJson } from "./rules.js";

// `nft list chain` of a table portmap never created (iptables backend, or nothing yet).
const NO_CHAIN = /No such file or directory/;
const BUSY = /Resource temporarily unavailable|Device or resource busy/;

/** A batch named a rule that is gone: a concurrent DEL (or ADD) of the pod changed its rules. */
export class RulesChanged extends CniError {}

function failure(what: string, result: RunResult): CniError {
  const stderr = result.stderr.trim();
  return new CniError(BUSY.test(stderr) ? Code.TryAgainLater : Code.IoFailure, `${what} failed (exit ${result.code})`, stderr);
}

/**
 * The rules of `<family> cni_hostport hostports`; undefined when that chain does not exist, or when there is
 * no nft at all (then portmap cannot have written nftables rules either).
 */
export async function readHostports(family: Family): Promise<NftRule[] | undefined> {
  const args = ["-a", "-j", "list", "chain", NFT_FAMILY[family], TABLE, CHAIN];
  let result: RunResult;
  try {
    result = await run("nft", args);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(Code.IoFailure, `cannot run nft: ${(err as Error).message}`);
  }
  if (result.code === 0) return parseChainJson(result.stdout);
  if (NO_CHAIN.test(result.stderr)) return undefined;
  throw failure(`nft ${args.join(" ")}`, result);
}

// The kernel's limit for one argument (MAX_ARG_STRLEN), less a margin: ~350 rules of a pod.
const MAX_BATCH = 120 * 1024;

/**
 * Applies a JSON batch: one transaction, all of it or nothing. It goes as nft's argument, not on stdin:
 * `nft -f -` opens /dev/stdin, which fails on the socket Node gives a child as its stdin.
 */
export async function applyBatch(batch: string): Promise<void> {
  if (Buffer.byteLength(batch) > MAX_BATCH) {
    throw new CniError(Code.IoFailure, `the pod's nftables rewrite is ${Buffer.byteLength(batch)} bytes, over nft's argument limit of ${MAX_BATCH}`);
  }
  let result: RunResult;
  try {
    result = await run("nft", ["-j", batch]);
  } catch (err) {
    throw new CniError(Code.IoFailure, `cannot run nft: ${(err as Error).message}`);
  }
  if (result.code === 0) return;
  if (NO_CHAIN.test(result.stderr)) {
    throw new RulesChanged(Code.TryAgainLater, "the pod's nftables rules changed while they were rewritten", result.stderr.trim());
  }
  throw failure("nft -j (rewrite of the pod's hostports rules)", result);
}

/** STATUS: nft answers (the nftables backend needs nothing more: portmap creates its tables). */
export async function checkNftUsable(): Promise<void> {
  let result: RunResult;
  try {
    result = await run("nft", ["--check", `add table ip ${TABLE}`]);
  } catch (err) {
    throw new CniError(Code.IoFailure, `cannot run nft: ${(err as Error).message}`);
  }
  if (result.code !== 0) throw failure("nft --check", result);
}
