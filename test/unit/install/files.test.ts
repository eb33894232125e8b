// The distributions' layouts, each a scratch root holding that distribution's directories as its nodes have them:
// the installer and the keeper (install --watch --cache-dir) find the conflist the runtime reads and the plugin
// directory, say which layout they detected and why, and a node with both k3s's and RKE2's directories is
// refused until the flags say which.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";
import { resolveLayout } from "../../../src/install/files.js";

const FLANNEL = join(import.meta.dirname, "../../fixtures/flannel/cni-conf.json");

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "pmh-layout-"));
});
afterEach(() => rm(root, { recursive: true, force: true }));

interface Row {
  name: string;
  /** Directories the distribution has on its nodes (under root). */
  dirs: string[];
  /** Where its network plugin writes its conflist, and the file. */
  conflist: string;
  bin: string;
  detected: string;
}

const ROWS: Row[] = [
  {
    name: "kubeadm + flannel",
    dirs: ["etc/cni/net.d", "opt/cni/bin"],
    conflist: "etc/cni/net.d/10-flannel.conflist",
    bin: "opt/cni/bin",
    detected: "standard layout: no k3s or RKE2 directory",
  },
  {
    name: "k3s (its embedded flannel)",
    // The standard directories exist too on many k3s nodes (other packages make them): k3s's runtime reads its own.
    dirs: ["var/lib/rancher/k3s/agent/etc/cni/net.d", "var/lib/rancher/k3s/data/cni", "etc/cni/net.d", "opt/cni/bin"],
    conflist: "var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
    bin: "var/lib/rancher/k3s/data/cni",
    detected: "k3s layout: ROOT/var/lib/rancher/k3s/agent/etc/cni/net.d exists",
  },
  {
    name: "RKE2 (canal)",
    dirs: ["var/lib/rancher/rke2/agent/etc", "var/lib/rancher/rke2/bin", "etc/cni/net.d", "opt/cni/bin"],
    conflist: "etc/cni/net.d/10-canal.conflist",
    bin: "opt/cni/bin",
    detected: "rke2 layout: ROOT/var/lib/rancher/rke2/agent exists",
  },
  {
    name: "Talos (flannel, its default)",
    dirs: ["etc/cni/net.d", "opt/cni/bin", "var/lib/cni"],
    conflist: "etc/cni/net.d/10-flannel.conflist",
    bin: "opt/cni/bin",
    detected: "standard layout: no k3s or RKE2 directory",
  },
];

async function lay(row: Pick<Row, "dirs" | "conflist">): Promise<string> {
  for (const d of row.dirs) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, row.conflist), await readFile(FLANNEL, "utf8"));
  const binary = join(root, "portmap-hostip-linux-x64");
  await writeFile(binary, "#!/bin/sh\n");
  return binary;
}

async function run(args: string[], signal?: AbortSignal) {
  const out = { code: 0, stdout: "", stderr: "" };
  out.code = await runInstall(args, {
    root,
    ...(signal ? { signal } : {}),
    stdout: (t) => void (out.stdout += t),
    stderr: (t) => void (out.stderr += t),
  });
  return out;
}

const types = async (file: string) =>
  (JSON.parse(await readFile(file, "utf8")) as { plugins: Array<{ type: string }> }).plugins.map((p) => p.type);

describe.each(ROWS)("the $name layout", (row) => {
  it("the installer puts the plugin and its entry where the runtime reads them", async () => {
    const binary = await lay(row);
    expect(await resolveLayout({}, root)).toEqual({
      binDir: join(root, row.bin),
      confDir: join(root, row.conflist, ".."),
      detected: expect.objectContaining({ why: expect.any(String) }),
    });
    const r = await run(["--binary", binary]);
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(join(root, row.bin))).toEqual(["portmap-hostip"]);
    expect(await types(join(root, row.conflist))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });

  it("the keeper watches that conflist, says which layout and why, and keeps its plugin there", async () => {
    const binary = await lay(row);
    const controller = new AbortController();
    const state = join(root, "run/portmap-hostip");
    const keeping = run(
      ["--watch", "--binary", binary, "--cache-dir", join(root, "var/lib/cni"), "--state-dir", state],
      controller.signal,
    );
    const deadline = Date.now() + 10_000;
    while (!(await readdir(state).catch(() => [] as string[])).includes("keeper.alive")) {
      if (Date.now() > deadline) throw new Error("no keeper pass within 10 s");
      await new Promise((r) => setTimeout(r, 50));
    }
    controller.abort();
    const r = await keeping;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`watching ${join(root, row.conflist, "..")} (${row.detected.replace("ROOT", root)})\n`);
    expect(r.stdout).toContain(`installed ${join(root, row.bin, "portmap-hostip")}\n`);
    expect(await types(join(root, row.conflist))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });
});

describe("a node with both k3s's and RKE2's directories", () => {
  const row = {
    dirs: ["var/lib/rancher/k3s/agent/etc/cni/net.d", "var/lib/rancher/rke2/agent", "etc/cni/net.d", "opt/cni/bin"],
    conflist: "etc/cni/net.d/10-canal.conflist",
  };

  it("is refused, naming both and the flags that settle it; the flags settle it", async () => {
    const binary = await lay(row);
    const refused = await run(["--binary", binary]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `portmap-hostip install: both k3s (${join(root, "var/lib/rancher/k3s/agent/etc/cni/net.d")}) and RKE2 (${join(root, "var/lib/rancher/rke2/agent")}) are on this node, and their runtimes read different CNI directories (k3s: /var/lib/rancher/k3s/agent/etc/cni/net.d and /var/lib/rancher/k3s/data/cni; RKE2: /etc/cni/net.d and /opt/cni/bin): say which with --cni-conf-dir and --cni-bin-dir\n`,
    );
    expect(await readdir(join(root, "opt/cni/bin"))).toEqual([]);
    const settled = await run([
      "--binary",
      binary,
      "--cni-conf-dir",
      join(root, "etc/cni/net.d"),
      "--cni-bin-dir",
      join(root, "opt/cni/bin"),
    ]);
    expect(settled.code, settled.stderr).toBe(0);
    expect(await types(join(root, row.conflist))).toEqual(["flannel", "portmap", "portmap-hostip"]);
  });

  it("a k3s node without its flannel (no k3s conf dir) uses the standard directories, whatever k3s's bin dir holds", async () => {
    await mkdir(join(root, "var/lib/rancher/k3s/data/cni"), { recursive: true });
    expect(await resolveLayout({}, root)).toEqual({
      binDir: join(root, "opt/cni/bin"),
      confDir: join(root, "etc/cni/net.d"),
      detected: { name: "standard", why: "no k3s or RKE2 directory" },
    });
  });
});
