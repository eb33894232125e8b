// What an operator sees when running the binary by hand (no CNI_COMMAND).
import { afterEach, describe, expect, it, vi } from "vitest";
import { runCli } from "../../../src/cli/main.js";

function capture(): { stdout: () => string; stderr: () => string } {
  const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
  const text = (spy: typeof out): string => spy.mock.calls.map(([chunk]) => String(chunk)).join("");
  return { stdout: () => text(out), stderr: () => text(err) };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("portmap-hostip on a terminal", () => {
  it("--version names the program, its version, the commit it was built from and its runtime", async () => {
    const io = capture();
    expect(await runCli(["--version"])).toBe(0);
    // Unbundled, no build injected the commit.
    expect(io.stdout()).toMatch(
      new RegExp(`^portmap-hostip \\S+ \\(commit unknown, node ${process.version.replaceAll(".", "\\.")}\\)\n$`),
    );
  });

  it("--help says what it is and how to install it", async () => {
    const io = capture();
    expect(await runCli(["--help"])).toBe(0);
    expect(io.stdout()).toContain("runs after portmap");
    expect(io.stdout()).toContain("portmap-hostip install [options]");
  });

  it("install --help lists the installer's flags", async () => {
    const io = capture();
    expect(await runCli(["install", "--help"])).toBe(0);
    for (const flag of [
      "--cni-bin-dir",
      "--cni-conf-dir",
      "--default-host-ip",
      "--node-interfaces",
      "--watch",
      "--uninstall",
      "--dry-run",
    ]) {
      expect(io.stdout()).toContain(flag);
    }
  });

  it("refuses an unknown subcommand with usage exit code 2", async () => {
    const io = capture();
    expect(await runCli(["frobnicate"])).toBe(2);
    expect(io.stderr()).toContain('unknown subcommand "frobnicate"; try --help');
  });
});

describe("portmap-hostip status | reconcile | gc", () => {
  it("are listed in --help", async () => {
    const write = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    expect(await runCli(["--help"])).toBe(0);
    const help = write.mock.calls.map(([c]) => String(c)).join("");
    for (const line of ["portmap-hostip status [--json]", "portmap-hostip reconcile", "portmap-hostip gc [--dry-run]"])
      expect(help).toContain(line);
  });
});
