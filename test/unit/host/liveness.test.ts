import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type CacheRead, parseCacheFile } from "../../../src/host/cache.js";
import { ADD_RECORD_TTL_MS, judge } from "../../../src/host/liveness.js";
import { cacheEntryOf } from "../cached-pods.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the verdict on a container", () => {
  const cache = (ids: string[]): CacheRead => ({
    dir,
    present: true,
    attachments: ids.map((id) =>
      parseCacheFile(cacheEntryOf({ name: "cbr0", cniVersion: "1.0.0", plugins: [] }, id), id, 0),
    ),
    unreadable: [],
    problems: [],
  });
  const rec = (id: string, state: "added" | "deleted", at: number) =>
    [`cbr0\n${id}`, { network: "cbr0", containerId: id, state, at }] as const;

  it("live when cached; deleting once its DEL started (even while still cached); adding while its ADD may run", () => {
    const now = 10 * ADD_RECORD_TTL_MS;
    const verdict = judge({
      cache: cache(["live", "going"]),
      records: new Map([
        rec("going", "deleted", now),
        rec("starting", "added", now - 1000),
        rec("stale", "added", now - ADD_RECORD_TTL_MS - 1),
      ]),
      now,
    });
    expect(["live", "going", "starting", "stale", "never"].map((id) => verdict("cbr0", id))).toEqual([
      "live",
      "deleting",
      "adding",
      "dead",
      "dead",
    ]);
    expect(verdict("other-net", "live")).toBe("dead");
  });
});
