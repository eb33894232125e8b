// Atomic file replacement and the node's CNI layout (k3s's, or the standard one: kubeadm, RKE2, Talos, …).
import { constants } from "node:fs";
import { access, chmod, copyFile, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

// libcni and runtimes read config files by extension: a temporary name must never carry one of them.
const CONF_EXTENSIONS = [".conf", ".conflist", ".json"];

// A temporary file of `replace`: `.NAME.PID.tmp`, hidden and named for no plugin.
const temporary = (dest: string, pid: number): string => join(dirname(dest), `.${basename(dest)}.${pid}.tmp`);
// A copy of the executable takes about a second: a temporary file this old belongs to a run that was killed.
const STALE_TEMPORARY_MS = 60_000;

/**
 * Writes `dest` through a temporary file in the same directory and a rename, so a runtime reading or
 * executing it sees the old file or the new one, never a part.
 */
async function replace(dest: string, mode: number, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = temporary(dest, process.pid);
  try {
    await fill(tmp);
    await chmod(tmp, mode);
    const handle = await open(tmp, "r+");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Replaces a text file that held `previous`, keeping its permission bits. Fails rather than overwrite
 * what someone else (flannel) wrote since `previous` was read.
 */
export async function writeTextAtomic(dest: string, text: string, previous: string): Promise<void> {
  const mode = (await stat(dest)).mode & 0o7777;
  await replace(dest, mode, async (tmp) => {
    await writeFile(tmp, text);
    if ((await readFile(dest, "utf8")) !== previous) throw new Error(`${dest} changed while being edited; try again`);
  });
}

/** Writes a file of ours, for root alone. */
export async function writeNewTextAtomic(dest: string, text: string): Promise<void> {
  await replace(dest, 0o600, (tmp) => writeFile(tmp, text));
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * Puts the executable `source` at `dest` unless `dest` already is that executable (the same bytes): true when
 * it copied. A DaemonSet's init step runs at every pod start, and rewriting 100 MB each time would cost a
 * new inode and the page cache of the old one.
 */
export async function installExecutable(source: string, dest: string): Promise<boolean> {
  await removeTemporaries(dest, STALE_TEMPORARY_MS);
  if (await isSameExecutable(source, dest)) return false;
  await replace(dest, 0o755, (tmp) => copyFile(source, tmp));
  return true;
}

/** Removes what runs killed mid-copy left beside `dest`, older than `ageMs`; true when there was some. */
export async function removeTemporaries(dest: string, ageMs: number): Promise<boolean> {
  const pattern = new RegExp(`^\\.${basename(dest).replace(/[.]/g, "\\.")}\\.\\d+\\.tmp$`);
  const now = Date.now();
  let removed = false;
  for (const name of await readdir(dirname(dest)).catch(() => [])) {
    if (!pattern.test(name)) continue;
    const file = join(dirname(dest), name);
    const age = await stat(file).then(
      (st) => now - st.mtimeMs,
      () => -1,
    );
    if (age >= ageMs) {
      await rm(file, { force: true });
      removed = true;
    }
  }
  return removed;
}

/** Whether `dest` is an executable file with the bytes of `source`. */
async function isSameExecutable(source: string, dest: string): Promise<boolean> {
  const [a, b] = await Promise.all([stat(source), stat(dest).catch(() => undefined)]);
  if (!b?.isFile() || a.size !== b.size || (b.mode & 0o111) === 0) return false;
  const [sourceFile, destFile] = await Promise.all([open(source, "r"), open(dest, "r")]);
  try {
    const chunk = 1 << 20;
    const x = Buffer.alloc(chunk);
    const y = Buffer.alloc(chunk);
    for (let at = 0; at < a.size; at += chunk) {
      const [n, m] = await Promise.all([sourceFile.read(x, 0, chunk, at), destFile.read(y, 0, chunk, at)]);
      if (n.bytesRead !== m.bytesRead || !x.subarray(0, n.bytesRead).equals(y.subarray(0, m.bytesRead))) return false;
    }
    return true;
  } finally {
    await Promise.all([sourceFile.close(), destFile.close()]);
  }
}

export interface Layout {
  binDir: string;
  confDir: string;
}

// Where a distribution's container runtime reads CNI configs and runs plugins. k3s with its embedded flannel
// points its containerd at its own directories (and writes its flannel conflist there). RKE2 deploys its CNI
// with flannel's backend "none", so its containerd keeps containerd's defaults — the standard ones, as kubeadm,
// Talos and most others. libcni's result cache is /var/lib/cni on all of them (containerd has no setting for it).
export const STANDARD: Layout = { binDir: "/opt/cni/bin", confDir: "/etc/cni/net.d" };
export const K3S: Layout = {
  binDir: "/var/lib/rancher/k3s/data/cni",
  confDir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
};
/** RKE2's agent directory: on every RKE2 node, whatever its CNI. */
export const RKE2_AGENT = "/var/lib/rancher/rke2/agent";

export interface NodeLayout extends Layout {
  /** Which distribution's layout, and what on the node said so; undefined when the flags gave both directories. */
  detected: { name: "k3s" | "rke2" | "standard"; why: string } | undefined;
}

/**
 * Flags win. Otherwise: k3s's directories where k3s's conf dir exists under `root` (its bin dir if that exists
 * too, else the standard one); else the standard ones (RKE2's too). A node with both k3s's conf dir and RKE2's
 * agent directory is refused: their runtimes read different directories, and only the flags can say which.
 */
export async function resolveLayout(flags: Partial<Layout>, root: string): Promise<NodeLayout> {
  const given = (key: keyof Layout) => {
    const value = flags[key];
    return value === undefined ? undefined : resolve(value);
  };
  const binDir = given("binDir");
  const confDir = given("confDir");
  if (binDir !== undefined && confDir !== undefined) return { binDir, confDir, detected: undefined };
  const k3s = join(root, K3S.confDir);
  const rke2 = join(root, RKE2_AGENT);
  const [isK3s, isRke2] = await Promise.all([isDirectory(k3s), isDirectory(rke2)]);
  if (isK3s && isRke2)
    throw new Error(
      `both k3s (${k3s}) and RKE2 (${rke2}) are on this node, and their runtimes read different CNI directories (k3s: ${K3S.confDir} and ${K3S.binDir}; RKE2: ${STANDARD.confDir} and ${STANDARD.binDir}): say which with --cni-conf-dir and --cni-bin-dir`,
    );
  const k3sBin = join(root, K3S.binDir);
  const detected = isK3s
    ? { name: "k3s" as const, why: `${k3s} exists` }
    : isRke2
      ? { name: "rke2" as const, why: `${rke2} exists` }
      : { name: "standard" as const, why: "no k3s or RKE2 directory" };
  return {
    binDir: binDir ?? (isK3s && (await isDirectory(k3sBin)) ? k3sBin : join(root, STANDARD.binDir)),
    confDir: confDir ?? (isK3s ? k3s : join(root, STANDARD.confDir)),
    detected,
  };
}

/** Throws unless `dir` is a directory, naming the flag that gives it (`given`: it did). */
export async function needDirectory(dir: string, flag: string, given: boolean): Promise<void> {
  if (await isDirectory(dir)) return;
  throw new Error(given ? `--${flag} ${dir}: no such directory` : `no directory ${dir} here (--${flag} names another)`);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The named file, else the one the runtime loads: the first config file in byte order. */
export async function findConflist(confDir: string, name: string | undefined): Promise<string> {
  if (name !== undefined) {
    const path = resolve(confDir, name);
    await access(path, constants.R_OK | constants.W_OK);
    return path;
  }
  const entries = await readdir(confDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
    throw new Error(`no directory ${confDir} (is the network plugin installed yet? --cni-conf-dir names another)`, {
      cause: err,
    });
  });
  const names = entries
    .filter((entry) => !entry.isDirectory() && CONF_EXTENSIONS.some((ext) => entry.name.endsWith(ext)))
    .map((entry) => entry.name)
    .sort();
  const first = names[0];
  if (first === undefined)
    throw new Error(
      `no ${CONF_EXTENSIONS.map((ext) => `*${ext}`).join(", ")} file in ${confDir} (is the network plugin installed yet?)`,
    );
  return join(confDir, first);
}
