// What a pod start loads: a pod without hostPorts (most pods) must not pay for the modules only hostPort work
// needs, and a hostPort pod not for those it can do without. The bundle is built as scripts/build.mjs builds
// it (ip-address, and the installer's jsonc-parser and diff, left outside, so that their loading shows) and run
// with a preload that lists, at exit, the Node modules it loaded.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");
// The installer's libraries: only the operator commands load them.
const OPERATOR_ONLY = ["jsonc-parser", "diff"];
const FIXTURES = join(ROOT, "test/fixtures");
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-startup-"));
  buildSync({
    entryPoints: [join(ROOT, "src/main.ts")],
    outfile: join(dir, "plugin.cjs"),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external: ["ip-address", "ip-address/*", ...OPERATOR_ONLY],
    define: { PORTMAP_HOSTIP_VERSION: '"test"', PORTMAP_HOSTIP_COMMIT: '"test"' },
    logLevel: "error",
  });
  writeFileSync(
    join(dir, "preload.cjs"),
    `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(join(dir, "loaded.json"))}, JSON.stringify([...process.moduleLoadList, ...Object.keys(require.cache)])));\n`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PREV_RESULT = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/pmh-x" }],
  ips: [{ address: "10.244.1.5/24", interface: 0 }],
};
const CONF = { cniVersion: "1.0.0", name: "cbr0", type: "portmap-hostip", runtimeConfig: {}, prevResult: PREV_RESULT };

/** Runs the bundle's ADD with `path` as PATH; the modules it loaded. */
function add(conf: object, path: string): string[] {
  const r = spawnSync(process.execPath, ["-r", join(dir, "preload.cjs"), join(dir, "plugin.cjs")], {
    input: JSON.stringify(conf),
    encoding: "utf8",
    timeout: 20_000,
    env: {
      PATH: path,
      NODE_PATH: join(ROOT, "node_modules"),
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "abc123",
      CNI_NETNS: "/var/run/netns/pmh-x",
      CNI_IFNAME: "eth0",
      CNI_PATH: "/opt/cni/bin",
    },
  });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual(PREV_RESULT);
  return JSON.parse(readFileSync(join(dir, "loaded.json"), "utf8")) as string[];
}

function isOperatorOnly(module: string): boolean {
  return OPERATOR_ONLY.some((name) => module.includes(`/node_modules/${name}/`));
}

describe("a pod without hostPorts", () => {
  it("is passed on without loading child_process, node:crypto, node:tty, net or ip-address", () => {
    const loaded = add(CONF, process.env["PATH"] ?? "");
    expect(loaded).toContain("NativeModule fs");
    for (const name of ["child_process", "crypto", "tty", "net", "fs/promises"])
      expect(loaded).not.toContain(`NativeModule ${name}`);
    expect(loaded.filter((m) => m.includes("ip-address"))).toEqual([]);
    expect(loaded.filter(isOperatorOnly)).toEqual([]);
  });
});

describe("an IPv4 pod with a hostPort on portmap's iptables backend", () => {
  it("is scoped without loading node:crypto (chain name), node:fs/promises (its record) or ip-address", () => {
    // Stand-ins for the three tools, printing what the real ones printed (recorded fixtures).
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const tool = (name: string, output: string) =>
      writeFileSync(join(bin, name), `#!/bin/sh\n/bin/cat >/dev/null\n/bin/cat <<'EOF'\n${output}\nEOF\n`, {
        mode: 0o755,
      });
    const compact = (file: string) => JSON.stringify(JSON.parse(readFileSync(join(FIXTURES, "host", file), "utf8")));
    tool("ip", `${compact("ip-address.json")}\n${compact("ip-route-default-v4.json")}`);
    const chain = "CNI-DN-3e9a3d0f9583cdc0e7133";
    const save = readFileSync(join(FIXTURES, "iptables/unscoped-v4.save"), "utf8").split("\n");
    tool("iptables", [`-N ${chain}`, ...save.filter((l) => l.startsWith(`-A ${chain} `))].join("\n"));
    tool("iptables-restore", "");
    const loaded = add(
      {
        ...CONF,
        defaultHostIP: "node",
        stateDir: join(dir, "state"),
        runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp", hostIP: "" }] },
      },
      bin,
    );
    expect(loaded).toContain("NativeModule child_process");
    for (const name of ["crypto", "tty", "fs/promises"]) expect(loaded).not.toContain(`NativeModule ${name}`);
    expect(loaded.filter((m) => m.includes("ip-address"))).toEqual([]);
    expect(loaded.filter(isOperatorOnly)).toEqual([]);
  });
});
