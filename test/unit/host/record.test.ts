// The records ADD and DEL leave under the state directory, and the per-network hint whether a first ADD reads.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { noteReadsFirst, readsFirst, writeRecord } from "../../../src/host/record.js";
import { readRecords } from "../../../src/host/state.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("records", () => {
  it("records ADD and DEL per network and container (any network name)", async () => {
    // True for the container's first record: its first ADD.
    expect(writeRecord(dir, "a/b net", "c1", "added")).toBe(true);
    expect(writeRecord(dir, "cbr0", "c1", "added")).toBe(true);
    expect(writeRecord(dir, "cbr0", "c1", "deleted")).toBe(false);
    const { records, problems } = await readRecords(dir);
    expect(problems).toEqual([]);
    expect([...records.values()].map((r) => [r.network, r.containerId, r.state]).sort()).toEqual([
      ["a/b net", "c1", "added"],
      ["cbr0", "c1", "deleted"],
    ]);
    expect((await readRecords(join(dir, "none"))).records.size).toBe(0);
  });

  it("keeps, per network, whether a first ADD reads before it writes (any network name)", () => {
    expect(readsFirst(dir, "a/b net")).toBe(false);
    noteReadsFirst(dir, "a/b net", true);
    expect([readsFirst(dir, "a/b net"), readsFirst(dir, "cbr0")]).toEqual([true, false]);
    noteReadsFirst(dir, "a/b net", false);
    expect(readsFirst(dir, "a/b net")).toBe(false);
  });
});
