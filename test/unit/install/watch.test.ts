import { readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";
import { binary, binDir, confDir, conflist, flannel, plugins, root, until, useFlannelNode } from "./flannel-node.js";

useFlannelNode();

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
    expect(await readdir(binDir)).toEqual(["portmap-hostip", "portmap-hostip-entry.json"]);

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
