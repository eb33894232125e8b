// A long-running event source: every output line an event, restarted with a delay when it dies, killed by the
// signal. The source is a stand-in printing what `nft monitor ruleset` printed (test/fixtures/host).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { monitor } from "../../../src/host/monitor.js";
import { fixture } from "../fixtures.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-monitor-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});
/** A program that prints the recorded events, then runs `then` (sh). */
function source(then: string): string {
  const events = join(dir, "events");
  writeFileSync(events, fixture("host/nft-monitor-ruleset.txt"));
  const file = join(dir, "nft");
  writeFileSync(file, `#!/bin/sh\n/bin/cat '${events}'\n${then}\n`);
  chmodSync(file, 0o755);
  return file;
}
const until = async (done: () => boolean) => {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("not within 10 s");
    await new Promise((r) => setTimeout(r, 20));
  }
};
const recorded = () =>
  fixture("host/nft-monitor-ruleset.txt")
    .split("\n")
    .filter((l) => l.trim() !== "");

describe("an event source", () => {
  it("gives each line it prints as an event, and is killed by the signal without a word", async () => {
    const lines: string[] = [];
    const log: string[] = [];
    const controller = new AbortController();
    monitor(
      source("exec /bin/sleep 30"),
      ["monitor", "ruleset"],
      (l) => lines.push(l),
      controller.signal,
      (m) => log.push(m),
    );
    await until(() => lines.length === recorded().length);
    expect(lines).toEqual(recorded());
    controller.abort();
    await new Promise((r) => setTimeout(r, 100));
    expect(log).toEqual([]);
  });

  it("says when it ended and restarts it after a delay", async () => {
    const lines: string[] = [];
    const log: string[] = [];
    const controller = new AbortController();
    const file = source("echo 'netlink: Error: cannot listen' >&2; exit 1");
    monitor(
      file,
      ["monitor", "ruleset"],
      (l) => lines.push(l),
      controller.signal,
      (m) => log.push(m),
    );
    await until(() => log.length > 0);
    expect(log).toEqual([
      `${file} monitor ruleset ended (exit 1): netlink: Error: cannot listen; restarting in 1000 ms`,
    ]);
    await until(() => lines.length === 2 * recorded().length);
    controller.abort();
  });

  it("says when it cannot run", async () => {
    const log: string[] = [];
    const controller = new AbortController();
    monitor(
      join(dir, "missing"),
      ["monitor"],
      () => {},
      controller.signal,
      (m) => log.push(m),
    );
    await until(() => log.length > 0);
    controller.abort();
    expect(log[0]).toMatch(/^\S+\/missing monitor cannot run \(.*ENOENT.*\); restarting in 1000 ms$/);
  });
});
