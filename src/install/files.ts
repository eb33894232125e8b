// Atomic file replacement and the node's CNI layout (standard or k3s).
import { constants } from "node:fs";
import { access, chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

// libcni and runtimes read config files by extension: a temporary name must never carry one of them.
const CONF_EXTENSIONS = [".conf", ".conflist", ".json"];

/**
 * Writes `dest` through a temporary file in the same directory and a rename, so a runtime reading or
 * executing it sees the old file or the new one, never a part.
 */
async function replace(dest: string, mode: number, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = join(dirname(dest), `.${basename(dest)}.${process.pid}.tmp`);
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

/** Writes a file of ours (its directory made if missing, for root alone). */
export async function writeNewTextAtomic(dest: string, text: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
  await replace(dest, 0o600, (tmp) => writeFile(tmp, text));
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export async function copyExecutableAtomic(source: string, dest: string): Promise<void> {
  await replace(dest, 0o755, (tmp) => copyFile(source, tmp));
}

export interface Layout {
  binDir: string;
  confDir: string;
}

export const STANDARD: Layout = { binDir: "/opt/cni/bin", confDir: "/etc/cni/net.d" };
export const K3S: Layout = {
  binDir: "/var/lib/rancher/k3s/data/cni",
  confDir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
};

/** Flags win; otherwise each directory is k3s's where that exists under `root`, else the standard one. */
export async function resolveLayout(flags: Partial<Layout>, root: string): Promise<Layout> {
  const pick = async (key: keyof Layout): Promise<string> => {
    const given = flags[key];
    if (given !== undefined) return resolve(given);
    const k3s = join(root, K3S[key]);
    return (await isDirectory(k3s)) ? k3s : join(root, STANDARD[key]);
  };
  return { binDir: await pick("binDir"), confDir: await pick("confDir") };
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
