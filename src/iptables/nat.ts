// The nat table through the iptables binaries: those on PATH (the ones portmap ran, nft or legacy alike), or one
// variant's by name (`iptables-legacy`, `iptables-nft`, …) where the operator commands read both.
import { readFileSync } from "node:fs";
import type { CniError } from "../core/errors.js";
import type { Family } from "../core/ip.js";
import type { IptablesVariant } from "../core/node.js";
import type { Rule } from "../core/rule.js";
import { type Runner, type RunResult, run } from "../host/run.js";
import { NotInstalled, runTool, toolFailure } from "../host/tool.js";
import { appendRules, restorePayload, swapPayload } from "./text.js";

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
// A transaction takes time by its size: iptables-nft-restore applied the keeper's rebuild of 5,000 pods' chains
// (70,000 lines, 7 MB) in 12 s here. A second more per 100 kB (about 1,000 lines) lets a slower machine finish.
const limitFor = (payload: string): number => LIMIT_MS + Math.floor(payload.length / 100_000) * 1_000;

const failure = (what: string, result: RunResult): CniError => toolFailure(what, result, BUSY);

// iptables-legacy asked to list a nat table that does not exist creates it (the kernel loading its module): a
// node whose runtime uses iptables-nft would get a second, empty nat table from merely being looked at. The
// kernel names the x_tables tables of this network namespace; one without a nat table holds no rules.
const LEGACY_TABLES: Record<Family, string> = { 4: "/proc/net/ip_tables_names", 6: "/proc/net/ip6_tables_names" };
function legacyNatExists(family: Family): boolean {
  try {
    return readFileSync(LEGACY_TABLES[family], "utf8").split("\n").includes("nat");
  } catch {
    return false; // no x_tables for this family at all
  }
}

/** One variant's nat table (or the one of the binaries on PATH): reads and atomic writes. */
export interface Nat {
  /** The rules of a chain; undefined when it does not exist, or there is no such iptables at all. */
  readChain(family: Family, chain: string, runner?: Runner): Promise<Rule[] | undefined>;
  /** Replaces the chain's rules in one iptables-restore transaction; no other chain or rule is touched. */
  writeChain(family: Family, chain: string, rules: readonly Rule[], runner?: Runner): Promise<void>;
  /**
   * Deletes the rules `from` and appends `to`, in one transaction. False when it changed nothing because it
   * refused a line of its input (a rule to delete, or its chain, is not there: iptables-nft checks deletions
   * last, so it may name a rule it could not append to a missing chain first), or there is no iptables; any
   * other failure is a CniError, as a write's.
   */
  swapRules(family: Family, from: readonly Rule[], to: readonly Rule[], runner?: Runner): Promise<boolean>;
  /** The whole nat table as `iptables -S` prints it (`-P`, `-N`, `-A` lines); legacy's absent table: "". */
  readTable(family: Family): Promise<string>;
  /** Applies an iptables-restore payload with --noflush: one transaction, all of it or nothing. */
  restore(family: Family, payload: string, what: string, runner?: Runner): Promise<void>;
  /** STATUS: the tool answers and the nat table accepts a (test-only) transaction. */
  checkUsable(): Promise<void>;
}

/** The nat table of `variant`'s binaries; without one, of those on PATH. */
export function nat(variant?: IptablesVariant): Nat {
  const name = (tool: "iptables" | "ip6tables", restore = false) =>
    `${tool}${variant ? `-${variant}` : ""}${restore ? "-restore" : ""}`;
  const binaries: Record<Family, { iptables: string; restore: string }> = {
    4: { iptables: name("iptables"), restore: name("iptables", true) },
    6: { iptables: name("ip6tables"), restore: name("ip6tables", true) },
  };
  const exec = (file: string, args: readonly string[], input?: string, runner: Runner = run) =>
    runTool(file, [...WAIT, ...args], input === undefined ? LIMIT_MS : limitFor(input), input, runner);
  const missing = (err: Error): undefined => {
    if (err instanceof NotInstalled) return undefined;
    throw err;
  };
  const restore = async (family: Family, payload: string, what: string, runner: Runner = run) => {
    const bin = binaries[family].restore;
    const result = await exec(bin, ["--noflush"], payload, runner);
    if (result.code !== 0) throw failure(`${bin} --noflush of ${what}`, result);
  };
  return {
    async readChain(family, chain, runner = run) {
      const bin = binaries[family].iptables;
      const result = await exec(bin, ["-t", "nat", "-S", chain], undefined, runner).catch(missing);
      if (result === undefined) return undefined;
      if (result.code === 0) return appendRules(result.stdout);
      if (NO_CHAIN.test(result.stderr)) return undefined;
      throw failure(`${bin} -t nat -S ${chain}`, result);
    },
    writeChain: (family, chain, rules, runner = run) =>
      restore(family, restorePayload(chain, rules), `chain ${chain}`, runner),
    async swapRules(family, from, to, runner = run) {
      const bin = binaries[family].restore;
      const result = await exec(bin, ["--noflush"], swapPayload(from, to), runner).catch(missing);
      if (result === undefined) return false;
      if (result.code === 0) return true;
      if (REFUSED_LINE.test(result.stderr)) return false;
      throw failure(`${bin} --noflush of chain ${from[0]?.chain ?? to[0]?.chain}`, result);
    },
    async readTable(family) {
      if (variant === "legacy" && !legacyNatExists(family)) return "";
      const bin = binaries[family].iptables;
      const result = await exec(bin, ["-t", "nat", "-S"]);
      if (result.code !== 0) throw failure(`${bin} -t nat -S`, result);
      return result.stdout;
    },
    restore,
    async checkUsable() {
      const list = await exec(binaries[4].iptables, ["-t", "nat", "-S", "POSTROUTING"]);
      if (list.code !== 0) throw failure(`${binaries[4].iptables} -t nat -S POSTROUTING`, list);
      const test = await exec(binaries[4].restore, ["--noflush", "--test"], "*nat\nCOMMIT\n");
      if (test.code !== 0) throw failure(`${binaries[4].restore} --test`, test);
    },
  };
}
