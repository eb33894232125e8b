// The plugin's records in the node's default state directory, for the tests whose entry has no stateDir (the
// installed entry, containerd's): removed after the test, and the directories with them when this test run
// made them.
import { existsSync, rmdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { DEFAULT_STATE_DIR } from "../../src/core/config.js";
import { readFirstHintPath, recordPath, recordsDir } from "../../src/host/record.js";

const RECORDS_DIR = recordsDir(DEFAULT_STATE_DIR);
const HINTS_DIR = dirname(readFirstHintPath(DEFAULT_STATE_DIR, "x"));
const madeHere = [RECORDS_DIR, HINTS_DIR, DEFAULT_STATE_DIR].filter((dir) => !existsSync(dir));

/**
 * Removes the records of `containerIds` in `network` and the network's read-first hint, then the
 * directories this run made, once empty.
 */
export function removeNodeRecords(network: string, containerIds: Iterable<string>): void {
  for (const id of containerIds) rmSync(recordPath(DEFAULT_STATE_DIR, network, id), { force: true });
  rmSync(readFirstHintPath(DEFAULT_STATE_DIR, network), { force: true });
  for (const dir of madeHere) {
    try {
      rmdirSync(dir);
    } catch {
      // Not empty (another pod's record, a keeper's lock): it stays.
    }
  }
}
