// Stand-ins first on PATH for fault injection and auditing: iptables wrappers that log every invocation
// (argv and stdin) and then run the real binary, and iptables-restore replacements that fail or are killed
// half-way. None of them ever pretends success. Plus a raw plugin runner (bytes on stdin, any environment,
// optional SIGKILL after a delay) for inputs the libcni-like invoker cannot produce.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { run } from "./exec.js";
import { nsRunOk } from "./netns.js";
import { pluginBinary, pluginPath } from "./paths.js";

/** The iptables programs the plugin (and portmap) may run. */
export const IPTABLES_PROGRAMS = [
  "iptables",
  "ip6tables",
  "iptables-restore",
  "ip6tables-restore",
  "iptables-save",
  "ip6tables-save",
] as const;
export type IptablesProgram = (typeof IPTABLES_PROGRAMS)[number];

/** What a stand-in does: log and run the real program, exit non-zero at once, or feed the real one half its input and be SIGKILLed. */
export type StandinKind = "log" | "fail" | "killed-mid-write";

export interface Standins {
  /** The directory holding the stand-ins (first on `path`). */
  dir: string;
  /** Where invocations are logged. */
  logDir: string;
  /** PATH for the plugin: the stand-ins, then `basePath` (where the real programs are found). */
  path: string;
}

function script(kind: StandinKind, program: string, dir: string, logDir: string): string {
  // The stand-in's own directory is dropped from PATH, so `program` below is the next one: the real binary
  // (or a legacy link before it). Coreutils come after it: the single executable's suite runs on a PATH
  // without /usr/bin.
  const head = [
    "#!/bin/bash",
    `export PATH="\${PATH#${dir}:}:/usr/bin:/bin"`,
    `log="${logDir}/$(date +%s%N)-$$-${program}"`,
    `printf '%s\\0' "$@" > "$log.argv"`,
    `cat > "$log.stdin"`,
  ];
  switch (kind) {
    case "log":
      return [...head, `${program} "$@" < "$log.stdin"`, "rc=$?", `echo $rc > "$log.rc"`, "exit $rc", ""].join("\n");
    case "fail":
      return [
        ...head,
        `echo fail > "$log.rc"`,
        `echo "${program}: injected failure (stand-in)" >&2`,
        "exit 4",
        "",
      ].join("\n");
    case "killed-mid-write":
      // The real program gets the first half of the input on a pipe that stays open, then it and this
      // script are SIGKILLed: iptables-restore applies nothing before COMMIT.
      return [
        ...head,
        `fifo="$log.fifo"`,
        `mkfifo "$fifo"`,
        `${program} "$@" < "$fifo" & child=$!`,
        `exec 3> "$fifo"`,
        `size=$(stat -c %s "$log.stdin")`,
        `head -c $((size / 2)) "$log.stdin" >&3`,
        "sleep 0.3",
        `if kill -0 $child 2>/dev/null; then echo killed > "$log.rc"; else echo exited-early > "$log.rc"; fi`,
        "kill -KILL $child",
        "wait $child 2>/dev/null",
        `rm -f "$fifo"`,
        "kill -KILL $$",
        "",
      ].join("\n");
  }
}

/**
 * Creates stand-ins in a new directory under `parent`: every program of `programs` (default
 * IPTABLES_PROGRAMS; e.g. ["nft"]) is a logging wrapper unless `kinds` says otherwise. `basePath` is the PATH after them (default: pluginPath(), or e.g.
 * legacyIptablesPath()).
 */
export function createStandins(
  parent: string,
  kinds: Partial<Record<IptablesProgram, StandinKind>> = {},
  basePath = pluginPath(),
  programs: readonly string[] = IPTABLES_PROGRAMS,
): Standins {
  const dir = mkdtempSync(join(parent, "standins-"));
  const logDir = join(dir, "log");
  mkdirSync(logDir);
  for (const program of programs as IptablesProgram[]) {
    writeFileSync(join(dir, program), script(kinds[program] ?? "log", program, dir, logDir), { mode: 0o755 });
  }
  return { dir, logDir, path: `${dir}:${basePath}` };
}

