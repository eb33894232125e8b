// The iptables edge of the rule model: `iptables -S` / iptables-save lines read into Rules, Rules printed back as
// `-A`/`-D`/`-I` lines and iptables-restore input. formatRule(parseRule(line)) is the line, byte for byte.
import { type AddressMatch, addressMatch, type Match, type Rule, type Target } from "../core/rule.js";

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

/** A comment as iptables prints it: quoted, `"` and `\` escaped. */
const quote = (text: string): string => `"${text.replace(/["\\]/g, "\\$&")}"`;
const unquote = (token: string): string => token.slice(1, -1).replace(/\\(.)/g, "$1");

/** iptables prints every address with its prefix; the model keeps a host address bare (core addressMatch). */
const prefixed = (address: string): string =>
  address.includes("/") ? address : `${address}/${address.includes(":") ? 128 : 32}`;

// Options that start a new part of a rule in `iptables -S` output (module options are `--long`).
const STARTS = new Set(["-s", "-d", "-p", "-i", "-o", "-f", "-m", "-j", "-g"]);
const DIGITS = /^[1-9]\d{0,4}$/;

function match(group: readonly string[]): Match {
  const [flag, a, b, c] = group;
  if (group.length === 2 && flag === "-p") return { kind: "protocol", protocol: a as string };
  if (group.length === 4 && flag === "-m" && b === "--dport" && DIGITS.test(c as string))
    return { kind: "dport", protocol: a as string, port: Number(c) };
  if (
    group.length === 4 &&
    flag === "-m" &&
    a === "comment" &&
    b === "--comment" &&
    c?.startsWith('"') &&
    quote(unquote(c)) === c
  )
    return { kind: "comment", text: unquote(c) };
  return { kind: "other", text: group.join(" ") };
}

function target(group: readonly string[]): Target {
  const [flag, name, option, value] = group;
  if (flag === "-j" && group.length === 4 && name === "DNAT" && option === "--to-destination")
    return { kind: "dnat", to: value as string };
  if (flag === "-j" && group.length === 4 && name === "MARK" && option === "--set-xmark")
    return { kind: "mark", mark: value as string };
  if (flag === "-j" && group.length === 2 && name === "MASQUERADE") return { kind: "masquerade" };
  if (flag === "-j" && group.length === 2) return { kind: "jump", chain: name as string };
  return { kind: "other", text: group.join(" ") };
}

function address(tokens: readonly string[], at: number, flag: string): AddressMatch | undefined {
  const negated = tokens[at] === "!";
  if (tokens[negated ? at + 1 : at] !== flag) return undefined;
  const value = tokens[negated ? at + 2 : at + 1];
  return value === undefined ? undefined : addressMatch(value, negated);
}

/** One `-A CHAIN …` line. A line this reader cannot reproduce exactly is kept as one opaque part. */
export function parseRule(line: string): Rule {
  const tokens = tokenize(line);
  const chain = tokens[1] as string;
  const rule: Rule = { chain, matches: [], target: { kind: "none" } };
  let i = 2;
  const source = address(tokens, i, "-s");
  if (source) {
    rule.source = source;
    i += source.negated ? 3 : 2;
  }
  const destination = address(tokens, i, "-d");
  if (destination) {
    rule.destination = destination;
    i += destination.negated ? 3 : 2;
  }
  while (i < tokens.length) {
    const start = i;
    const isStart = (k: number) =>
      STARTS.has(tokens[k] as string) || (tokens[k] === "!" && STARTS.has(tokens[k + 1] as string));
    i += tokens[i] === "!" ? 2 : 1;
    while (i < tokens.length && !isStart(i)) i++;
    const group = tokens.slice(start, i);
    if (group[0] === "-j" || group[0] === "-g") {
      // A target takes the rest of the line.
      rule.target = target(tokens.slice(start));
      break;
    }
    rule.matches.push(match(group));
  }
  if (formatRule(rule) === line) return rule;
  return { chain, matches: [{ kind: "other", text: line.slice(`-A ${chain} `.length) }], target: { kind: "none" } };
}

function matchText(m: Match): string {
  switch (m.kind) {
    case "protocol":
      return `-p ${m.protocol}`;
    case "dport":
      return `-m ${m.protocol} --dport ${m.port}`;
    case "comment":
      return `-m comment --comment ${quote(m.text)}`;
    case "other":
      return m.text;
  }
}

function targetText(t: Target): string[] {
  switch (t.kind) {
    case "dnat":
      return [`-j DNAT --to-destination ${t.to}`];
    case "jump":
      return [`-j ${t.chain}`];
    case "masquerade":
      return ["-j MASQUERADE"];
    case "mark":
      return [`-j MARK --set-xmark ${t.mark}`];
    case "other":
      return [t.text];
    case "none":
      return [];
  }
}

const addressText = (flag: string, a: AddressMatch | undefined): string[] =>
  a ? [`${a.negated ? "! " : ""}${flag} ${prefixed(a.address)}`] : [];

/**
 * The rule as iptables prints it (`-A`), or as the command that deletes it (`-D`) or puts it first (`-I … 1`).
 * iptables prints the source, then the destination, right after the chain: so does this.
 */
export function formatRule(rule: Rule, command: "-A" | "-D" | "-I" = "-A"): string {
  return [
    command === "-I" ? `-I ${rule.chain} 1` : `${command} ${rule.chain}`,
    ...addressText("-s", rule.source),
    ...addressText("-d", rule.destination),
    ...rule.matches.map(matchText),
    ...targetText(rule.target),
  ].join(" ");
}

/** The rules of `iptables -S <chain>` output (its `-A` lines). */
export function appendRules(output: string): Rule[] {
  return output
    .split("\n")
    .filter((line) => line.startsWith("-A "))
    .map(parseRule);
}

/** iptables-restore input that atomically replaces one nat chain and touches nothing else (with --noflush). */
export function restorePayload(chain: string, rules: readonly Rule[]): string {
  return natTransaction([`:${chain} - [0:0]`, ...rules.map((r) => formatRule(r))]);
}

/**
 * iptables-restore input that deletes the rules `from` and appends `to` (with --noflush): the transaction fails,
 * changing nothing, when one rule of `from` is not there.
 */
export function swapPayload(from: readonly Rule[], to: readonly Rule[]): string {
  return natTransaction([...from.map((r) => formatRule(r, "-D")), ...to.map((r) => formatRule(r))]);
}

/** One nat-table transaction for iptables-restore --noflush (`:CHAIN` lines first, then rule commands). */
export function natTransaction(lines: readonly string[]): string {
  return ["*nat", ...lines, "COMMIT", ""].join("\n");
}
