// What a pod start loads: a pod without hostPorts (most pods) must not pay for the modules only hostPort work
// needs. The bundle is built as scripts/build.mjs builds it and run with a preload that lists, at exit, the
// Node modules it loaded.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-startup-"));
  buildSync({
    entryPoints: [join(import.meta.dirname, "../../src/main.ts")],
    outfile: join(dir, "plugin.cjs"),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    define: { PORTMAP_HOSTIP_VERSION: '"test"', PORTMAP_HOSTIP_COMMIT: '"test"' },
    logLevel: "error",
  });
  writeFileSync(
    join(dir, "preload.cjs"),
    `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(join(dir, "loaded.json"))}, JSON.stringify(process.moduleLoadList)));\n`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CONF = {
  cniVersion: "1.0.0",
  name: "k8s-pod-network",
  type: "portmap-hostip",
  runtimeConfig: {},
  prevResult: {
    cniVersion: "1.0.0",
    interfaces: [{ name: "eth0", sandbox: "/var/run/netns/pmh-x" }],
    ips: [{ address: "10.244.0.5/24", interface: 0 }],
  },
};

describe("a pod without hostPorts", () => {
  it("is passed on without loading child_process, node:crypto, node:tty or net", () => {
    const r = spawnSync(process.execPath, ["-r", join(dir, "preload.cjs"), join(dir, "plugin.cjs")], {
      input: JSON.stringify(CONF),
      encoding: "utf8",
      timeout: 20_000,
      env: {
        PATH: process.env["PATH"],
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "pmh-startup",
        CNI_NETNS: "/var/run/netns/pmh-x",
        CNI_IFNAME: "eth0",
        CNI_PATH: "/opt/cni/bin",
      },
    });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(CONF.prevResult);
    const loaded = JSON.parse(readFileSync(join(dir, "loaded.json"), "utf8")) as string[];
    expect(loaded).toContain("NativeModule fs");
    for (const name of ["child_process", "crypto", "tty", "net", "fs/promises"])
      expect(loaded).not.toContain(`NativeModule ${name}`);
  });
});
