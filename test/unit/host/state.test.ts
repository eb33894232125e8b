// The keeper lock under the state directory: a DEL waits for a pass, bounded; a dead holder's lock is taken over —
// at once when its holder socket is gone from this network namespace (a keeper SIGKILLed mid-pass); a lease from
// another namespace, or whose holder lives, holds. The refusals ADD leaves for the keeper.
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { sha512Hex } from "../../../src/core/sha512.js";
import { refusalsDir, writeRefusal } from "../../../src/host/record.js";
import { abstractBindings, awaitKeeperLock, takeRefusals, withKeeperLock } from "../../../src/host/state.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the keeper lock", () => {
  it("makes a DEL wait for the pass that holds the lock, and no longer than its bound", async () => {
    const order: string[] = [];
    let release!: () => void;
    const held = withKeeperLock(dir, 1000, async () => {
      order.push("pass starts");
      await new Promise<void>((r) => (release = r));
      order.push("pass ends");
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(await awaitKeeperLock(dir, 100)).toBe(false);
    const waiting = awaitKeeperLock(dir, 5000).then((free) => order.push(`DEL goes on (${free})`));
    await new Promise((r) => setTimeout(r, 50));
    release();
    await Promise.all([held, waiting]);
    expect(order).toEqual(["pass starts", "pass ends", "DEL goes on (true)"]);
  });

  it("takes over a lock whose holder died (its lease ran out), and refuses one that is held", async () => {
    await writeFile(join(dir, "keeper.lock"), JSON.stringify({ pid: 1, until: Date.now() - 1 }));
    expect(await withKeeperLock(dir, 100, async () => "ran")).toBe("ran");
    await writeFile(join(dir, "keeper.lock"), JSON.stringify({ pid: 1, until: Date.now() + 60_000 }));
    await expect(withKeeperLock(dir, 100, async () => "ran")).rejects.toThrow(/held by process 1/);
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

  // The system's Node 20 binds the holder socket's name NUL-padded, this runner's Node 24 does not: two names.
  const systemNode = "/usr/bin/node";
  const otherRuntime =
    existsSync(systemNode) && execFileSync(systemNode, ["--version"]).toString().trim() !== process.version;
  it.skipIf(!otherRuntime)(
    "keeps to the lease of a live holder run by a Node that binds the socket's name otherwise",
    async () => {
      const name = `portmap-hostip-keeper-${sha512Hex(dir).slice(0, 32)}`;
      const holder = spawn(systemNode, [
        "-e",
        `require("net").createServer().listen({ path: "\\0${name}" }, () => console.log("bound"))`,
      ]);
      try {
        await new Promise((r) => holder.stdout.once("data", r));
        await writeFile(
          join(dir, "keeper.lock"),
          JSON.stringify({ pid: holder.pid, until: Date.now() + 60_000, netns: (await stat("/proc/self/ns/net")).ino }),
        );
        expect(await awaitKeeperLock(dir, 100)).toBe(false);
        await expect(withKeeperLock(dir, 300, async () => "ran")).rejects.toThrow(/held by process/);
      } finally {
        holder.kill("SIGKILL");
      }
    },
  );

  it("makes another pass and a DEL wait while the holder lives", async () => {
    await withKeeperLock(dir, 1_000, async () => {
      expect(await awaitKeeperLock(dir, 100)).toBe(false);
      await expect(withKeeperLock(dir, 100, async () => "ran")).rejects.toThrow(/held by process/);
    });
    expect(await awaitKeeperLock(dir, 100)).toBe(true);
  });
});

// /proc/net/unix as the kernel printed it: the socket bound by Node 24 (SEA), and by Node 20.20.2 (NUL-padded).
const PROC_NET_UNIX = [
  "Num       RefCount Protocol Flags    Type St Inode Path",
  "00000000a42532ad: 00000002 00000000 00010000 0001 01 12146215 @portmap-hostip-keeper-793b0b1bd79305b6b6fde59e2b4b0693",
  `00000000f8fbe2c7: 00000002 00000000 00010000 0001 01 12146824 @portmap-hostip-keeper-0d5c${"@".repeat(81)}`,
  "0000000020a1a9a3: 00000003 00000000 00000000 0001 03 12140001 /run/containerd/containerd.sock",
].join("\n");

describe("the holder socket in /proc/net/unix", () => {
  it("is found as either Node binds it, and only by its whole name", () => {
    expect(abstractBindings(PROC_NET_UNIX, "portmap-hostip-keeper-793b0b1bd79305b6b6fde59e2b4b0693")).toBe(1);
    expect(abstractBindings(PROC_NET_UNIX, "portmap-hostip-keeper-0d5c")).toBe(1);
    expect(abstractBindings(PROC_NET_UNIX, "portmap-hostip-keeper-793b")).toBe(0);
    expect(abstractBindings(PROC_NET_UNIX, "portmap-hostip-keeper-0d5c0")).toBe(0);
    const both = `${PROC_NET_UNIX}\n00000000f8fbe2c8: 00000002 00000000 00010000 0001 01 12146825 @portmap-hostip-keeper-0d5c`;
    expect(abstractBindings(both, "portmap-hostip-keeper-0d5c")).toBe(2);
  });
});

describe("refusals ADD left", () => {
  const pod = { namespace: "default", name: "db", uid: "5f1c-uid" };

  it("keep a pod's latest refusal, taken once", async () => {
    writeRefusal(dir, pod, "first");
    writeRefusal(dir, pod, "host IP 198.51.100.7 (from annotation) … is not allowed");
    writeRefusal(dir, { namespace: "other", name: "x/y", uid: undefined }, "second pod");
    const taken = await takeRefusals(dir);
    expect(taken.map((r) => [r.pod, r.message])).toEqual([
      [pod, "host IP 198.51.100.7 (from annotation) … is not allowed"],
      [{ namespace: "other", name: "x/y", uid: undefined }, "second pod"],
    ]);
    expect(await takeRefusals(dir)).toEqual([]);
  });

  it("are none without a directory; a file that is not one goes too", async () => {
    expect(await takeRefusals(dir)).toEqual([]);
    writeRefusal(dir, pod, "ok");
    await writeFile(join(refusalsDir(dir), "junk"), "{not json");
    expect((await takeRefusals(dir)).map((r) => r.message)).toEqual(["ok"]);
    expect(await readdir(refusalsDir(dir))).toEqual([]);
  });
});
