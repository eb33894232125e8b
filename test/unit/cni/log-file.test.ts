// The logFile writer: whole lines from many processes at once, rotation at the cap, mkdir -p, and a note
// instead of a failure when the file cannot be written.
import { execFile } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { appendLine, type CallRecord, formatCall, logCall } from "../../../src/cni/log-file.js";
import { parseNetConf } from "../../../src/core/config.js";
import { parseIp } from "../../../src/core/ip.js";
import { writeOutput } from "../../../src/host/output.js";
import { resolveMappings } from "../../../src/policy/resolve.js";
import { NODE } from "../fixtures.js";

// The note goes to fd 2 with fs.writeSync (so that a pod start does not load `net`): caught here instead.
vi.mock("../../../src/host/output.js", () => ({ writeOutput: vi.fn() }));

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-log-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  vi.restoreAllMocks();
});

const ip = (text: string) => parseIp(text)!;
const call = (over: Partial<CallRecord> = {}): CallRecord => ({
  time: new Date("2026-01-02T03:04:05.678Z"),
  command: "ADD",
  pod: "default/web",
  containerId: "abc123",
  mappings: undefined,
  resolved: undefined,
  error: undefined,
  durationMs: 12.345,
  ...over,
});

describe("formatCall", () => {
  it("writes one JSON line with the decided host IPs of each mapping", () => {
    const line = formatCall(
      call({
        resolved: [
          {
            mapping: { hostPort: 8080, containerPort: 80, protocol: "tcp", hostIp: undefined },
            source: "node",
            ips: [ip("192.0.2.10"), ip("127.0.0.1")],
            leftOut: [],
            closed: false,
          },
          {
            mapping: { hostPort: 8443, containerPort: 443, protocol: "tcp", hostIp: ip("192.0.2.11") },
            source: "runtime",
            ips: undefined,
            leftOut: [],
            closed: false,
          },
          {
            mapping: { hostPort: 5353, containerPort: 53, protocol: "udp", hostIp: undefined },
            source: "any",
            ips: undefined,
            leftOut: [],
            closed: false,
          },
        ],
      }),
    );
    expect(line.endsWith("\n")).toBe(true);
    expect(line.slice(0, -1)).not.toContain("\n");
    expect(JSON.parse(line)).toEqual({
      time: "2026-01-02T03:04:05.678Z",
      command: "ADD",
      pod: "default/web",
      containerID: "abc123",
      mappings: [
        { hostPort: 8080, protocol: "tcp", source: "node", hostIPs: ["192.0.2.10", "127.0.0.1"] },
        { hostPort: 8443, protocol: "tcp", source: "runtime", hostIPs: ["192.0.2.11"] },
        { hostPort: 5353, protocol: "udp", source: "any", hostIPs: "any" },
      ],
      ok: true,
      durationMs: 12.3,
    });
  });

  it("writes the error code and message, and the requested mappings, of a failed call on one line", () => {
    const line = formatCall(
      call({
        mappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp", hostIp: ip("192.0.2.99") }],
        error: { code: 100, msg: "host IP 192.0.2.99 ... is not allowed:\nline two" },
      }),
    );
    expect(line.slice(0, -1)).not.toContain("\n");
    expect(JSON.parse(line)).toMatchObject({
      mappings: [{ hostPort: 8080, protocol: "tcp", hostIP: "192.0.2.99" }],
      ok: false,
      code: 100,
      msg: "host IP 192.0.2.99 ... is not allowed:\nline two",
    });
  });

  it("leaves out what a command does not have (STATUS: no pod, no container, no mappings)", () => {
    expect(JSON.parse(formatCall(call({ command: "STATUS", pod: undefined, containerId: undefined })))).toEqual({
      time: "2026-01-02T03:04:05.678Z",
      command: "STATUS",
      ok: true,
      durationMs: 12.3,
    });
  });
});

describe("appendLine", () => {
  it("creates the missing folders and appends", () => {
    const file = join(dir, "a/b/c.log");
    appendLine(file, "one\n");
    appendLine(file, "two\n");
    expect(readFileSync(file, "utf8")).toBe("one\ntwo\n");
  });

  it("rotates at the cap, keeping exactly one previous file", () => {
    const file = join(dir, "p.log");
    for (let i = 0; i < 10; i++) appendLine(file, `line ${i} ${"x".repeat(40)}\n`, 200);
    const lines = (f: string) =>
      readFileSync(f, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => Number(l.split(" ")[1]));
    // 48-byte lines, 200-byte cap: four per file.
    expect(lines(`${file}.1`)).toEqual([4, 5, 6, 7]);
    expect(lines(file)).toEqual([8, 9]);
    expect(readdirSync(dir).sort()).toEqual(["p.log", "p.log.1"]);
  });

  it("rotates a file that reached the default cap (10 MiB)", () => {
    const file = join(dir, "p.log");
    writeFileSync(file, "");
    truncateSync(file, 10 * 1024 * 1024 - 5);
    appendLine(file, "next line\n");
    expect(statSync(`${file}.1`).size).toBe(10 * 1024 * 1024 - 5);
    expect(readFileSync(file, "utf8")).toBe("next line\n");
  });

  it("removes a lock file left by a killed rotation once it is stale, then rotates again", () => {
    const file = join(dir, "p.log");
    writeFileSync(file, "x".repeat(100));
    writeFileSync(`${file}.lock`, "");
    vi.spyOn(Date, "now").mockReturnValue(Date.now() + 60_000);
    appendLine(file, "a\n", 100);
    // This call wrote to the full file and cleared the lock; the next one rotates.
    expect(existsSync(`${file}.lock`)).toBe(false);
    appendLine(file, "b\n", 100);
    expect(readFileSync(`${file}.1`, "utf8")).toBe(`${"x".repeat(100)}a\n`);
    expect(readFileSync(file, "utf8")).toBe("b\n");
  });
});

