// A long-running event source (`ip -o monitor address`, `nft monitor ruleset`): one child whose every output
// line is an event. It has no time limit by design (it runs as long as the keeper) — the one exception to
// host/run.ts; it is bounded instead by `signal`, which kills it, and restarted with a growing delay if it dies.
import { spawn } from "node:child_process";

const FIRST_DELAY_MS = 1_000;
const MAX_DELAY_MS = 30_000;
// A child that ran this long was healthy: its next restart starts from the first delay again.
const HEALTHY_MS = 60_000;

export function monitor(
  file: string,
  args: readonly string[],
  onLine: (line: string) => void,
  signal: AbortSignal,
  log: (message: string) => void,
): void {
  let delay = FIRST_DELAY_MS;
  const start = (): void => {
    if (signal.aborted) return;
    const started = Date.now();
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    let rest = "";
    child.stdout.on("data", (chunk: Buffer) => {
      const lines = (rest + chunk.toString("utf8")).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") onLine(line);
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 1000) stderr += chunk.toString("utf8");
    });
    const kill = (): void => void child.kill("SIGKILL");
    signal.addEventListener("abort", kill, { once: true });
    let ended = false;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      signal.removeEventListener("abort", kill);
      if (signal.aborted) return;
      if (Date.now() - started > HEALTHY_MS) delay = FIRST_DELAY_MS;
      log(`${file} ${args.join(" ")} ${why}${stderr.trim() ? `: ${stderr.trim()}` : ""}; restarting in ${delay} ms`);
      setTimeout(start, delay).unref();
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    };
    child.on("error", (err) => end(`cannot run (${err.message})`));
    child.on("close", (code, sig) => end(`ended (${sig ?? `exit ${code}`})`));
  };
  start();
}
