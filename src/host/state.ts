// What ADD and DEL leave for the keeper, reconcile and gc under the node's state directory (a tmpfs, /run):
// one record per container ("added" when ADD starts scoping, "deleted" when DEL starts; host/record.ts writes
// them), and the keeper lock,
// a file that says "a reconcile or gc pass is reading and writing the nat tables until <deadline>", with an
// abstract socket its holder binds meanwhile (the kernel frees it when the holder dies, so a killed holder's
// lease is known stale at once).
//
// Why no flock: Node.js has none, and a helper process per ADD would cost more than the whole record. The
// protocol needs only ordered file operations on one host:
//   DEL:    write "deleted" → wait (bounded) while the lock is held → portmap's DEL runs after ours.
//   keeper: take the lock → read records, cache, tables → write → release.
// A pass that read the records before the "deleted" one holds the lock until its write is done, so DEL waits
// for it and portmap's DEL then removes what it wrote; a pass that reads after sees the record and skips the pod.
// gc never deletes the chain of a container whose "added" record is younger than ADD_RECORD_TTL_MS (liveness.ts).
import { lstat, mkdir, open, readdir, readFile, rm, stat } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { sha512Hex } from "../core/sha512.js";
import { type ContainerRecord, type Refusal, recordKey, recordPath, recordsDir, refusalsDir } from "./record.js";

/** A pass holds the lock at most this long (each of its iptables calls ends within 15 s). */
export const LOCK_LEASE_MS = 60_000;
/** "deleted" records are dropped this long after their DEL, once no cache entry names the container. */
export const DELETED_RECORD_TTL_MS = 10 * 60_000;
const POLL_MS = 20;

export async function removeRecord(dir: string, network: string, containerId: string): Promise<void> {
  await rm(recordPath(dir, network, containerId), { force: true });
}

/** Records read by an earlier call, by file name: reused while the file's mtime is the same (the keeper's resync). */
export type RecordMemo = Map<string, { mtimeMs: number; record: ContainerRecord }>;

