// The installer against flannel's real conflist, in temporary directories laid out like a node.
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type InstallContext, runInstall } from "../../src/cli/install.js";

const FLANNEL = join(import.meta.dirname, "../fixtures/flannel/cni-conf.json");
const CAPABILITIES = { portMappings: true, "io.kubernetes.cri.pod-annotations": true };

let root: string;
let binDir: string;
let confDir: string;
let conflist: string;
let binary: string;
let flannel: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "portmap-hostip-install-"));
  binDir = join(root, "opt/cni/bin");
  confDir = join(root, "etc/cni/net.d");
  await mkdir(binDir, { recursive: true });
  await mkdir(confDir, { recursive: true });
  flannel = await readFile(FLANNEL, "utf8");
  // What flannel's install-cni container writes: the ConfigMap's cni-conf.json, unchanged.
  conflist = join(confDir, "10-flannel.conflist");
  await writeFile(conflist, flannel);
  binary = join(root, "portmap-hostip-linux-x64");
  await writeFile(binary, "#!/bin/sh\necho plugin\n");
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function install(args: string[], context: InstallContext = {}): Promise<Run> {
  const run: Run = { code: 0, stdout: "", stderr: "" };
  run.code = await runInstall(["--binary", binary, ...args], {
    root,
    stdout: (text) => void (run.stdout += text),
    stderr: (text) => void (run.stderr += text),
    ...context,
  });
  return run;
}

async function plugins(file = conflist): Promise<Array<Record<string, unknown>>> {
  return JSON.parse(await readFile(file, "utf8")).plugins;
}

