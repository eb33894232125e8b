// The programs a plugin run starts, seen with strace: the plugin's binary behind a wrapper that execs it under
// `strace -f -e trace=execve`. A test tool only (the plugin never runs a shell).
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { pluginBinary } from "./paths.js";

const STRACE = ["/usr/bin/strace", "/bin/strace"].find((p) => existsSync(p)) ?? "strace";
const quoted = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** A plugin binary `dir/name` that runs ours under strace; `programs()` lists what it started since the last call. */
export function tracedPlugin(dir: string, name: string): { bin: string; programs: () => string[] } {
  const bin = join(dir, name);
  const trace = `${bin}.trace`;
  const argv = [
    STRACE,
    "-f",
    "-qq",
    "-s",
    "4096",
    "-e",
    "trace=execve",
    "-e",
    "signal=none",
    "-o",
    trace,
    pluginBinary(),
  ];
  writeFileSync(bin, `#!/bin/sh\nexec ${argv.map(quoted).join(" ")}\n`, { mode: 0o755 });
  return {
    bin,
    // `name arg …` of every program started (the failed execve of a PATH search left out), then forgotten.
    programs() {
      const lines = readFileSync(trace, "utf8").split("\n");
      rmSync(trace);
      return lines.flatMap((line) => {
        const m = /execve\("([^"]*)", \[(.*?)\]\)?.* = 0$/.exec(line);
        if (!m) return [];
        const args = [...(m[2] as string).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1] as string);
        return [[basename(m[1] as string), ...args.slice(1)].join(" ")];
      });
    },
  };
}
