// The entry's logFile: one JSON line per CNI call, appended by many plugin processes at once, capped in size.
// Loaded only when logFile is set.
//
// Why lines never interleave: the file is opened with O_APPEND and each line is one write() of one buffer.
// POSIX makes the seek to the end and the write one step for O_APPEND; Linux holds the inode's lock for the
// whole write() on a regular file of a local filesystem (ext4, xfs, btrfs, tmpfs, overlayfs), so a line
// lands whole and after every line written before it, whatever its length (PIPE_BUF, 4096 bytes, limits
// atomic writes to pipes and FIFOs only, not to regular files). A write() to a regular file returns short
// only on a full disk or a size limit. NFS gives no such guarantee: keep the log on a local filesystem.
import { closeSync, constants, fstatSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { PortMapping } from "../core/config.js";
import { writeOutput } from "../host/output.js";
import type { ResolvedMapping } from "../policy/resolve.js";

/** Size at which the file is rotated to `<logFile>.1` (the one previous file kept). */
export const LOG_FILE_CAP = 10 * 1024 * 1024;
// A rotation takes microseconds: a lock file older than this was left by a killed process.
const STALE_LOCK_MS = 10_000;
// libuv adds O_CLOEXEC itself.
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT;

export interface CallRecord {
  /** When the call started. */
  time: Date;
  command: string;
  /** namespace/name from CNI_ARGS. */
  pod: string | undefined;
  containerId: string | undefined;
  /** The mappings the runtime asked for, once the configuration parsed. */
  mappings: readonly PortMapping[] | undefined;
  /** The host IPs decided per mapping (ADD, when it got that far). */
  resolved: readonly ResolvedMapping[] | undefined;
  error: { code: number; msg: string } | undefined;
  durationMs: number;
}

/** Host IPs a mapping matches after the call: "any" when it stays unscoped, the runtime's own hostIP when it set one. */
function hostIps(r: ResolvedMapping): string[] | "any" {
  if (r.ips) return r.ips.map((ip) => ip.text);
  return r.mapping.hostIp ? [r.mapping.hostIp.text] : "any";
}

/** The record as one line of JSON: JSON escapes every newline a message or annotation could carry. */
export function formatCall(c: CallRecord): string {
  const mappings = c.resolved
    ? c.resolved.map((r) => ({
        hostPort: r.mapping.hostPort,
        protocol: r.mapping.protocol,
        source: r.source,
        hostIPs: hostIps(r),
        // Answers on no address from outside the node: said where people look for it.
        ...(r.reason === undefined ? {} : { closed: r.reason }),
      }))
    : c.mappings?.map((m) => ({
        hostPort: m.hostPort,
        protocol: m.protocol,
        ...(m.hostIp ? { hostIP: m.hostIp.text } : {}),
      }));
  const line = {
    time: c.time.toISOString(),
    command: c.command,
    ...(c.pod === undefined ? {} : { pod: c.pod }),
    ...(c.containerId === undefined ? {} : { containerID: c.containerId }),
    ...(mappings === undefined ? {} : { mappings }),
    ...(c.error === undefined ? { ok: true } : { ok: false, code: c.error.code, msg: c.error.msg }),
    durationMs: Math.round(c.durationMs * 10) / 10,
  };
  return `${JSON.stringify(line)}\n`;
}

function openLog(path: string): number {
  try {
    return openSync(path, OPEN_FLAGS, 0o640);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    return openSync(path, OPEN_FLAGS, 0o640);
  }
}

/**
 * Moves the full file at `path` (open as `fd`) to `<path>.1`. Several processes may find it full at once:
 * a lock file (O_EXCL) lets one of them rotate, and it renames only if `path` still is the file it measured,
 * so a file another process just started is never rotated away. The others wait for the new file (bounded),
 * else write to the full file, which becomes the previous one: their lines are kept. Returns whether `path`
 * is now a new file to open.
 */
function rotate(path: string, fd: number): boolean {
  const lock = `${path}.lock`;
  let lockFd: number;
  try {
    lockFd = openSync(lock, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    // Left by a process killed while rotating: remove it; the next call rotates.
    const held = statSync(lock, { throwIfNoEntry: false });
    if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) rmSync(lock, { force: true });
    return false;
  }
  try {
    if (statSync(path, { throwIfNoEntry: false })?.ino !== fstatSync(fd).ino) return true;
    renameSync(path, `${path}.1`);
    return true;
  } finally {
    closeSync(lockFd);
    rmSync(lock, { force: true });
  }
}

// How long a writer that finds another process rotating waits for the new file before it appends to the full
// one: a rotation takes microseconds, but a loaded node may deschedule the rotator in between.
const ROTATION_WAIT_MS = 200;
const ROTATION_POLL_MS = 2;

/** Waits, bounded, until `path` is no longer the file open as `fd` (another process rotated it). */
function awaitRotation(path: string, fd: number): boolean {
  const ino = fstatSync(fd).ino;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; waited < ROTATION_WAIT_MS; waited += ROTATION_POLL_MS) {
    const now = statSync(path, { throwIfNoEntry: false });
    if (now !== undefined && now.ino !== ino) return true;
    Atomics.wait(pause, 0, 0, ROTATION_POLL_MS);
  }
  return false;
}

/** Appends `line` (ending in a newline) to the file at `path` with one write(), rotating it at `cap` bytes. */
export function appendLine(path: string, line: string, cap = LOG_FILE_CAP): void {
  const data = Buffer.from(line);
  let fd = openLog(path);
  try {
    const size = fstatSync(fd).size;
    if (size > 0 && size + data.length > cap && (rotate(path, fd) || awaitRotation(path, fd))) {
      const full = fd;
      fd = -1;
      closeSync(full);
      fd = openLog(path);
    }
    writeSync(fd, data);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** Logs one CNI call; a log that cannot be written is a note on stderr, never a failed call. */
export function logCall(path: string, record: CallRecord): void {
  try {
    appendLine(path, formatCall(record));
  } catch (err) {
    writeOutput(2, `portmap-hostip: cannot write log file ${path}: ${(err as Error).message}\n`);
  }
}
