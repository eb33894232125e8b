// libcni's result cache as the keeper, status, reconcile and gc read it: entries of every spec version, what is
// wrong with a malformed one, an unreadable file, and which networks a command selects.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  attachmentLabel,
  ownedByUnreadable,
  parseCacheFile,
  readResultCache,
  selectsNetwork,
} from "../../../src/host/cache.js";
import { judge } from "../../../src/host/liveness.js";
import { cacheEntryJson } from "../../support/result-cache.js";
import { a, cacheEntryOf, ID, list, three } from "../cached-pods.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("libcni's cache entries", () => {
  it("reads a conflist of spec 1.1.0 that gives cniVersions instead of cniVersion (the highest we speak)", () => {
    const a = parseCacheFile(
      cacheEntryOf({ name: "cbr0", cniVersions: ["0.4.0", "1.1.0", "9.9.9"], plugins: [{ type: "portmap" }] }),
      "f",
      0,
    );
    expect(a.cniVersion).toBe("1.1.0");
    expect(() => parseCacheFile(cacheEntryOf({ name: "cbr0", cniVersions: ["9.9.9"], plugins: [] }), "f", 0)).toThrow(
      /no cniVersion and no supported cniVersions/,
    );
  });

  it("keeps an unreadable file as a container nobody can judge: reported, never 'no attachment'", async () => {
    const results = join(dir, "results");
    await mkdir(results);
    await writeFile(join(results, `cbr0-${ID}-eth0`), "{ not json");
    await writeFile(
      join(results, `cbr0-other-eth0`),
      cacheEntryOf({ name: "cbr0", cniVersion: "1.0.0", plugins: [] }, "other"),
    );
    const cache = await readResultCache(dir);
    expect(cache.attachments.map((a) => a.containerId)).toEqual(["other"]);
    expect(cache.problems).toEqual([
      expect.stringMatching(/unreadable cache file .*not JSON.*its container's chains are kept/),
    ]);
    expect(ownedByUnreadable(cache, "cbr0", ID)).toBe(true);
    expect(ownedByUnreadable(cache, "cbr0", "0123")).toBe(false);
    const verdict = judge({ cache, records: new Map(), now: 0 });
    expect([verdict("cbr0", ID), verdict("cbr0", "other"), verdict("cbr0", "gone")]).toEqual([
      "unknown",
      "live",
      "dead",
    ]);
  });
});

describe("the result cache", () => {
  it("reads libcni's entry: conflist, CNI_ARGS, capability args, result", () => {
    expect(a.network).toBe("cbr0");
    expect(a.plugins.map((p) => p.type)).toEqual(["bridge", "portmap", "portmap-hostip"]);
    expect(attachmentLabel(a)).toBe("default/a");
    expect(a.capabilityArgs["portMappings"]).toEqual(three);
  });

  it("says what is wrong with a malformed entry instead of crashing", () => {
    const good = JSON.parse(
      cacheEntryJson({ list: list("cbr0"), containerID: "x1", ifName: "eth0", result: {} }),
    ) as Record<string, unknown>;
    const bad = (patch: Record<string, unknown>) => () => parseCacheFile(JSON.stringify({ ...good, ...patch }), "f", 0);
    expect(() => parseCacheFile("{", "f", 0)).toThrow(/not JSON/);
    expect(bad({ kind: "other" })).toThrow(/not a libcni cache entry \(kind/);
    expect(bad({ containerId: "../x" })).toThrow(/not a container ID/);
    expect(bad({ ifName: "a/b" })).toThrow(/not an interface name/);
    expect(bad({ networkName: 'a" -j ACCEPT' })).toThrow(/not a usable network name/);
    expect(bad({ config: "!!!" })).toThrow(/base64 of a JSON/);
    expect(bad({ networkName: "other" })).toThrow(/config names network "cbr0"/);
    expect(bad({ cniArgs: [["a"]] })).toThrow(/cniArgs/);
  });
});

describe("--network", () => {
  it("selects the named networks only, and every network when none is named", () => {
    expect(selectsNetwork([], "cbr0")).toBe(true);
    expect(selectsNetwork([], null)).toBe(true);
    expect(selectsNetwork(["cbr0", "net2"], "net2")).toBe(true);
    expect(selectsNetwork(["cbr0"], "net2")).toBe(false);
    // A chain nothing attributes to a network belongs to none that was named.
    expect(selectsNetwork(["cbr0"], null)).toBe(false);
  });
});
