// `npm run build:arm64` on a machine without `scripts/setup --arm64`: one line naming what is missing and the
// command that installs it, before any work, instead of an ENOENT stack trace halfway through.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const SCRIPTS = join(import.meta.dirname, "../../scripts");
// A plain-JS build script, so typed here by hand.
const { missingArm64Tools } = (await import(pathToFileURL(join(SCRIPTS, "build-sea.mjs")).href)) as {
  missingArm64Tools: (path: string, exists: (file: string) => boolean) => string[];
};
const ALL = [
  "/usr/bin/qemu-aarch64-static",
  "aarch64-linux-gnu-strip",
  "/lib/ld-linux-aarch64.so.1",
  "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
];

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pmh-build-arm64-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("build --arm64 without its tools", () => {
  it("names each missing tool", () => {
    expect(missingArm64Tools("", () => false)).toEqual(ALL);
    expect(missingArm64Tools("/opt/tools", () => true)).toEqual([]);
    for (const name of ALL) {
      // A command is looked up on the PATH given, a file where it must be.
      const present = ALL.filter((other) => other !== name).flatMap((other) => [other, join("/opt/tools", other)]);
      expect(
        missingArm64Tools("/opt/tools", (file) => present.includes(file)),
        name,
      ).toEqual([name]);
    }
  });

  it("stops before any work with one line and exit 1 when a tool is not on PATH", () => {
    // An empty PATH directory (this node is run by its path), and a working directory that must stay empty.
    const bin = join(dir, "bin");
    const cwd = join(dir, "work");
    for (const d of [bin, cwd]) mkdirSync(d);
    const r = spawnSync(process.execPath, [join(SCRIPTS, "build.mjs"), "--arm64"], {
      cwd,
      env: { PATH: bin },
      encoding: "utf8",
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /^build --arm64: missing [^\n]*aarch64-linux-gnu-strip[^\n]*; install with: sudo bash scripts\/setup --arm64\n$/,
    );
    expect(readdirSync(cwd)).toEqual([]);
  });
});
