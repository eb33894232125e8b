// portmap's nftables tables through the `nft` binary on PATH (the one portmap's knftables runs): read a
// family's `hostports` chain, apply one batch.
import { CniError, Code, RulesChanged } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { Rule } from "../core/rule.js";
import { type Runner, type RunResult, run } from "../host/run.js";
import { NotInstalled, runTool, toolFailure } from "../host/tool.js";
import { CHAIN, NFT_FAMILY, parseChainJson, podRulesOfListing, TABLE } from "./json.js";

// `nft list chain` of a table portmap never created (iptables backend, or nothing yet); in a batch: a rule
// handle that is gone.
const NOT_FOUND = /No such file or directory/;
const BUSY = /Resource temporarily unavailable|Device or resource busy/;
// nft takes no lock; a listing or a pod's batch takes milliseconds. A call killed at the limit is "try again".
const LIMIT_MS = 15_000;
// The kernel's limit for one argument (MAX_ARG_STRLEN), less a margin: about 350 rules of a pod.
const MAX_BATCH = 120 * 1024;

/** An nft run; undefined when there is no nft at all (portmap cannot have written nftables rules either). */
async function nft(args: readonly string[], runner: Runner = run): Promise<RunResult | undefined> {
  try {
    return await runTool("nft", args, LIMIT_MS, undefined, runner);
  } catch (err) {
    if (err instanceof NotInstalled) return undefined;
    throw err;
  }
}

const failure = (what: string, result: RunResult): CniError => toolFailure(what, result, BUSY);

/** `nft -a -j list chain` of `<family> cni_hostport <chain>`; undefined when that chain (or nft) does not exist. */
async function listChain(family: Family, chain: string, runner: Runner): Promise<string | undefined> {
  const args = ["-a", "-j", "list", "chain", NFT_FAMILY[family], TABLE, chain];
  const result = await nft(args, runner);
  if (result === undefined) return undefined;
  if (result.code === 0) return result.stdout;
  if (NOT_FOUND.test(result.stderr)) return undefined;
  throw failure(`nft ${args.join(" ")}`, result);
}

/** The rules of `<family> cni_hostport <chain>` (default `hostports`); undefined when that chain (or nft) does not exist. */
export async function readHostports(family: Family, chain = CHAIN, runner: Runner = run): Promise<Rule[] | undefined> {
  const text = await listChain(family, chain, runner);
  return text === undefined ? undefined : parseChainJson(text);
}

/** One container's rules of a family's `hostports` chain (none: the chain does not exist). */
export async function readPodHostports(family: Family, containerId: string, runner: Runner = run): Promise<Rule[]> {
  const text = await listChain(family, CHAIN, runner);
  return text === undefined ? [] : podRulesOfListing(text, containerId);
}

/**
 * Applies a JSON batch: one transaction, all of it or nothing. It goes as nft's argument, not on stdin:
 * `nft -f -` opens /dev/stdin, which fails on the socket Node gives a child as its stdin.
 */
export async function applyBatch(batch: string, runner: Runner = run): Promise<void> {
  const size = Buffer.byteLength(batch);
  if (size > MAX_BATCH)
    throw new CniError(
      Code.IoFailure,
      `the nftables batch is ${size} bytes, over nft's argument limit of ${MAX_BATCH}`,
    );
  const result = await nft(["-j", batch], runner);
  if (result === undefined) throw new CniError(Code.IoFailure, "cannot run nft: not found on PATH");
  if (result.code === 0) return;
  if (NOT_FOUND.test(result.stderr))
    throw new RulesChanged(
      Code.TryAgainLater,
      "the nftables rules changed while they were rewritten",
      result.stderr.trim(),
    );
  throw failure("nft -j (a batch on portmap's cni_hostport tables)", result);
}

/** STATUS: nft answers and accepts a (check-only) transaction; portmap creates its tables itself. */
export async function checkNftUsable(): Promise<void> {
  const result = await nft(["--check", `add table ip ${TABLE}`]);
  if (result === undefined) throw new CniError(Code.IoFailure, "cannot run nft: not found on PATH");
  if (result.code !== 0) throw failure("nft --check", result);
}