/** Every record; a missing directory is no record, an unreadable file is skipped (reported). */
export async function readRecords(
  dir: string,
  memo?: RecordMemo,
): Promise<{ records: Map<string, ContainerRecord>; problems: string[] }> {
  const records = new Map<string, ContainerRecord>();
  const problems: string[] = [];
  let names: string[];
  try {
    names = await readdir(recordsDir(dir));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records, problems };
    throw new Error(`cannot read the container records in ${recordsDir(dir)}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  for (const name of names.filter((n) => !n.endsWith(".tmp"))) {
    try {
      const file = join(recordsDir(dir), name);
      const mtimeMs = memo ? (await lstat(file)).mtimeMs : 0;
      const known = memo?.get(name);
      if (known && known.mtimeMs === mtimeMs) {
        records.set(recordKey(known.record.network, known.record.containerId), known.record);
        continue;
      }
      const r = JSON.parse(await readFile(file, "utf8")) as Partial<ContainerRecord>;
      if (
        typeof r.network !== "string" ||
        typeof r.containerId !== "string" ||
        (r.state !== "added" && r.state !== "deleted") ||
        typeof r.at !== "number" ||
        (r.iptables !== undefined && r.iptables !== "nft" && r.iptables !== "legacy")
      )
        throw new Error("not a container record");
      records.set(recordKey(r.network, r.containerId), r as ContainerRecord);
      memo?.set(name, { mtimeMs, record: r as ContainerRecord });
    } catch (err) {
      // Gone between readdir and read (DEL removed it) is no problem.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        problems.push(`skipped container record ${name}: ${(err as Error).message}`);
    }
  }
  if (memo) {
    const present = new Set(names);
    for (const name of memo.keys()) if (!present.has(name)) memo.delete(name);
  }
  return { records, problems };
}

const lockFile = (dir: string): string => join(dir, "keeper.lock");

interface Lease {
  pid: number;
  until: number;
  /** The holder's network namespace (its inode), where its holder socket is. */
  netns?: number;
}

async function readLease(dir: string): Promise<Lease | undefined> {
  try {
    const lease = JSON.parse(await readFile(lockFile(dir), "utf8")) as Partial<Lease>;
    // A lock file being written (empty) or garbled counts as held until it is old enough to be stale.
    return typeof lease.until === "number" ? (lease as Lease) : { pid: 0, until: Date.now() + POLL_MS };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The abstract unix socket a pass binds while it holds the lock. The kernel lets go of it the moment its
 * process dies, so a lease whose holder was killed mid-pass (a SIGKILLed keeper) is known stale at once
 * instead of after LOCK_LEASE_MS, during which every DEL would wait and every pass fail. Abstract sockets
 * belong to a network namespace: the keeper, the operator commands and the runtime's plugins share the node's.
 */
const holderSocket = (dir: string): string => `portmap-hostip-keeper-${sha512Hex(dir).slice(0, 32)}`;

const netnsInode = async (): Promise<number | undefined> =>
  (await stat("/proc/self/ns/net").catch(() => undefined))?.ino;

/**
 * Whether the lease's holder is gone: it held the lock from this network namespace and no more than `own` holder
 * sockets (this process's) are bound there.
 */
async function holderGone(dir: string, lease: Lease, own: 0 | 1 = 0): Promise<boolean> {
  if (lease.netns === undefined || lease.netns !== (await netnsInode())) return false;
  const sockets = await readFile("/proc/net/unix", "utf8").catch(() => undefined);
  return sockets !== undefined && abstractBindings(sockets, holderSocket(dir)) <= own;
}

/**
 * How many sockets /proc/net/unix lists bound to the abstract name `name`. The path is a line's last field; Node
 * 20's libuv binds an abstract name padded with NULs to the whole sun_path, which the kernel prints as '@' (Node
 * 24's does not), so two runtimes bind two different names that read the same here.
 */
export const abstractBindings = (procNetUnix: string, name: string): number =>
  procNetUnix.split("\n").filter((l) => l.slice(l.lastIndexOf(" ") + 1).replace(/@+$/, "") === `@${name}`).length;

/**
 * Waits while a pass holds the lock, at most `waitMs`; true when it is free. A lease past its deadline or
 * whose holder died counts as free. For DEL: it never takes the lock, it only lets a pass finish.
 */
export async function awaitKeeperLock(dir: string, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const lease = await readLease(dir).catch(() => undefined);
    if (lease === undefined || lease.until < Date.now() || (await holderGone(dir, lease))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
}

const heldError = (dir: string, lease: Lease | undefined) =>
  new Error(`the keeper lock ${lockFile(dir)} is held by process ${lease?.pid ?? "?"}; try again`);

/** Binds the holder socket, waiting until `deadline` while a live holder has it. */
async function bindHolder(dir: string, deadline: number): Promise<Server> {
  for (;;) {
    const server = createServer();
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => (err.code === "EADDRINUSE" ? resolve(false) : reject(err)));
      server.listen({ path: `\0${holderSocket(dir)}` }, () => resolve(true));
    });
    if (bound) return server.unref();
    if (Date.now() >= deadline) throw heldError(dir, await readLease(dir).catch(() => undefined));
    await sleep(POLL_MS);
  }
}

/**
 * Runs `body` holding the keeper lock: the holder socket, then the lease file (which DEL reads); waits at most
 * `waitMs` for another pass to release it (then throws). A stale lease (its holder died mid-pass) is taken over.
 */
export async function withKeeperLock<T>(dir: string, waitMs: number, body: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const deadline = Date.now() + waitMs;
  const netns = await netnsInode();
  const holder = await bindHolder(dir, deadline);
  try {
    for (;;) {
      try {
        const handle = await open(lockFile(dir), "wx", 0o600);
        try {
          await handle.writeFile(JSON.stringify({ pid: process.pid, until: Date.now() + LOCK_LEASE_MS, netns }));
        } finally {
          await handle.close();
        }
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const lease = await readLease(dir);
        // Holding the socket, a lease written from this namespace is one whose holder died, unless a holder of another
        // runtime's padding (above) is still bound beside ours.
        if (lease !== undefined && (lease.until < Date.now() || (await holderGone(dir, lease, 1)))) {
          await rm(lockFile(dir), { force: true });
          continue;
        }
        if (Date.now() >= deadline) throw heldError(dir, lease);
        await sleep(POLL_MS);
      }
    }
    try {
      return await body();
    } finally {
      await rm(lockFile(dir), { force: true });
    }
  } finally {
    holder.close();
  }
}

// A refusal file is a few hundred bytes; anything near this is not one.
const MAX_REFUSAL_BYTES = 64 * 1024;

/** The refusals ADD left (host/record.ts), each removed once read; a file that is not one is removed too. */
export async function takeRefusals(dir: string): Promise<Refusal[]> {
  const names = await readdir(refusalsDir(dir)).catch(() => [] as string[]);
  const refusals: Refusal[] = [];
  for (const name of names.filter((n) => !n.endsWith(".tmp"))) {
    const file = join(refusalsDir(dir), name);
    try {
      if ((await lstat(file)).size > MAX_REFUSAL_BYTES) continue;
      const r = JSON.parse(await readFile(file, "utf8")) as Partial<Refusal>;
      const p = r.pod;
      if (
        typeof p?.namespace === "string" &&
        typeof p.name === "string" &&
        (p.uid === undefined || typeof p.uid === "string") &&
        typeof r.message === "string" &&
        typeof r.at === "number"
      )
        refusals.push({ pod: { namespace: p.namespace, name: p.name, uid: p.uid }, message: r.message, at: r.at });
    } catch {
      // unreadable: gone with the rest
    } finally {
      await rm(file, { force: true });
    }
  }
  return refusals;
}
