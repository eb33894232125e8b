// Where the installer writes: the node's CNI directories (standard or k3s), the conflist the runtime uses, and
// atomic writes that keep the file's mode.
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { binDir, confDir, conflist, flannel, install, plugins, root, useFlannelNode } from "./flannel-node.js";

useFlannelNode();

describe("the node's CNI files", () => {
  it("keeps the file's permission bits and leaves no temporary file behind", async () => {
    await chmod(conflist, 0o600);
    await install([]);
    expect((await stat(conflist)).mode & 0o777).toBe(0o600);
    expect(await readdir(confDir)).toEqual(["10-flannel.conflist"]);
    expect(await readdir(binDir)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
  });

  it("edits the lexicographically first config file, or the one named", async () => {
    const other = join(confDir, "20-other.conflist");
    await writeFile(other, flannel);
    await writeFile(join(confDir, "05-notes.txt"), "not a config");
    await install([]);
    expect((await plugins(conflist)).length).toBe(3);
    expect(await readFile(other, "utf8")).toBe(flannel);

    await install(["--conflist", "20-other.conflist"]);
    expect((await plugins(other)).length).toBe(3);
  });

  it("fails clearly when the directory has no config yet", async () => {
    await rm(conflist);
    const run = await install([]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`no *.conf, *.conflist, *.json file in ${confDir}`);
  });

  it("uses k3s's directories on a k3s node, and the flags over both", async () => {
    const k3sBin = join(root, "var/lib/rancher/k3s/data/cni");
    const k3sConf = join(root, "var/lib/rancher/k3s/agent/etc/cni/net.d");
    await mkdir(k3sBin, { recursive: true });
    await mkdir(k3sConf, { recursive: true });
    await writeFile(join(k3sConf, "10-flannel.conflist"), flannel);

    await install([]);
    expect(await readdir(k3sBin)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
    expect((await plugins(join(k3sConf, "10-flannel.conflist"))).length).toBe(3);
    expect(await readdir(binDir)).toEqual([]);
    expect(await readFile(conflist, "utf8")).toBe(flannel);

    await install(["--cni-bin-dir", binDir, "--cni-conf-dir", confDir]);
    expect(await readdir(binDir)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
    expect((await plugins()).length).toBe(3);
  });
});
