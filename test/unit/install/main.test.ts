// The installer on a node laid out like flannel's (test/fixtures/flannel): the copy, the entry, --dry-run's
// diff, --uninstall, and --check; who owns the entry (install writes it from its flags, the keeper keeps the
// options it has through its start, the conflist's rewrites and its restarts); a directory that is not there.
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";
import {
  binary,
  binDir,
  CAPABILITIES,
  conflist,
  flannel,
  install,
  plugins,
  root,
  useFlannelNode,
} from "./flannel-node.js";

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
    expect(await readdir(binDir)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
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
    expect(await readdir(binDir)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
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
        `would remove ${join(binDir, "portmap-hostip-entry.json")}`,
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

// The README's quick start, with the options a user adds to it.
const QUICK_START = [
  "--default-host-ip",
  "node",
  "--node-interfaces",
  "eth0",
  "--log-file",
  "/var/log/portmap-hostip.log",
];
const INSTALLED = {
  type: "portmap-hostip",
  capabilities: CAPABILITIES,
  defaultHostIP: "node",
  nodeInterfaces: ["eth0"],
  logFile: "/var/log/portmap-hostip.log",
};
const record = () => join(binDir, "portmap-hostip-entry.json");
const ours = async () => (await plugins()).find((p) => p["type"] === "portmap-hostip");
const hasEntry = (entry: object) => async () => JSON.stringify(await ours()) === JSON.stringify(entry);
/** What flannel does when its pod restarts: its own conflist, without our entry. */
const flannelRewrites = () => writeFile(conflist, flannel);

async function until(what: string, condition: () => Promise<boolean>, log = ""): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`not within 5 s: ${what}\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The keeper as the README starts it (a cache directory of its own: no pod here, so its passes do nothing). */
async function keeper(extra: string[] = []): Promise<{ stop: () => Promise<number> }> {
  const controller = new AbortController();
  let output = "";
  const out = (text: string) => void (output += text);
  const args = ["--binary", binary, "--watch", "--cache-dir", join(root, "var/lib/cni"), ...extra];
  const running = runInstall(args, { root, signal: controller.signal, stdout: out, stderr: out });
  await until("the keeper watches", async () => output.includes("watching "), output);
  return {
    stop: () => {
      controller.abort();
      return running;
    },
  };
}

describe("the keeper keeps the options of the installed entry", () => {
  it("through its start, the conflist's rewrites and its restarts", async () => {
    expect((await install(QUICK_START)).code).toBe(0);
    expect(await ours()).toEqual(INSTALLED);

    let k = await keeper();
    await until("the keeper read the entry", async () => (await readFile(record(), "utf8")).includes("nodeInterfaces"));
    expect(await ours()).toEqual(INSTALLED);
    await flannelRewrites();
    await until("the entry is back with every option", hasEntry(INSTALLED));

    // An option added to the entry by hand is the entry's too.
    const edited = JSON.parse(await readFile(conflist, "utf8"));
    edited.plugins[2].allowedHostCIDRs = ["192.0.2.0/24"];
    await writeFile(conflist, JSON.stringify(edited, null, 2));
    await until("the keeper took in the edit", async () =>
      (await readFile(record(), "utf8")).includes("allowedHostCIDRs"),
    );
    await flannelRewrites();
    await until("the edited entry is back", hasEntry({ ...INSTALLED, allowedHostCIDRs: ["192.0.2.0/24"] }));
    expect(await k.stop()).toBe(0);

    // Rewritten while no keeper runs: the next one puts back what the last one kept.
    await flannelRewrites();
    k = await keeper();
    await until("the entry is back after a restart", hasEntry({ ...INSTALLED, allowedHostCIDRs: ["192.0.2.0/24"] }));
    expect(await k.stop()).toBe(0);
  }, 20_000);

  it("from install's record when the conflist was rewritten before the keeper first started", async () => {
    expect((await install(QUICK_START)).code).toBe(0);
    await flannelRewrites();
    const k = await keeper();
    await until("the entry is back with every option", hasEntry(INSTALLED));
    expect(await k.stop()).toBe(0);
  });

  it("sets the keys its own flags give and keeps the others", async () => {
    expect((await install(QUICK_START)).code).toBe(0);
    const k = await keeper(["--default-host-ip", "any", "--state-dir", join(root, "state")]);
    const expected = { ...INSTALLED, defaultHostIP: "any", stateDir: join(root, "state") };
    await until("the keeper's keys are set", hasEntry(expected));
    await flannelRewrites();
    await until("the entry is back", hasEntry(expected));
    expect(await k.stop()).toBe(0);
    expect(JSON.parse(await readFile(record(), "utf8"))).toEqual(expected);
  });

  it("takes out a stateDir other than its own: the plugin's records go where the keeper reads them", async () => {
    expect((await install(QUICK_START)).code).toBe(0);
    const edited = JSON.parse(await readFile(conflist, "utf8"));
    edited.plugins[2].stateDir = "/var/run/elsewhere";
    await writeFile(conflist, JSON.stringify(edited, null, 2));
    const k = await keeper();
    await until("the entry names the keeper's directory (the default)", hasEntry(INSTALLED));
    expect(await k.stop()).toBe(0);
  });

  it("install, run again, writes the entry from its own flags; --uninstall removes it and the record", async () => {
    expect((await install(QUICK_START)).code).toBe(0);
    expect((await install(["--default-host-ip", "any"])).code).toBe(0);
    expect(await ours()).toEqual({ type: "portmap-hostip", capabilities: CAPABILITIES, defaultHostIP: "any" });
    const run = await install(["--uninstall"]);
    expect(run.code).toBe(0);
    expect(await ours()).toBeUndefined();
    expect(run.stdout).toContain(`removed ${join(binDir, "portmap-hostip")}\n`);
    expect(run.stdout).toContain(`removed ${record()}\n`);
    expect(await readdir(binDir)).toEqual([]);
  });
});

describe("a directory that is not there", () => {
  it("is named with the flag that gives it, or as the default that flag replaces", async () => {
    expect((await install(["--cni-bin-dir", join(root, "nope")])).stderr).toContain(
      `--cni-bin-dir ${join(root, "nope")}: no such directory`,
    );
    await rm(binDir, { recursive: true });
    expect((await install([])).stderr).toContain(`no directory ${binDir} here (--cni-bin-dir names another)`);
    expect((await install(["--cni-bin-dir", root, "--cni-conf-dir", join(root, "nope")])).stderr).toContain(
      `no directory ${join(root, "nope")} (is the network plugin installed yet?`,
    );
  });
});