async function until(condition: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

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

  it("keeps every other byte of the file, in flannel's 2-space style", async () => {
    await install([]);
    const text = await readFile(conflist, "utf8");
    const portmapEnd = flannel.indexOf("    }\n  ]") + "    }".length;
    expect(text.slice(0, portmapEnd)).toBe(flannel.slice(0, portmapEnd));
    expect(text.slice(text.length - (flannel.length - portmapEnd))).toBe(flannel.slice(portmapEnd));
    expect(text.slice(portmapEnd, text.length - (flannel.length - portmapEnd))).toBe(
      [
        ",",
        "    {",
        '      "type": "portmap-hostip",',
        '      "capabilities": {',
        '        "portMappings": true,',
        '        "io.kubernetes.cri.pod-annotations": true',
        "      }",
        "    }",
      ].join("\n"),
    );
    expect(JSON.parse(text).cniVersion).toBe("0.3.1");
  });

  it("keeps the file's permission bits and leaves no temporary file behind", async () => {
    await chmod(conflist, 0o600);
    await install([]);
    expect((await stat(conflist)).mode & 0o777).toBe(0o600);
    expect(await readdir(confDir)).toEqual(["10-flannel.conflist"]);
    expect(await readdir(binDir)).toEqual(["portmap-hostip"]);
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

  it("replaces an outdated or misplaced entry instead of adding a second one", async () => {
    const doc = JSON.parse(flannel);
    doc.plugins.unshift({ type: "portmap-hostip", defaultHostIP: "any" });
    doc.plugins.push({ type: "portmap-hostip", annotation: "old/key" });
    await writeFile(conflist, JSON.stringify(doc, null, 2));
    await install(["--annotation", "example.com/host-ip"]);
    expect(await plugins()).toEqual([
      JSON.parse(flannel).plugins[0],
      JSON.parse(flannel).plugins[1],
      { type: "portmap-hostip", capabilities: CAPABILITIES, annotation: "example.com/host-ip" },
    ]);
  });

  it("writes a compact entry into a compact file", async () => {
    await writeFile(conflist, JSON.stringify(JSON.parse(flannel)));
    await install([]);
    const text = await readFile(conflist, "utf8");
    expect(text).not.toContain("\n");
    expect(text).toContain(`"capabilities":{"portMappings":true}},{"type":"portmap-hostip",`);
  });

  it("fails clearly, changing nothing, when the list has no portmap", async () => {
    const doc = JSON.parse(flannel);
    doc.plugins.pop();
    const text = JSON.stringify(doc, null, 2);
    await writeFile(conflist, text);
    const run = await install([]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/10-flannel\.conflist has no "portmap" plugin: hostPorts do not work/);
    expect(await readFile(conflist, "utf8")).toBe(text);
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
    expect(await readdir(k3sBin)).toEqual(["portmap-hostip"]);
    expect((await plugins(join(k3sConf, "10-flannel.conflist"))).length).toBe(3);
    expect(await readdir(binDir)).toEqual([]);
    expect(await readFile(conflist, "utf8")).toBe(flannel);

    await install(["--cni-bin-dir", binDir, "--cni-conf-dir", confDir]);
    expect(await readdir(binDir)).toEqual(["portmap-hostip"]);
    expect((await plugins()).length).toBe(3);
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

  it("rejects invalid option values naming the flag and the value", async () => {
    for (const [args, message] of [
      [["--default-host-ip", "192.0.2.300"], '--default-host-ip: invalid value "192.0.2.300"'],
      [["--default-host-ip", "node,192.0.2.1"], '--default-host-ip: invalid value "node"'],
      [["--node-ips", "192.0.2.1/24"], '--node-ips: invalid value "192.0.2.1/24"'],
      [["--kube-node-ips", "192.0.2.1,$(HOST_IPS)x"], '--kube-node-ips: invalid value "$(HOST_IPS)x"'],
      [["--node-interfaces", "eth0,this-name-is-too-long"], '--node-interfaces: invalid value "this-name-is-too-long"'],
      [["--exclude-interfaces", "a/b"], '--exclude-interfaces: invalid value "a/b"'],
      [["--allowed-host-cidrs", "192.0.2.0/33"], '--allowed-host-cidrs: invalid value "192.0.2.0/33"'],
      [["--annotation=-bad"], '--annotation: invalid value "-bad"'],
      [["--log-file", "portmap-hostip.log"], '--log-file: invalid value "portmap-hostip.log"'],
      [["--bogus"], "Unknown option '--bogus'"],
      [["--watch", "--uninstall"], "--watch and --uninstall exclude each other"],
    ] as const) {
      const run = await install([...args]);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stderr).toContain(message);
    }
    expect(await readFile(conflist, "utf8")).toBe(flannel);
    expect(await readdir(binDir)).toEqual([]);
  });

  it("leaves an empty or unexpanded downward-API --kube-node-ips out, with a note, instead of failing", async () => {
    for (const value of ["", "$(HOST_IPS)"]) {
      const run = await install(["--kube-node-ips", value]);
      expect(run.code, value).toBe(0);
      expect(run.stderr, value).toMatch(/^note: --kube-node-ips .*left out\n$/);
      expect((await plugins())[2], value).toEqual({ type: "portmap-hostip", capabilities: CAPABILITIES });
    }
    await install(["--kube-node-ips", "$(HOST_IPS)", "--kube-node-ips", "192.0.2.10"]);
    expect((await plugins())[2]?.["kubeNodeIPs"]).toEqual(["192.0.2.10"]);
  });

  it("copies the binary only when it differs, and removes what a killed copy left", async () => {
    await install([]);
    const target = join(binDir, "portmap-hostip");
    const first = (await stat(target)).ino;
    const again = await install([]);
    expect(again.stdout).toContain(`${target} is this executable already`);
    expect((await stat(target)).ino).toBe(first);
    // A killed run's partial copy, old enough to be dead; then a new executable.
    const partial = join(binDir, ".portmap-hostip.4242.tmp");
    await writeFile(partial, "#!/bin/sh\necho pl");
    const old = new Date(Date.now() - 120_000);
    await utimes(partial, old, old);
    await writeFile(binary, "#!/bin/sh\necho plugin v2\n");
    const upgrade = await install([]);
    expect(upgrade.stdout).toContain(`installed ${target}`);
    expect(await readFile(target, "utf8")).toBe("#!/bin/sh\necho plugin v2\n");
    expect((await stat(target)).ino).not.toBe(first);
    expect(await readdir(binDir)).toEqual(["portmap-hostip"]);
  });

  it("maps every option onto its conflist key", async () => {
    await install([
      "--default-host-ip=198.51.100.7",
      "--node-ips=192.0.2.1,2001:db8::1",
      "--kube-node-ips=192.0.2.2,2001:db8::2",
      "--node-interfaces=eth0",
      "--exclude-interfaces=",
      "--allowed-host-cidrs=192.0.2.0/24",
      "--allowed-host-cidrs=2001:db8::/64",
      "--annotation=example.com/ip",
      "--log-file=/var/log/portmap-hostip.log",
    ]);
    expect((await plugins())[2]).toEqual({
      type: "portmap-hostip",
      capabilities: CAPABILITIES,
      defaultHostIP: "198.51.100.7",
      nodeIPs: ["192.0.2.1", "2001:db8::1"],
      kubeNodeIPs: ["192.0.2.2", "2001:db8::2"],
      nodeInterfaces: ["eth0"],
      excludeInterfaces: [],
      allowedHostCIDRs: ["192.0.2.0/24", "2001:db8::/64"],
      annotation: "example.com/ip",
      logFile: "/var/log/portmap-hostip.log",
    });
  });
});

describe("install --watch", () => {
  it("puts the entry back within two seconds after flannel rewrites the file, and stops on the signal", async () => {
    const controller = new AbortController();
    const out: string[] = [];
    const watching = runInstall(["--binary", binary, "--watch"], {
      root,
      signal: controller.signal,
      stdout: (text) => void out.push(text),
      stderr: (text) => void out.push(text),
    });
    const hasEntry = async (): Promise<boolean> => (await plugins().catch(() => [])).length === 3;
    await until(hasEntry, 2000);
    expect(await readdir(binDir)).toEqual(["portmap-hostip"]);

    // flannel's install-cni: write the ConfigMap's content to a new file and rename it into place.
    const tmp = join(confDir, ".flannel-tmp");
    await writeFile(tmp, flannel);
    await rename(tmp, conflist);
    const rewritten = Date.now();
    await until(hasEntry, 2000);
    expect(Date.now() - rewritten).toBeLessThan(2000);

    // And `cp`, which rewrites the file in place.
    await writeFile(conflist, flannel);
    await until(hasEntry, 2000);

    // The binary removed (an uninstall racing the keeper): back before the entry can name a missing file.
    await rm(join(binDir, "portmap-hostip"));
    await until(async () => (await readdir(binDir)).includes("portmap-hostip"), 2000);

    controller.abort();
    expect(await watching).toBe(0);
    expect(out.join("")).toContain("stopped");
    expect(await readdir(confDir)).toEqual(["10-flannel.conflist"]);
  });

  it("waits for a conflist that does not exist yet", async () => {
    await rm(conflist);
    const controller = new AbortController();
    const errors: string[] = [];
    const watching = runInstall(["--binary", binary, "--watch"], {
      root,
      signal: controller.signal,
      stdout: () => {},
      stderr: (text) => void errors.push(text),
    });
    await until(async () => errors.length > 0, 2000);
    await writeFile(conflist, flannel);
    await until(async () => (await plugins()).length === 3, 2000);
    controller.abort();
    expect(await watching).toBe(0);
    // Logged once, not once per poll.
    expect(errors).toEqual([
      `no *.conf, *.conflist, *.json file in ${confDir} (is the network plugin installed yet?)\n`,
    ]);
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

  it("refuses while a keeper runs on the node (its heartbeat is fresh), and removes partial copies", async () => {
    const stateDir = join(root, "run/portmap-hostip");
    await mkdir(stateDir, { recursive: true });
    await install([]);
    await writeFile(join(binDir, ".portmap-hostip.4242.tmp"), "partial");
    await writeFile(join(stateDir, "keeper.alive"), JSON.stringify({ at: Date.now(), resyncMs: 10_000 }));
    const refused = await install(["--uninstall", "--state-dir", stateDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("a keeper runs on this node");
    expect((await plugins()).length).toBe(3);
    await rm(join(stateDir, "keeper.alive"));
    const run = await install(["--uninstall", "--state-dir", stateDir]);
    expect(run.code, run.stderr).toBe(0);
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
