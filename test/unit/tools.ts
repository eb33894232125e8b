// Stand-ins for the tools the plugin runs (ip, iptables, nft, …), first on a PATH of their own: each prints what
// the real tool printed (recorded under test/fixtures) and logs every call, its arguments and its stdin.
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, vi } from "vitest";
import { fixture } from "./fixtures.js";

/** What a stand-in answers: the first answer whose `when` is part of its arguments (joined by spaces), or has none. */
export interface Answer {
  when?: string;
  stdout?: string;
  stderr?: string;
  code?: number;
}

export interface ToolCall {
  tool: string;
  args: string[];
  stdin: string;
}

export interface Tools {
  /** The directory of the stand-ins: the whole PATH of a test that uses them. */
  bin: string;
  /** Every call so far, in order. */
  calls(): ToolCall[];
  remove(): void;
}

/** Stand-ins for `tools` in a new directory; a tool not named is not on that PATH. */
export function standInTools(tools: Record<string, readonly Answer[]>): Tools {
  const dir = mkdtempSync(join(tmpdir(), "pmh-tools-"));
  const bin = join(dir, "bin");
  const log = join(dir, "log");
  mkdirSync(bin);
  mkdirSync(log);
  for (const [tool, answers] of Object.entries(tools)) {
    const cases = answers.map((a, i) => {
      const file = (what: string, text: string | undefined) => {
        const path = join(dir, `${tool}.${i}.${what}`);
        writeFileSync(path, text ?? "");
        return path;
      };
      const out = file("stdout", a.stdout);
      const err = file("stderr", a.stderr);
      const pattern = a.when === undefined ? "*" : `*${JSON.stringify(a.when)}*`;
      return `  ${pattern}) /bin/cat '${out}'; /bin/cat '${err}' >&2; exit ${a.code ?? 0} ;;`;
    });
    const script = [
      "#!/bin/sh",
      `call='${log}'/$(/bin/date +%s%N)-$$`,
      `printf '%s\\n' '${tool}' > "$call.tool"`,
      `printf '%s\\0' "$@" > "$call.args"`,
      `/bin/cat > "$call.stdin"`,
      'case "$*" in',
      ...cases,
      "esac",
      `echo '${tool} (stand-in): no answer for' "$*" >&2`,
      "exit 99",
      "",
    ].join("\n");
    writeFileSync(join(bin, tool), script);
    chmodSync(join(bin, tool), 0o755);
  }
  return {
    bin,
    calls: () =>
      readdirSync(log)
        .filter((f) => f.endsWith(".tool"))
        .sort()
        .map((f) => {
          const base = join(log, f.slice(0, -".tool".length));
          return {
            tool: readFileSync(`${base}.tool`, "utf8").trim(),
            args: readFileSync(`${base}.args`, "utf8").split("\0").slice(0, -1),
            stdin: readFileSync(`${base}.stdin`, "utf8"),
          };
        }),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** One line of JSON of a recorded file, as `ip -j` prints it without -p. */
const compact = (name: string) => JSON.stringify(JSON.parse(fixture(name)));

/**
 * `ip -j -batch -` of the e2e node namespace (recorded: test/fixtures/host): its addresses, then the default
 * routes of each family asked for, one line each.
 */
export const IP: readonly Answer[] = [
  {
    stdout: `${compact("host/ip-address.json")}\n${compact("host/ip-route-default-v4.json")}\n${compact("host/ip-route-default-v6.json")}\n`,
  },
];

/**
 * For a test file: a function that puts stand-ins alone on PATH for the running test; they are removed, and PATH
 * restored, after it.
 */
export function useToolsOnPath(): (answers: Record<string, readonly Answer[]>) => Tools {
  let tools: Tools | undefined;
  afterEach(() => {
    vi.unstubAllEnvs();
    tools?.remove();
    tools = undefined;
  });
  return (answers) => {
    tools = standInTools(answers);
    vi.stubEnv("PATH", tools.bin);
    return tools;
  };
}
