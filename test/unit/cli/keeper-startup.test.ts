// What the keeper loads: without --metrics-address none of the metrics code (prom-client, node:http), nor the
// HTTPS of the Kubernetes API without a service account. The bundle is built as scripts/build.mjs builds it, with
// prom-client left outside so that its loading shows, and run with a preload that lists, at exit, the modules it
// loaded. The keeper watches an empty result cache (no pass reads or writes a rule) and ends on SIGTERM.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../../..");
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-keeper-startup-"));
  buildSync({
    entryPoints: [join(ROOT, "src/main.ts")],
    outfile: join(dir, "plugin.cjs"),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    mainFields: ["module", "main"],
    external: ["prom-client"],
    define: { PORTMAP_HOSTIP_VERSION: '"test"', PORTMAP_HOSTIP_COMMIT: '"test"' },
    logLevel: "error",
  });
  writeFileSync(
    join(dir, "preload.cjs"),
    `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(join(dir, "loaded.json"))}, JSON.stringify([...process.moduleLoadList, ...Object.keys(require.cache)])));\n`,
  );
  for (const d of ["bin", "net.d", "cache", "state"]) mkdirSync(join(dir, d));
  writeFileSync(
    join(dir, "net.d/10-bridge.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "cbr0", plugins: [{ type: "bridge" }, { type: "portmap" }] }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_PATH: join(ROOT, "node_modules") };
  delete env["KUBERNETES_SERVICE_HOST"];
  delete env["NODE_OPTIONS"];
  const child = spawn(
    process.execPath,
    [
      ...["-r", join(dir, "preload.cjs"), join(dir, "plugin.cjs")],
      ...["install", "--watch", "--cni-bin-dir", join(dir, "bin"), "--cni-conf-dir", join(dir, "net.d")],
      ...["--binary", join(dir, "plugin.cjs"), "--cache-dir", join(dir, "cache"), "--state-dir", join(dir, "state")],
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
