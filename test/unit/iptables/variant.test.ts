// Which variant an iptables binary is, from where its links lead: the layouts of real distributions' binaries,
// built as links in a scratch directory.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { bothVariants, onPath, pathVariant, variantOf } from "../../../src/iptables/variant.js";

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "pmh-variant-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** An executable file at `path` under root (its directories made). */
function program(path: string, text = "#!/bin/sh\n"): string {
  const file = join(root, path);
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, 0o755);
  return file;
}
/** A link at `path` under root to `target` (as written: relative, or absolute under root). */
function link(path: string, target: string): string {
  const file = join(root, path);
  mkdirSync(join(file, ".."), { recursive: true });
  symlinkSync(target.startsWith("/") ? join(root, target) : target, file);
  return file;
}

describe("the variant of an iptables binary", () => {
  it("Debian and Ubuntu: iptables → /etc/alternatives → iptables-nft → xtables-nft-multi, and each variant by name", () => {
    program("usr/sbin/xtables-nft-multi");
    program("usr/sbin/xtables-legacy-multi");
    link("usr/sbin/iptables-nft", "xtables-nft-multi");
    link("usr/sbin/iptables-legacy", "xtables-legacy-multi");
    link("etc/alternatives/iptables", "/usr/sbin/iptables-nft");
    const iptables = link("usr/sbin/iptables", "/etc/alternatives/iptables");
    expect(variantOf(iptables)).toBe("nft");
    expect(variantOf(join(root, "usr/sbin/iptables-legacy"))).toBe("legacy");
  });

  it("Talos 1.7 and 1.8: the host's /sbin/iptables is iptables-legacy", () => {
    program("usr/sbin/xtables-legacy-multi");
    expect(variantOf(link("sbin/iptables", "/usr/sbin/xtables-legacy-multi"))).toBe("legacy");
  });

  it("iptables before 1.8: xtables-multi, legacy only", () => {
    program("sbin/xtables-multi");
    expect(variantOf(link("sbin/iptables", "xtables-multi"))).toBe("legacy");
  });

  it("nothing for a wrapper that picks a variant when it runs (kube-proxy's image), nor for a missing file", () => {
    const wrapper = program("usr/sbin/iptables-wrapper");
    expect(variantOf(link("usr/sbin/iptables", "iptables-wrapper"))).toBeUndefined();
    expect(variantOf(wrapper)).toBeUndefined();
    expect(variantOf(join(root, "nowhere/iptables"))).toBeUndefined();
  });
});

describe("the iptables on a PATH", () => {
  it("is the first executable one, in absolute directories only", () => {
    chmodSync(program("a/iptables"), 0o644);
    program("usr/sbin/xtables-legacy-multi");
    link("b/iptables", "/usr/sbin/xtables-legacy-multi");
    program("c/xtables-nft-multi");
    link("c/iptables", "xtables-nft-multi");
    const path = ["relative/dir", join(root, "a"), join(root, "b"), join(root, "c")].join(":");
    expect(onPath("iptables", path)).toBe(join(root, "b/iptables"));
    expect(pathVariant(path)).toBe("legacy");
    expect(pathVariant(join(root, "c"))).toBe("nft");
    expect(pathVariant(join(root, "nothing"))).toBeUndefined();
  });

  it("has both variants when both variants' iptables and iptables-restore are there", () => {
    program("usr/sbin/xtables-nft-multi");
    program("usr/sbin/xtables-legacy-multi");
    const dir = join(root, "usr/sbin");
    for (const v of ["nft", "legacy"]) link(`usr/sbin/iptables-${v}`, `xtables-${v}-multi`);
    expect(bothVariants(dir)).toBe(false);
    link("usr/sbin/iptables-nft-restore", "xtables-nft-multi");
    link("usr/sbin/iptables-legacy-restore", "xtables-legacy-multi");
    expect(bothVariants(dir)).toBe(true);
  });
});
