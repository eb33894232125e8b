// When the keeper's resync may skip its pass: only after a pass that settled, on places that tell of their
// changes, while nothing in the watched directories changed, and never QUIET_LIMIT times in a row.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QUIET_LIMIT, Quiet } from "../../../src/cli/quiet.js";

let dir: string;
let stop: AbortController;
const dirs = () => [join(dir, "results"), join(dir, "containers")];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-quiet-"));
  for (const d of dirs()) mkdirSync(d);
  stop = new AbortController();
});
afterEach(() => {
  stop.abort();
  rmSync(dir, { recursive: true, force: true });
});

const skips = (q: Quiet, n: number) => Array.from({ length: n }, () => q.skip());
/** A full pass, from its beginning to its end. */
const pass = (q: Quiet, settled = true, observable = true) => q.passed(q.begin(), settled, observable);

describe("a quiet resync", () => {
  it("never before a pass", () => {
    expect(new Quiet(dirs(), stop.signal).skip()).toBe(false);
  });

  it("after a pass that settled, on observable places: skipped, at most QUIET_LIMIT - 1 in a row", () => {
    const q = new Quiet(dirs(), stop.signal);
    pass(q);
    expect(skips(q, QUIET_LIMIT)).toEqual([...Array(QUIET_LIMIT - 1).fill(true), false]);
    // The full pass that followed starts the count again.
    pass(q);
    expect(q.skip()).toBe(true);
  });

  it("not after a pass that left something, nor when a place tells nobody of its changes", () => {
    const q = new Quiet(dirs(), stop.signal);
    pass(q, false);
    expect(q.skip()).toBe(false);
    pass(q, true, false);
    expect(q.skip()).toBe(false);
  });

  it("not once something changed, until the next pass", () => {
    const q = new Quiet(dirs(), stop.signal);
    pass(q);
    q.changed();
    expect(q.skip()).toBe(false);
    pass(q);
    expect(q.skip()).toBe(true);
  });

  it("not while a directory to watch does not exist", () => {
    const q = new Quiet([...dirs(), join(dir, "refused")], stop.signal);
    pass(q);
    expect(q.skip()).toBe(false);
    mkdirSync(join(dir, "refused"));
    pass(q);
    expect(q.skip()).toBe(true);
  });

  it("not after a file came or changed in a watched directory (libcni's cache, the records)", async () => {
    const q = new Quiet(dirs(), stop.signal);
    pass(q);
    expect(q.skip()).toBe(true);
    writeFileSync(join(dir, "results", "cbr0-abc123-eth0"), "{}");
    const deadline = Date.now() + 5_000;
    while (q.skip() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(q.skip()).toBe(false);
  });

  it("not after a pass during which something changed (it may have read before the change)", () => {
    const q = new Quiet(dirs(), stop.signal);
    const begun = q.begin();
    q.changed();
    q.passed(begun, true, true);
    expect(q.skip()).toBe(false);
    pass(q);
    expect(q.skip()).toBe(true);
  });
});
