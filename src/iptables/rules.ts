// Rules as `iptables -S` / iptables-save print them, and the rewrite that scopes a mapping's rules to host
// IPs. Pure: rules are text in, text out.
import { type Ip, hostCidr } from "../policy/ip.js";
import type { FamilyScope } from "../policy/resolve.js";

/** Splits a rule line into tokens, keeping quoted tokens (comments) exactly as printed. */
export function tokenize(line: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === " ") {
      i++;
      continue;
    }
    let j = i;
    if (line[i] === '"') {
      j++;
      while (j < line.length && line[j] !== '"') j += line[j] === "\\" ? 2 : 1;
      j++;
    } else {
      while (j < line.length && line[j] !== " ") j++;
    }
    tokens.push(line.slice(i, j));
    i = j;
  }
  return tokens;
}

/** The `-A` lines of `iptables -S <chain>` output. */
export function appendRules(output: string): string[] {
  return output.split("\n").filter((line) => line.startsWith("-A "));
}

/** The value of a non-negated option, e.g. `-p` → "tcp". */
export function option(tokens: readonly string[], flag: string): string | undefined {
  const i = tokens.indexOf(flag);
  return i > 0 && tokens[i - 1] !== "!" ? tokens[i + 1] : undefined;
}

function withoutDestination(tokens: readonly string[]): string[] {
  const i = tokens.indexOf("-d");
  return i < 0 ? [...tokens] : [...tokens.slice(0, i), ...tokens.slice(i + 2)];
}

/** Puts `-d` where iptables-save prints it: after `-A CHAIN` and any `-s ADDR`. */
function withDestination(tokens: readonly string[], cidr: string): string {
  const s = tokens.indexOf("-s");
  const at = s < 0 ? 2 : s + 2;
  return [...tokens.slice(0, at), "-d", cidr, ...tokens.slice(at)].join(" ");
}

function belongsTo(tokens: readonly string[], scope: FamilyScope, foreign: ReadonlySet<string>): boolean {
  if (option(tokens, "-p") !== scope.protocol || option(tokens, "--dport") !== String(scope.hostPort)) return false;
  const i = tokens.indexOf("-d");
  if (i < 0) return true;
  return tokens[i - 1] !== "!" && !foreign.has(tokens[i + 1] ?? "");
}

export interface ScopedChain {
  rules: string[];
  /** Scopes with host IPs whose mapping has no rule in the chain. */
  missing: FamilyScope[];
}

/**
 * Rewrites one chain. Each scope's rules, stripped of any `-d`, are its template (portmap's rule set for
 * that mapping, in portmap's order, each rule once); the template is repeated with `-d` for every host IP,
 * at the place of the mapping's first rule. Every other rule stays as it is, where it is. Applying the
 * rewrite to its own output, or to it plus portmap's re-appended rules, gives the same chain.
 */
export function scopeChain(rules: readonly string[], scopes: readonly FamilyScope[]): ScopedChain {
  const foreign = scopes.map((s) => new Set(s.foreign.map(hostCidr)));
  const templates = scopes.map(() => new Map<string, string[]>());
  const slots: Array<string | number> = [];
  for (const rule of rules) {
    const tokens = tokenize(rule);
    const owner = scopes.findIndex((scope, i) => belongsTo(tokens, scope, foreign[i] as Set<string>));
    if (owner < 0) {
      slots.push(rule);
      continue;
    }
    const template = templates[owner] as Map<string, string[]>;
    if (template.size === 0) slots.push(owner);
    const bare = withoutDestination(tokens);
    template.set(bare.join(" "), bare);
  }
  const out = slots.flatMap((slot) => {
    if (typeof slot === "string") return [slot];
    const template = [...(templates[slot] as Map<string, string[]>).values()];
    return (scopes[slot] as FamilyScope).ips.flatMap((ip: Ip) => template.map((tokens) => withDestination(tokens, hostCidr(ip))));
  });
  return { rules: out, missing: scopes.filter((s, i) => s.ips.length > 0 && templates[i]?.size === 0) };
}

/** Same rules in the same order: a chain that needs no write. */
export const sameRules = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((rule, i) => rule === b[i]);

/** iptables-restore input that atomically replaces one nat chain and touches nothing else (with --noflush). */
export function restorePayload(chain: string, rules: readonly string[]): string {
  return natTransaction([`:${chain} - [0:0]`, ...rules]);
}

/** One nat-table transaction for iptables-restore --noflush (`:CHAIN` lines first, then rule commands). */
export function natTransaction(lines: readonly string[]): string {
  return ["*nat", ...lines, "COMMIT", ""].join("\n");
}