describe("logCall", () => {
  it("notes an unwritable log file on stderr and does not throw", () => {
    const stderr = vi.mocked(writeOutput);
    const notAFolder = join(dir, "file");
    writeFileSync(notAFolder, "");
    expect(() => logCall(join(notAFolder, "x.log"), call())).not.toThrow();
    expect(stderr).toHaveBeenCalledTimes(1);
    expect(stderr.mock.calls[0]?.[0]).toBe(2);
    expect(String(stderr.mock.calls[0]?.[1])).toMatch(
      /^portmap-hostip: cannot write log file .*\/file\/x\.log: ENOTDIR/,
    );
  });
});

describe("many processes at once", () => {
  const PROCESSES = 16;
  const LINES = 40;
  // Twice PIPE_BUF: atomicity must not depend on the pipe limit.
  const LINE_BYTES = 8192;

  /** Runs PROCESSES writers of LINES lines each (the real module, bundled) against `file` with `cap`. */
  async function writers(file: string, cap: number): Promise<void> {
    const script = join(dir, "writer.cjs");
    buildSync({
      stdin: {
        contents: `import { appendLine } from ${JSON.stringify(join(import.meta.dirname, "../../../src/cni/log-file.ts"))};
const [file, id, lines, bytes, cap] = process.argv.slice(2);
for (let i = 0; i < Number(lines); i++) {
  const head = "w" + id + " " + i + " ";
  appendLine(file, head + "x".repeat(Number(bytes) - head.length - 1) + "\\n", Number(cap));
}`,
        resolveDir: dir,
        loader: "ts",
      },
      bundle: true,
      platform: "node",
      format: "cjs",
      outfile: script,
      logLevel: "error",
    });
    await Promise.all(
      Array.from(
        { length: PROCESSES },
        (_, id) =>
          new Promise<void>((resolve, reject) => {
            execFile(
              process.execPath,
              [script, file, String(id), String(LINES), String(LINE_BYTES), String(cap)],
              { timeout: 60_000 },
              (err) => (err ? reject(err) : resolve()),
            );
          }),
      ),
    );
  }

  const linesOf = (file: string): string[] =>
    existsSync(file) ? readFileSync(file, "utf8").split("\n").slice(0, -1) : [];
  const whole = (line: string) => line.length === LINE_BYTES - 1 && /^w\d+ \d+ x+$/.test(line);

  it("never interleave within a line, and lose none", async () => {
    const file = join(dir, "logs/p.log");
    await writers(file, 10 * 1024 * 1024);
    const lines = linesOf(file);
    expect(lines.filter((l) => !whole(l))).toEqual([]);
    expect(new Set(lines.map((l) => l.split(" ").slice(0, 2).join(" "))).size).toBe(PROCESSES * LINES);
  });

  it("rotate concurrently without breaking a line or leaving a lock behind", async () => {
    const file = join(dir, "p.log");
    const cap = 20 * LINE_BYTES;
    await writers(file, cap);
    const current = linesOf(file);
    const previous = linesOf(`${file}.1`);
    expect([...current, ...previous].filter((l) => !whole(l))).toEqual([]);
    // A writer that measured the file just before it filled up adds its line anyway: at most one each.
    for (const f of [file, `${file}.1`]) expect(statSync(f).size).toBeLessThanOrEqual(cap + PROCESSES * LINE_BYTES);
    expect(previous.length).toBeGreaterThan(0);
    expect(
      readdirSync(dir)
        .filter((f) => f.startsWith("p.log"))
        .sort(),
    ).toEqual(["p.log", "p.log.1"]);
  });
});

describe("formatCall of a closed mapping", () => {
  it("gives a closed mapping its reason", () => {
    const conf = parseNetConf({
      cniVersion: "1.0.0",
      name: "cbr0",
      nodeInterfaces: ["nowhere0"],
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }] },
    });
    const resolved = resolveMappings(conf.portMappings, conf.policy, undefined, NODE, "default/web", new Set([4]));
    const line = formatCall({
      time: new Date("2026-01-02T03:04:05.678Z"),
      command: "ADD",
      pod: "default/web",
      containerId: "abc123",
      mappings: conf.portMappings,
      resolved,
      error: undefined,
      durationMs: 30,
    });
    expect(JSON.parse(line).mappings).toEqual([
      {
        hostPort: 8080,
        protocol: "tcp",
        source: "node",
        hostIPs: ["127.0.0.1"],
        closed: `defaultHostIP "node" found no node address of the pod's families (IPv4)`,
      },
    ]);
  });
});
