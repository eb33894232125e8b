// Which backends the plugin and the operators read: the plugin the iptables on PATH (portmap's own); the
// operators and the keeper each variant's nat table where both variants are installed.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { nodeBackends, podBackends } from "../../../src/backends/registry.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-registry-"));
  for (const multi of ["xtables-nft-multi", "xtables-legacy-multi"]) {
    writeFileSync(join(dir, multi), "");
    chmodSync(join(dir, multi), 0o755);
  }
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const link = (name: string, to: string) => symlinkSync(to, join(dir, name));
const names = (backends: ReadonlyArray<{ name: string }>) => backends.map((b) => b.name);

describe("the backends", () => {
  it("of the plugin: the iptables on PATH, then portmap's nftables backend", async () => {
    expect(names(await podBackends())).toEqual(["iptables", "nftables"]);
  });

  it("of the operators: each variant's nat table where both variants' iptables and iptables-restore are installed", async () => {
    for (const v of ["nft", "legacy"]) {
      link(`iptables-${v}`, `xtables-${v}-multi`);
      link(`iptables-${v}-restore`, `xtables-${v}-multi`);
    }
    const backends = await nodeBackends(dir);
    expect(names(backends)).toEqual(["iptables-legacy", "iptables-nft", "nftables"]);
    expect(backends.map((b) => b.variant)).toEqual(["legacy", "nft", undefined]);
  });

  it("of the operators: the iptables on PATH where only one variant is installed", async () => {
    mkdirSync(join(dir, "only"));
    link("only/iptables", "../xtables-legacy-multi");
    link("only/iptables-legacy", "../xtables-legacy-multi");
    link("only/iptables-legacy-restore", "../xtables-legacy-multi");
    expect(names(await nodeBackends(join(dir, "only")))).toEqual(["iptables", "nftables"]);
  });
});
