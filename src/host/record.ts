// A container's record under the node's state directory, as ADD and DEL write it (host/state.ts reads them and
// holds the keeper lock). Synchronous node:fs on purpose: a hostPort ADD never loads node:fs/promises (~2 ms)
// for three calls on a tmpfs.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type RecordState = "added" | "deleted";

export interface ContainerRecord {
  network: string;
  containerId: string;
  state: RecordState;
  /** When it was written (ms since the epoch). */
  at: number;
}

export const recordsDir = (dir: string): string => join(dir, "containers");
// Network names may hold characters a file name must not ("/"): encoded; the container ID is [A-Za-z0-9_.-].
export const recordPath = (dir: string, network: string, containerId: string): string =>
  join(recordsDir(dir), `${encodeURIComponent(network)}_${containerId}`);

/** Writes the container's record atomically (temporary file and rename); false when it had one already. */
export function writeRecord(dir: string, network: string, containerId: string, state: RecordState): boolean {
  const file = recordPath(dir, network, containerId);
  const first = !existsSync(file);
  mkdirSync(recordsDir(dir), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const record: ContainerRecord = { network, containerId, state, at: Date.now() };
  writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
  renameSync(tmp, file);
  return first;
}

/**
 * A network whose portmap wrote nftables rules at its last container's first ADD that looked: its next first
 * ADDs go straight to reading (the swap of portmap's iptables rules would only be refused).
 */
export const nftablesHintPath = (dir: string, network: string): string =>
  join(dir, "portmap-nftables", encodeURIComponent(network));

export function portmapUsedNftables(dir: string, network: string): boolean {
  return existsSync(nftablesHintPath(dir, network));
}

/** Sets or clears the hint. Best effort: without it an ADD only tries the swap first. */
export function notePortmapNftables(dir: string, network: string, nftables: boolean): void {
  const file = nftablesHintPath(dir, network);
  try {
    if (!nftables) rmSync(file, { force: true });
    else {
      mkdirSync(join(dir, "portmap-nftables"), { recursive: true, mode: 0o700 });
      writeFileSync(file, "", { mode: 0o600 });
    }
  } catch {}
}
