// The installer on a node laid out like flannel's (test/fixtures/flannel): the copy, the entry, --dry-run's
// diff, --uninstall, and --check.
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";
import { binary, binDir, CAPABILITIES, conflist, flannel, install, plugins, useFlannelNode } from "./flannel-node.js";

useFlannelNode();

describe("install", () => {
  it("copies the binary and inserts the entry right after portmap, with both capabilities and the options", async () => {
    const run = await install([
      "--default-host-ip",
      "node",
      "--node-interfaces",
      "eth0,eth1",
      "--exclude-interfaces",
      "kube-ipvs0",
    ]);
    expect(run).toMatchObject({ code: 0, stderr: "" });

    const installed = join(binDir, "portmap-hostip");
    expect(await readFile(installed, "utf8")).toBe("#!/bin/sh\necho plugin\n");
    expect((await stat(installed)).mode & 0o777).toBe(0o755);
    expect((await plugins()).map((p) => p["type"])).toEqual(["flannel", "portmap", "portmap-hostip"]);
    expect((await plugins())[2]).toEqual({
      type: "portmap-hostip",
      capabilities: CAPABILITIES,
      defaultHostIP: "node",
      nodeInterfaces: ["eth0", "eth1"],
      excludeInterfaces: ["kube-ipvs0"],
    });
  });

  it("is idempotent: a second run changes nothing and says so", async () => {
    await install(["--default-host-ip", "192.0.2.10,2001:db8::10"]);
    const first = await readFile(conflist, "utf8");
    const before = (await stat(conflist)).ino;
    const again = await install(["--default-host-ip", "192.0.2.10,2001:db8::10"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("nothing to change");
    expect(await readFile(conflist, "utf8")).toBe(first);
    expect((await stat(conflist)).ino).toBe(before);
    expect((await plugins())[2]?.["defaultHostIP"]).toEqual(["192.0.2.10", "2001:db8::10"]);
  });

  it("--dry-run prints the diff and the copy, and changes nothing", async () => {
    const run = await install(["--dry-run", "--default-host-ip", "any"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`would copy ${binary} to ${join(binDir, "portmap-hostip")}`);
    expect(run.stdout).toContain(
      [
        `--- ${conflist}`,
        `+++ ${conflist}`,
        "@@ -14,6 +14,14 @@",
        '       "capabilities": {',
        '         "portMappings": true',
        "       }",
        "+    },",
        "+    {",
        '+      "type": "portmap-hostip",',
        '+      "capabilities": {',
        '+        "portMappings": true,',
        '+        "io.kubernetes.cri.pod-annotations": true',
        "+      },",
        '+      "defaultHostIP": "any"',
        "     }",
        "   ]",
        " }",
      ].join("\n"),
    );
    expect(await readFile(conflist, "utf8")).toBe(flannel);
    expect(await readdir(binDir)).toEqual([]);
  });
});

describe("install --uninstall", () => {
  it("removes the entry, leaving the file as flannel wrote it, then the binary", async () => {
    await install(["--node-ips", "192.0.2.1"]);
    const run = await install(["--uninstall"]);
    expect(run.code).toBe(0);
    expect(await readFile(conflist, "utf8")).toBe(flannel);
    expect(await readdir(binDir)).toEqual([]);
  });

  it("succeeds when there is nothing to remove", async () => {
    const run = await install(["--uninstall"]);
    expect(run.code).toBe(0);
    expect(await readFile(conflist, "utf8")).toBe(flannel);
  });

  it("--dry-run prints the removal and keeps everything", async () => {
    await install([]);
    const installed = await readFile(conflist, "utf8");
    const run = await install(["--uninstall", "--dry-run"]);
    expect(run.stdout).toContain('-      "type": "portmap-hostip",');
    expect(run.stdout).toContain(`would remove ${join(binDir, "portmap-hostip")}`);
    expect(await readFile(conflist, "utf8")).toBe(installed);
    expect(await readdir(binDir)).toEqual(["portmap-hostip"]);
  });
});

describe("install --check (the exec probe)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("checks the binary and the entry in the conflist", async () => {
    const out: string[] = [];
    const conf = join(dir, "net.d");
    const bin = join(dir, "bin");
    await mkdir(conf);
    await mkdir(bin);
    await writeFile(
      join(conf, "10.conflist"),
      JSON.stringify({ name: "n", cniVersion: "1.0.0", plugins: [{ type: "portmap" }] }),
    );
    const check = () =>
      runInstall(["--check", "--cni-conf-dir", conf, "--cni-bin-dir", bin], {
        stdout: (t) => void out.push(t),
        stderr: (t) => void out.push(t),
      });
    expect(await check()).toBe(1);
    await writeFile(join(bin, "portmap-hostip"), "", { mode: 0o755 });
    expect(await check()).toBe(1);
    expect(out.at(-1)).toMatch(/has no portmap-hostip entry/);
    await writeFile(
      join(conf, "10.conflist"),
      JSON.stringify({ name: "n", cniVersion: "1.0.0", plugins: [{ type: "portmap" }, { type: "portmap-hostip" }] }),
    );
    expect(await check()).toBe(0);
    expect(await readFile(join(conf, "10.conflist"), "utf8")).toContain("portmap-hostip");
  });
});

describe("install --dry-run", () => {
  it("prints the removal as a unified diff naming the file, then the binary it would remove", async () => {
    await install([]);
    const run = await install(["--uninstall", "--dry-run"]);
    expect(run).toEqual({
      code: 0,
      stdout: [
        `--- ${conflist}`,
        `+++ ${conflist}`,
        "@@ -14,13 +14,6 @@",
        '       "capabilities": {',
        '         "portMappings": true',
        "       }",
        "-    },",
        "-    {",
        '-      "type": "portmap-hostip",',
        '-      "capabilities": {',
        '-        "portMappings": true,',
        '-        "io.kubernetes.cri.pod-annotations": true',
        "-      }",
        "     }",
        "   ]",
        " }",
        `would remove ${join(binDir, "portmap-hostip")}`,
        "",
      ].join("\n"),
      stderr: "",
    });
  });

  it("prints no diff when the entry is in place", async () => {
    await install([]);
    expect(await install(["--dry-run"])).toEqual({
      code: 0,
      stdout: `would copy ${binary} to ${join(binDir, "portmap-hostip")}\n${conflist}: nothing to change\n`,
      stderr: "",
    });
  });
});
