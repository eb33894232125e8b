// The entry has one owner: install writes it from its flags; the keeper (install --watch) keeps the options the
// installed entry has — through its start, the network plugin's rewrites of the conflist and its own restarts —
// and sets only the keys its own flags give. Temporary directories laid out like a node (the `root` option).
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";

const FLANNEL = join(import.meta.dirname, "../../fixtures/flannel/cni-conf.json");
const CAPABILITIES = { portMappings: true, "io.kubernetes.cri.pod-annotations": true };
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

let root: string;
let conflist: string;
let flannel: string;
let output: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "portmap-hostip-owner-"));
  await mkdir(join(root, "opt/cni/bin"), { recursive: true });
  await mkdir(join(root, "etc/cni/net.d"), { recursive: true });
  flannel = await readFile(FLANNEL, "utf8");
  conflist = join(root, "etc/cni/net.d/10-flannel.conflist");
  await writeFile(conflist, flannel);
  await writeFile(join(root, "binary"), "");
  output = "";
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const context = (signal?: AbortSignal) => ({
  root,
  ...(signal ? { signal } : {}),
  stdout: (t: string) => void (output += t),
  stderr: (t: string) => void (output += t),
});

const stateDir = () => join(root, "run/portmap-hostip");

const install = (args: string[]) => runInstall(["--binary", join(root, "binary"), ...args], context());

const ours = async (): Promise<Record<string, unknown> | undefined> =>
  (JSON.parse(await readFile(conflist, "utf8")).plugins as Array<Record<string, unknown>>).find(
    (p) => p["type"] === "portmap-hostip",
  );

async function until(what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await condition().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`not within 5 s: ${what}\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The keeper as the README starts it (a cache directory of its own: no pod here, so its passes do nothing). */
async function keeper(extra: string[] = []): Promise<{ stop: () => Promise<number> }> {
  const controller = new AbortController();
  const args = ["--watch", "--cache-dir", join(root, "var/lib/cni"), ...extra];
  const running = runInstall(["--binary", join(root, "binary"), ...args], context(controller.signal));
  await until("the keeper watches", async () => output.includes("watching "));
  return {
    stop: () => {
      controller.abort();
      return running;
    },
  };
}

/** What flannel does when its pod restarts: its own conflist, without our entry. */
const flannelRewrites = () => writeFile(conflist, flannel);

const hasEntry = (entry: object) => async () => JSON.stringify(await ours()) === JSON.stringify(entry);

describe("the keeper keeps the options of the installed entry", () => {
  it("through its start, the conflist's rewrites and its restarts", async () => {
    expect(await install(QUICK_START)).toBe(0);
    expect(await ours()).toEqual(INSTALLED);

    let k = await keeper();
    await until("the keeper's copy of the entry", async () => (await readdir(stateDir())).includes("entry.json"));
    expect(await ours()).toEqual(INSTALLED);
    await flannelRewrites();
    await until("the entry is back with every option", hasEntry(INSTALLED));

    // An option added to the entry by hand is the entry's too.
    const edited = JSON.parse(await readFile(conflist, "utf8"));
    edited.plugins[2].allowedHostCIDRs = ["192.0.2.0/24"];
    await writeFile(conflist, JSON.stringify(edited, null, 2));
    await until("the keeper took in the edit", async () =>
      (await readFile(join(stateDir(), "entry.json"), "utf8")).includes("allowedHostCIDRs"),
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

  it("sets the keys its own flags give and keeps the others", async () => {
    expect(await install(QUICK_START)).toBe(0);
    const k = await keeper(["--default-host-ip", "any", "--state-dir", join(root, "state")]);
    const expected = { ...INSTALLED, defaultHostIP: "any", stateDir: join(root, "state") };
    await until("the keeper's keys are set", hasEntry(expected));
    await flannelRewrites();
    await until("the entry is back", hasEntry(expected));
    expect(await k.stop()).toBe(0);
    expect(JSON.parse(await readFile(join(root, "state/entry.json"), "utf8"))).toEqual(expected);
  });

  it("takes out a stateDir other than its own: the plugin's records go where the keeper reads them", async () => {
    expect(await install(QUICK_START)).toBe(0);
    const edited = JSON.parse(await readFile(conflist, "utf8"));
    edited.plugins[2].stateDir = "/var/run/elsewhere";
    await writeFile(conflist, JSON.stringify(edited, null, 2));
    const k = await keeper();
    await until("the entry names the keeper's directory (the default)", hasEntry(INSTALLED));
    expect(await k.stop()).toBe(0);
  });

  it("install, run again, writes the entry from its own flags; --uninstall removes it with the keeper's copy", async () => {
    expect(await install(QUICK_START)).toBe(0);
    const k = await keeper();
    await until("the keeper's copy of the entry", async () => (await readdir(stateDir())).includes("entry.json"));
    expect(await k.stop()).toBe(0);
    expect(await install(["--default-host-ip", "any"])).toBe(0);
    expect(await ours()).toEqual({ type: "portmap-hostip", capabilities: CAPABILITIES, defaultHostIP: "any" });

    output = "";
    expect(await install(["--uninstall"])).toBe(0);
    expect(await ours()).toBeUndefined();
    expect(output).toContain(`removed ${join(root, "opt/cni/bin/portmap-hostip")}\n`);
    expect(output).toContain(`removed ${join(root, "run/portmap-hostip/entry.json")}\n`);
    expect(await readdir(stateDir())).not.toContain("entry.json");
  });
});

describe("a directory that is not there", () => {
  it("is named with the flag that gives it, or as the default that flag replaces", async () => {
    expect(await install(["--cni-bin-dir", join(root, "nope")])).toBe(1);
    expect(output).toContain(`--cni-bin-dir ${join(root, "nope")}: no such directory`);
    await rm(join(root, "opt/cni/bin"), { recursive: true });
    output = "";
    expect(await install([])).toBe(1);
    expect(output).toContain(`no directory ${join(root, "opt/cni/bin")} here (--cni-bin-dir names another)`);
    output = "";
    expect(await install(["--cni-bin-dir", root, "--cni-conf-dir", join(root, "nope")])).toBe(1);
    expect(output).toContain(`no directory ${join(root, "nope")} (is the network plugin installed yet?`);
  });
});
