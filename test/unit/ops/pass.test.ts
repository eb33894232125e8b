// Which networks a keeper pass keeps: ours (their cached conflist has our entry, or it is the installed conflist's
// network: pods that started while a rewrite had removed our entry) for the keeper and reconcile; every cached
// network for gc. Another network's pods are left alone.
import { describe, expect, it } from "vitest";
import { fallbackEntry, type PassOptions } from "../../../src/backends/backend.js";
import { parseCacheFile } from "../../../src/host/cache.js";
import { passScope } from "../../../src/ops/pass.js";
import { cacheEntryJson } from "../../support/result-cache.js";

const ENTRY = { type: "portmap-hostip", defaultHostIP: "node" };

function attachment(network: string, id: string, ours: boolean) {
  const plugins = [{ type: "bridge" }, { type: "portmap" }, ...(ours ? [ENTRY] : [])];
  const text = cacheEntryJson({
    list: { name: network, cniVersion: "1.0.0", plugins },
    containerID: id,
    ifName: "eth0",
    result: { cniVersion: "1.0.0", ips: [] },
  });
  return parseCacheFile(text, `${network}-${id}`, 0);
}

// cbr0: the managed conflist's network, one pod started while flannel's rewrite had removed our entry;
// annotated: a network whose conflist has our entry; plain: a Multus-style second network without it.
const ATTACHMENTS = [
  attachment("cbr0", "a1", true),
  attachment("cbr0", "w1", false),
  attachment("annotated", "b1", true),
  attachment("plain", "p1", false),
];
const managed = { network: "cbr0", entry: ENTRY };
const options = (o: Partial<PassOptions>) => ({ networks: [], scope: "ours" as const, managed, ...o });

describe("the keeper's and reconcile's networks", () => {
  it("are those with our entry and the managed one; the others are named and left alone", () => {
    const scope = passScope(ATTACHMENTS, options({}));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, false]);
    expect([...scope.judged].sort()).toEqual(["annotated", "cbr0"]);
    expect(scope.others).toEqual(["plain"]);
  });

  it("without a managed conflist, only those with our entry", () => {
    const scope = passScope(ATTACHMENTS, options({ managed: undefined }));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, false]);
    expect(passScope([attachment("cbr0", "w1", false)], options({ managed: undefined })).keeps("cbr0")).toBe(false);
  });

  it("the managed network's dead chains are judged even when no pod of it is cached", () => {
    expect([...passScope([], options({})).judged]).toEqual(["cbr0"]);
  });

  it("--network narrows them, and names no other network", () => {
    const scope = passScope(ATTACHMENTS, options({ networks: ["annotated", "plain"] }));
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([false, true, false]);
    expect([...scope.judged]).toEqual(["annotated"]);
    expect(scope.others).toEqual(["plain"]);
  });

  it("the managed entry scopes only the managed network's pods that lack ours", () => {
    const o = { ...options({}), dryRun: false, rebuild: true, graceMs: 0, conflictsFirst: true, cniBinDir: "/" };
    expect(ATTACHMENTS.map((a) => fallbackEntry(o, a))).toEqual([ENTRY, ENTRY, undefined, undefined]);
  });
});

describe("gc's networks", () => {
  it("are every network the cache names", () => {
    const scope = passScope(ATTACHMENTS, { networks: [], scope: "cached", managed: undefined });
    expect(["cbr0", "annotated", "plain"].map(scope.keeps)).toEqual([true, true, true]);
    expect([...scope.judged].sort()).toEqual(["annotated", "cbr0", "plain"]);
    expect(scope.others).toEqual([]);
  });
});
