// What a pod start loads: a pod without hostPorts (most pods) must not pay for the modules only hostPort work
// needs, and a hostPort pod not for those it can do without. The bundle is built as scripts/build.mjs builds
// it (ip-address, and the installer's jsonc-parser and diff, and the keeper's prom-client left outside, so that
// their loading shows) and run with a preload that lists, at exit, the Node modules it loaded. The keeper
// likewise: without --metrics-address none of the metrics code, without a service account no HTTPS.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");
// The installer's libraries and the keeper's metrics: only the operator commands load them.
const OPERATOR_ONLY = ["jsonc-parser", "diff", "prom-client"];
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

/** A node's directories for the keeper: an empty result cache (no pass reads or writes a rule), a conflist. */
function keeperDirs(): string {
  const node = join(dir, "node");
  for (const d of ["bin", "net.d", "cache", "state"]) mkdirSync(join(node, d), { recursive: true });
  writeFileSync(
    join(node, "net.d/10-bridge.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", plugins: [{ type: "bridge" }, { type: "portmap" }] }),
  );
  return node;
}

/** A port nothing listens on now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs the keeper until it watches, then SIGTERM; the modules it loaded. */
async function keeper(extra: string[]): Promise<string[]> {
  const node = keeperDirs();
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_PATH: join(ROOT, "node_modules") };
  delete env["KUBERNETES_SERVICE_HOST"];
  delete env["NODE_OPTIONS"];
  const child = spawn(
    process.execPath,
    [
      ...["-r", join(dir, "preload.cjs"), join(dir, "plugin.cjs")],
      ...["install", "--watch", "--cni-bin-dir", join(node, "bin"), "--cni-conf-dir", join(node, "net.d")],
      ...["--binary", join(dir, "plugin.cjs"), "--cache-dir", join(node, "cache"), "--state-dir", join(node, "state")],
      ...extra,
    ],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 15_000;
  while (!out.includes("keeper: watching")) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill("SIGKILL");
      throw new Error(`the keeper did not start within 15 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGTERM");
  expect(await exited, out).toBe(0);
  return JSON.parse(readFileSync(join(dir, "loaded.json"), "utf8")) as string[];
}

const promClient = (loaded: string[]) => loaded.filter((m) => m.includes("/node_modules/prom-client/"));

describe("the keeper", () => {
  it("without --metrics-address loads neither prom-client nor node:http(s)", async () => {
    const loaded = await keeper([]);
    expect(loaded).toContain("NativeModule child_process");
    expect(promClient(loaded)).toEqual([]);
    for (const name of ["http", "https"]) expect(loaded).not.toContain(`NativeModule ${name}`);
  }, 30_000);

  it("with --metrics-address loads them", async () => {
    const loaded = await keeper(["--metrics-address", `127.0.0.1:${await freePort()}`]);
    expect(promClient(loaded).length).toBeGreaterThan(0);
    expect(loaded).toContain("NativeModule http");
  }, 30_000);
});
