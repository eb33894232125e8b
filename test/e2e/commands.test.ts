// VERSION, STATUS and GC as a runtime calls them: the binary in the node namespace, stdin and CNI_* only.
import { mkdtempSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import { type NatSnapshot, natSave } from "../support/harness.js";
import { CRASH_TRACE, createStandins, runPluginRaw } from "../support/standins.js";

/** A directory holding only a link to nft. */
function nftOnly(parent: string): string {
  const dir = mkdtempSync(join(parent, "nft-only-"));
  symlinkSync("/usr/sbin/nft", join(dir, "nft"));
  return dir;
}

const conf = (cniVersion: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ cniVersion, name: "cbr0", type: "portmap-hostip", ...extra });

describeAsRoot("VERSION, STATUS and GC", () => {
  const h = useHarness();
  const snapshot = async (): Promise<NatSnapshot> => ({
    v4: await natSave(h.topo.node, 4, h.iptables),
    v6: await natSave(h.topo.node, 6, h.iptables),
  });

  it("VERSION lists the supported versions, whatever stdin holds", async () => {
    for (const input of [conf("1.0.0"), ""]) {
      const r = await runPluginRaw(h.topo.node, { env: { CNI_COMMAND: "VERSION" }, input });
      expect(r.code, r.stdout).toBe(0);
      expect(r.output).toEqual({
        cniVersion: "1.1.0",
        supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
      });
    }
  });

  it("STATUS succeeds when iptables works, prints nothing and changes nothing", async () => {
    const before = await snapshot();
    const r = await runPluginRaw(h.topo.node, { env: { CNI_COMMAND: "STATUS" }, input: conf("1.1.0") });
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toBe("");
    expect(await snapshot()).toEqual(before);
  });

  it("STATUS fails with code 50 when iptables-restore does not work", async () => {
    const broken = createStandins(h.topo.tmpDir, { "iptables-restore": "fail" });
    const r = await runPluginRaw(h.topo.node, {
      env: { CNI_COMMAND: "STATUS", PATH: broken.path },
      input: conf("1.1.0"),
    });
    expect(r.code).not.toBe(0);
    expect(r.output).toMatchObject({
      cniVersion: "1.1.0",
      code: 50,
      msg: expect.stringContaining("iptables is not usable"),
    });
    expect(r.stderr).not.toMatch(CRASH_TRACE);
  });

  it("STATUS on a node without iptables succeeds when nft works (portmap's nftables backend), else code 50", async () => {
    const noIptables = mkdtempSync(join(h.topo.tmpDir, "no-iptables-"));
    // `ip netns exec` runs the plugin; the bundle needs node on PATH.
    symlinkSync(process.execPath, join(noIptables, "node"));
    symlinkSync("/usr/sbin/ip", join(noIptables, "ip"));
    const ok = await runPluginRaw(h.topo.node, {
      env: { CNI_COMMAND: "STATUS", PATH: `${noIptables}:${nftOnly(noIptables)}` },
      input: conf("1.1.0"),
    });
    expect(ok.code, ok.stdout).toBe(0);
    const none = await runPluginRaw(h.topo.node, {
      env: { CNI_COMMAND: "STATUS", PATH: noIptables },
      input: conf("1.1.0"),
    });
    expect(none.output).toMatchObject({ code: 50, msg: expect.stringContaining("neither iptables nor nft is usable") });
  });

  it("GC without a list of valid attachments succeeds and deletes nothing", async () => {
    const before = await snapshot();
    const r = await runPluginRaw(h.topo.node, { env: { CNI_COMMAND: "GC" }, input: conf("1.1.0") });
    expect(r.code, r.stdout).toBe(0);
    expect(await snapshot()).toEqual(before);
  });

  it("an unsupported cniVersion is code 1 for every command that reads the configuration", async () => {
    for (const command of ["STATUS", "GC"]) {
      const r = await runPluginRaw(h.topo.node, { env: { CNI_COMMAND: command }, input: conf("2.0.0") });
      expect(r.output, command).toMatchObject({ code: 1 });
    }
  });
});