export interface Invocation {
  program: string;
  argv: string[];
  stdin: string;
  /** "0", "1", …, "fail", "killed", or undefined while (or if) it has not finished. */
  rc: string | undefined;
}

/** Every logged invocation, oldest first. */
export function invocations(s: Standins): Invocation[] {
  const names = readdirSync(s.logDir)
    .filter((f) => f.endsWith(".argv"))
    .sort();
  return names.map((f) => {
    const base = join(s.logDir, f.slice(0, -".argv".length));
    const argv = readFileSync(`${base}.argv`, "utf8").split("\0").slice(0, -1);
    const program = /^\d+-\d+-(.+)$/.exec(basename(base))?.[1] ?? "?";
    const stdin = existsSync(`${base}.stdin`) ? readFileSync(`${base}.stdin`, "utf8") : "";
    const rc = existsSync(`${base}.rc`) ? readFileSync(`${base}.rc`, "utf8").trim() : undefined;
    return { program, argv, stdin, rc };
  });
}

/** Waits (bounded) until every logged invocation has finished: after a SIGKILLed plugin its children run on. */
export async function waitInvocationsDone(s: Standins, timeoutMs = 10_000): Promise<Invocation[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const all = invocations(s);
    if (all.every((i) => i.rc !== undefined)) return all;
    if (Date.now() > deadline)
      throw new Error(
        `stand-in invocations still running after ${timeoutMs} ms: ${all
          .filter((i) => i.rc === undefined)
          .map((i) => i.program)
          .join(", ")}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RawRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, when it is a JSON object. */
  output?: Record<string, unknown>;
}

export interface RawRunOptions {
  /** The plugin's whole environment (PATH defaults to pluginPath()). */
  env: Record<string, string>;
  /** Bytes on stdin (then closed). */
  input?: string | Buffer;
  /** SIGKILL the plugin after this many ms. */
  killAfterMs?: number;
  /** Safety net: SIGKILL after this long (default 30 s). */
  timeoutMs?: number;
  binary?: string;
}

/**
 * Runs the plugin binary in namespace `ns` (`ip netns exec` execs it: the pid is the plugin's own) with
 * exactly the given environment and stdin bytes.
 */
export async function runPluginRaw(ns: string, opts: RawRunOptions): Promise<RawRun> {
  const env = { PATH: pluginPath(), ...opts.env };
  const timeoutMs = Math.min(opts.killAfterMs ?? Infinity, opts.timeoutMs ?? 30_000);
  const r = await run("ip", ["netns", "exec", ns, opts.binary ?? pluginBinary()], {
    env,
    input: opts.input ?? "",
    timeoutMs,
  });
  const raw: RawRun = { code: r.signal ? null : r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  try {
    const v: unknown = JSON.parse(r.stdout);
    if (v !== null && typeof v === "object" && !Array.isArray(v)) raw.output = v as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return raw;
}

/** What a stack trace or an unhandled failure of a Node program looks like on stderr. */
export const CRASH_TRACE =
  /^\s+at .+[:(]|internal error|Uncaught|TypeError|RangeError|SyntaxError: |FATAL ERROR|Aborted|core dumped/m;

/**
 * Test-side repair: replaces the rules of one nat chain (creating it if needed) in one iptables-restore
 * transaction inside `ns`, with the iptables found on `path` (default: the plugins' PATH).
 */
export async function replaceChain(
  ns: string,
  family: 4 | 6,
  chain: string,
  rules: readonly string[],
  path = pluginPath(),
): Promise<void> {
  await nsRunOk(ns, family === 4 ? "iptables-restore" : "ip6tables-restore", ["-w", "--noflush"], {
    input: ["*nat", `:${chain} - [0:0]`, ...rules, "COMMIT", ""].join("\n"),
    env: { ...process.env, PATH: path },
  });
}
