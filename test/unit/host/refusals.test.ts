// What a refused ADD leaves for the keeper: one file per pod (its latest refusal), read and removed once.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { refusalsDir, writeRefusal } from "../../../src/host/record.js";
import { takeRefusals } from "../../../src/host/state.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-refusals-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("refusals", () => {
  const pod = { namespace: "default", name: "db", uid: "5f1c-uid" };

  it("keeps a pod's latest refusal, taken once", async () => {
    writeRefusal(dir, pod, "first");
    writeRefusal(dir, pod, "host IP 198.51.100.7 (from annotation) … is not allowed");
    writeRefusal(dir, { namespace: "other", name: "x/y", uid: undefined }, "second pod");
    const taken = await takeRefusals(dir);
    expect(taken.map((r) => [r.pod, r.message])).toEqual([
      [pod, "host IP 198.51.100.7 (from annotation) … is not allowed"],
      [{ namespace: "other", name: "x/y", uid: undefined }, "second pod"],
    ]);
    expect(await takeRefusals(dir)).toEqual([]);
  });

  it("drops a file that is not a refusal, and is none without a directory", async () => {
    expect(await takeRefusals(dir)).toEqual([]);
    writeRefusal(dir, pod, "ok");
    writeFileSync(join(refusalsDir(dir), "junk"), "{not json");
    expect((await takeRefusals(dir)).map((r) => r.message)).toEqual(["ok"]);
    expect(readdirSync(refusalsDir(dir))).toEqual([]);
  });
});
