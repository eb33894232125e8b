// Where the installer writes: the node's CNI directories (each distribution's layout, and a node where two are
// laid out refused), the conflist the runtime uses, and atomic writes that keep the file's mode.
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveLayout } from "../../../src/install/files.js";
import { binDir, confDir, conflist, flannel, install, plugins, root, until, useFlannelNode } from "./flannel-node.js";

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

// The distributions' layouts, each with its directories added to the node as that distribution has them: the
// installer and the keeper (install --watch --cache-dir) find the conflist the runtime reads and the plugin
// directory, and say which layout they detected and why.
interface Row {
  name: string;
  /** Directories the distribution adds to the node (under root). */
  dirs: string[];
  /** The conflist the runtime reads (flannel's is laid there), and where the plugins are. */
  conflist: string;
  bin: string;
  detected: string;
}

const ROWS: Row[] = [
  {
    name: "kubeadm + flannel",
    dirs: [],
    conflist: "etc/cni/net.d/10-flannel.conflist",
    bin: "opt/cni/bin",
    detected: "standard layout: no k3s or RKE2 directory",
  },
  {
    name: "k3s (its embedded flannel)",
    // The standard directories exist too (other packages make them): k3s's runtime reads its own.
    dirs: ["var/lib/rancher/k3s/agent/etc/cni/net.d", "var/lib/rancher/k3s/data/cni"],
    conflist: "var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
    bin: "var/lib/rancher/k3s/data/cni",
    detected: "k3s layout: ROOT/var/lib/rancher/k3s/agent/etc/cni/net.d exists",
  },
  {
    name: "RKE2 (canal)",
    dirs: ["var/lib/rancher/rke2/agent/etc", "var/lib/rancher/rke2/bin"],
    conflist: "etc/cni/net.d/10-canal.conflist",
    bin: "opt/cni/bin",
    detected: "rke2 layout: ROOT/var/lib/rancher/rke2/agent exists",
  },
  {
    name: "Talos (flannel, its default)",
    dirs: ["var/lib/cni"],
    conflist: "etc/cni/net.d/10-flannel.conflist",
    bin: "opt/cni/bin",
    detected: "standard layout: no k3s or RKE2 directory",
  },
];

async function lay(row: Pick<Row, "dirs" | "conflist">): Promise<void> {
  for (const d of row.dirs) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, row.conflist), flannel);
}

const types = async (file: string) => (await plugins(file)).map((p) => p["type"]);

describe.each(ROWS)("the $name layout", (row) => {
  it("the installer puts the plugin and its entry where the runtime reads them", async () => {
    await lay(row);
    expect(await resolveLayout({}, root)).toEqual({
      binDir: join(root, row.bin),
      confDir: join(root, row.conflist, ".."),
      detected: expect.objectContaining({ why: expect.any(String) }),
    });
    const r = await install([]);
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(join(root, row.bin))).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);
    expect(await types(join(root, row.conflist))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });

  it("the keeper watches that conflist, says which layout and why, and keeps its plugin there", async () => {
    await lay(row);
    const controller = new AbortController();
    const state = join(root, "run/portmap-hostip");
    // No result cache yet: the keeper's passes read no nat table (none of this machine's).
    const keeping = install(["--watch", "--cache-dir", join(root, "var/lib/cni"), "--state-dir", state], {
      signal: controller.signal,
    });
    await until(async () => (await readdir(state).catch(() => [] as string[])).includes("keeper.alive"), 10_000);
    controller.abort();
    const r = await keeping;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`watching ${join(root, row.conflist, "..")} (${row.detected.replace("ROOT", root)})\n`);
    expect(r.stdout).toContain(`installed ${join(root, row.bin, "portmap-hostip")}\n`);
    expect(await types(join(root, row.conflist))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });
});

describe("a node with both k3s's and RKE2's directories", () => {
  it("is refused, naming both and the flags that settle it; the flags settle it", async () => {
    await lay({
      dirs: ["var/lib/rancher/k3s/agent/etc/cni/net.d", "var/lib/rancher/rke2/agent"],
      conflist: "etc/cni/net.d/10-canal.conflist",
    });
    const refused = await install([]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `portmap-hostip install: both k3s (${join(root, "var/lib/rancher/k3s/agent/etc/cni/net.d")}) and RKE2 (${join(root, "var/lib/rancher/rke2/agent")}) are on this node, and their runtimes read different CNI directories (k3s: /var/lib/rancher/k3s/agent/etc/cni/net.d and /var/lib/rancher/k3s/data/cni; RKE2: /etc/cni/net.d and /opt/cni/bin): say which with --cni-conf-dir and --cni-bin-dir\n`,
    );
    expect(await readdir(binDir)).toEqual([]);
    const settled = await install(["--cni-conf-dir", confDir, "--cni-bin-dir", binDir]);
    expect(settled.code, settled.stderr).toBe(0);
    expect(await types(join(confDir, "10-canal.conflist"))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });

  it("a k3s node without its flannel (no k3s conf dir) uses the standard directories, whatever k3s's bin dir holds", async () => {
    await mkdir(join(root, "var/lib/rancher/k3s/data/cni"), { recursive: true });
    expect(await resolveLayout({}, root)).toEqual({
      binDir,
      confDir,
      detected: { name: "standard", why: "no k3s or RKE2 directory" },
    });
  });
});
