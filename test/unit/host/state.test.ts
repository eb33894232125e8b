// The keeper lock's holder socket: a lease whose holder died (a keeper SIGKILLed mid-pass) is known stale at once,
// in the holder's network namespace; elsewhere, and while the holder lives, the lease holds.
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it } from "vitest";
import { awaitKeeperLock, withKeeperLock } from "../../../src/host/state.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-state-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const lease = (netns: number) =>
  writeFile(join(dir, "keeper.lock"), JSON.stringify({ pid: 999_999, until: Date.now() + 60_000, netns }));

it("takes over at once the lease of a holder of this network namespace whose socket is gone", async () => {
  await lease((await stat("/proc/self/ns/net")).ino);
  const started = Date.now();
  expect(await awaitKeeperLock(dir, 5_000)).toBe(true);
  expect(await withKeeperLock(dir, 5_000, async () => "ran")).toBe("ran");
  expect(Date.now() - started).toBeLessThan(1_000);
});

it("keeps to the lease of a holder in another network namespace (its socket cannot be seen from here)", async () => {
  await lease(1);
  expect(await awaitKeeperLock(dir, 100)).toBe(false);
  await expect(withKeeperLock(dir, 100, async () => "ran")).rejects.toThrow(/held by process 999999/);
});

it("makes another pass and a DEL wait while the holder lives", async () => {
  await withKeeperLock(dir, 1_000, async () => {
    expect(await awaitKeeperLock(dir, 100)).toBe(false);
    await expect(withKeeperLock(dir, 100, async () => "ran")).rejects.toThrow(/held by process/);
  });
  expect(await awaitKeeperLock(dir, 100)).toBe(true);
});
