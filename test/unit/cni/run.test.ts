// The CNI protocol around the commands, on the plugin bundled as scripts/build.mjs bundles it and run as the
// runtime runs it: CNI_* environment and stdin in, the result or the CNI error JSON on stdout and the exit code out.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { LATEST_VERSION, SUPPORTED_VERSIONS } from "../../../src/core/config.js";
import { Code } from "../../../src/core/errors.js";
import { readRecords } from "../../../src/host/state.js";

const ROOT = join(import.meta.dirname, "../../..");
let dir: string;
let plugin: string;
/** A PATH with nothing on it: no call here may run a tool. */
let emptyPath: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-cni-run-"));
  plugin = join(dir, "plugin.cjs");
  emptyPath = join(dir, "empty");
  mkdirSync(emptyPath);
  buildSync({
    entryPoints: [join(ROOT, "src/main.ts")],
    outfile: plugin,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    define: { PORTMAP_HOSTIP_VERSION: '"test"', PORTMAP_HOSTIP_COMMIT: '"test"' },
    logLevel: "error",
  });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let stateDir: string;
beforeEach(() => {
  stateDir = mkdtempSync(join(dir, "state-"));
});

const ENV = {
  CNI_CONTAINERID: "abc123",
  CNI_NETNS: "/var/run/netns/x",
  CNI_IFNAME: "eth0",
  CNI_PATH: "/opt/cni/bin",
  CNI_ARGS: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
};
const PREV = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
  ips: [{ address: "10.244.1.5/24", interface: 0 }],
};

/** One call of the plugin: `env` as its whole CNI environment, `stdin` as JSON (or as given). */
function cni(command: string, stdin: unknown, env: Record<string, string | undefined> = ENV) {
  const r = spawnSync(process.execPath, [plugin], {
    input: typeof stdin === "string" ? stdin : JSON.stringify(stdin),
    encoding: "utf8",
    timeout: 20_000,
    env: { PATH: emptyPath, CNI_COMMAND: command, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = (stdout: string): unknown => JSON.parse(stdout);
const conf = (entry: Record<string, unknown> = {}) => ({
  cniVersion: "1.0.0",
  name: "cbr0",
  type: "portmap-hostip",
  stateDir,
  prevResult: PREV,
  ...entry,
});

describe("the CNI protocol", () => {
  it("VERSION prints the versions it speaks, without a configuration", () => {
    const r = cni("VERSION", "");
    expect([r.code, json(r.stdout), r.stderr]).toEqual([
      0,
      { cniVersion: LATEST_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] },
      "",
    ]);
  });

  it("ADD of a pod without hostPorts prints the prevResult in the configuration's version", () => {
    const r = cni("ADD", conf({ cniVersion: "0.3.1" }));
    expect([r.code, json(r.stdout)]).toEqual([
      0,
      { ...PREV, cniVersion: "0.3.1", ips: [{ ...PREV.ips[0], version: "4" }] },
    ]);
  });

  it("refuses an invalid environment with the CNI error JSON (4, 3) and exit 1", () => {
    const frob = cni("FROB", conf());
    expect([frob.code, json(frob.stdout)]).toEqual([
      1,
      { cniVersion: LATEST_VERSION, code: Code.InvalidEnvironment, msg: expect.stringContaining("FROB"), details: "" },
    ]);
    const noId = cni("ADD", conf(), { ...ENV, CNI_CONTAINERID: undefined });
    expect([noId.code, (json(noId.stdout) as { code: number }).code]).toEqual([1, Code.InvalidEnvironment]);
    const badId = cni("ADD", conf(), { ...ENV, CNI_CONTAINERID: "../x" });
    expect([badId.code, (json(badId.stdout) as { code: number }).code]).toEqual([1, Code.UnknownContainer]);
  });

  it("answers an error in the configuration's version when it speaks it, else in its latest", () => {
    const bad = cni("ADD", conf({ cniVersion: "0.4.0", defaultHostIP: 5 }));
    expect([bad.code, json(bad.stdout)]).toEqual([
      1,
      { cniVersion: "0.4.0", code: Code.InvalidConfig, msg: expect.stringContaining("defaultHostIP = 5"), details: "" },
    ]);
    const old = cni("ADD", conf({ cniVersion: "0.2.0" }));
    expect(json(old.stdout)).toMatchObject({ cniVersion: LATEST_VERSION, code: Code.IncompatibleVersion });
    const notJson = cni("ADD", "name=cbr0");
    expect([notJson.code, (json(notJson.stdout) as { code: number }).code]).toEqual([1, Code.DecodeFailure]);
  });

  it("DEL of a pod without hostPorts does nothing; with hostPorts it records the DEL; a bad policy key never sticks it", async () => {
    const plain = cni("DEL", conf({ defaultHostIP: 5, prevResult: undefined }));
    expect([plain.code, plain.stdout, plain.stderr]).toEqual([0, "", ""]);
    expect((await readRecords(stateDir)).records.size).toBe(0);
    const mapped = cni(
      "DEL",
      conf({ defaultHostIP: 5, runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80 }] } }),
    );
    expect([mapped.code, mapped.stdout]).toEqual([0, ""]);
    const { records } = await readRecords(stateDir);
    expect([...records.values()].map((r) => [r.network, r.containerId, r.state])).toEqual([
      ["cbr0", "abc123", "deleted"],
    ]);
  });

  it("STATUS on a node with neither iptables nor nft: not ready (50)", () => {
    const r = cni("STATUS", conf());
    expect([r.code, json(r.stdout)]).toMatchObject([
      1,
      {
        cniVersion: "1.0.0",
        code: Code.PluginNotAvailable,
        msg: expect.stringMatching(/^neither iptables nor nft is usable/),
      },
    ]);
  });

  it("GC without the list of valid attachments judges nothing", () => {
    const r = cni("GC", { cniVersion: "1.1.0", name: "cbr0", type: "portmap-hostip" }, {});
    expect([r.code, r.stdout, r.stderr]).toEqual([0, "", ""]);
  });

  it("appends one line per call to the entry's logFile, errors included", () => {
    const logFile = join(dir, "calls.log");
    writeFileSync(logFile, "");
    cni("ADD", conf({ logFile }));
    cni("ADD", conf({ logFile, runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80 }] } }));
    const lines = readFileSync(logFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      expect.objectContaining({ command: "ADD", pod: "default/web", containerID: "abc123", ok: true }),
      expect.objectContaining({ command: "ADD", ok: false, code: Code.InvalidConfig }),
    ]);
  });
});
