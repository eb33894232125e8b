// A container's record under the node's state directory, as ADD and DEL write it (host/state.ts reads them and
// holds the keeper lock). Synchronous node:fs on purpose: a hostPort ADD never loads node:fs/promises (~2 ms)
// for three calls on a tmpfs.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { KubePod } from "../core/names.js";
import type { IptablesVariant } from "../core/node.js";

export type RecordState = "added" | "deleted";

export interface ContainerRecord {
  network: string;
  containerId: string;
  state: RecordState;
  /** When it was written (ms since the epoch). */
  at: number;
  /** ADD: the variant of the iptables it ran (portmap's too: they share the runtime's PATH), when known. */
  iptables?: IptablesVariant;
}

/** How records (and the cache's attachments) are keyed: a container is one per network. */
export const recordKey = (network: string, containerId: string): string => `${network}\n${containerId}`;

export const recordsDir = (dir: string): string => join(dir, "containers");
// Network names may hold characters a file name must not ("/"): encoded; the container ID is [A-Za-z0-9_.-].
export const recordPath = (dir: string, network: string, containerId: string): string =>
  join(recordsDir(dir), `${encodeURIComponent(network)}_${containerId}`);

/** Writes the container's record atomically (temporary file and rename); false when it had one already. */
export function writeRecord(
  dir: string,
  network: string,
  containerId: string,
  state: RecordState,
  iptables?: IptablesVariant,
): boolean {
  const file = recordPath(dir, network, containerId);
  const first = !existsSync(file);
  mkdirSync(recordsDir(dir), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const record: ContainerRecord = { network, containerId, state, at: Date.now(), ...(iptables ? { iptables } : {}) };
  writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
  renameSync(tmp, file);
  return first;
}

const HINTS = "read-first";

/**
 * A network whose portmap's rules, at the last first ADD that read them, were not those the swap takes (its
 * nftables backend, other options): its next first ADDs go straight to reading (the swap would be refused),
 * and look first in the backend the hint names, which held them (empty: the usual order).
 */
export const readFirstHintPath = (dir: string, network: string): string =>
  join(dir, HINTS, encodeURIComponent(network));

/** The hint: the backend to look in first ("" for none); undefined: no hint (a first ADD tries the swap). */
export function readFirstHint(dir: string, network: string): string | undefined {
  try {
    return readFileSync(readFirstHintPath(dir, network), "utf8");
  } catch {
    return undefined;
  }
}

export const readsFirst = (dir: string, network: string): boolean => readFirstHint(dir, network) !== undefined;

/** Sets (naming the backend that held the pod's rules) or clears the hint. Best effort: without it an ADD only tries the swap first. */
export function noteReadsFirst(dir: string, network: string, readFirst: boolean, backend = ""): void {
  const file = readFirstHintPath(dir, network);
  try {
    if (!readFirst) rmSync(file, { force: true });
    else {
      mkdirSync(join(dir, HINTS), { recursive: true, mode: 0o700 });
      writeFileSync(file, backend, { mode: 0o600 });
    }
  } catch {}
}

/** A pod whose ADD was refused (code 100), as ADD leaves it for the keeper to tell Kubernetes. */
export interface Refusal {
  pod: KubePod;
  message: string;
  at: number;
}

export const refusalsDir = (dir: string): string => join(dir, "refused");

/**
 * Leaves the refusal for the keeper: one file per pod (the latest refusal; kubelet retries a refused pod for as
 * long as it exists), atomically. Best effort: the ADD fails with its own error either way.
 */
export function writeRefusal(dir: string, pod: KubePod, message: string): void {
  try {
    const file = join(refusalsDir(dir), encodeURIComponent(`${pod.namespace}/${pod.name}`));
    mkdirSync(refusalsDir(dir), { recursive: true, mode: 0o700 });
    const refusal: Refusal = { pod, message, at: Date.now() };
    writeFileSync(`${file}.${process.pid}.tmp`, JSON.stringify(refusal), { mode: 0o600 });
    renameSync(`${file}.${process.pid}.tmp`, file);
  } catch {}
}
