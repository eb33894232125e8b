// What the command lines share: strict flags, and how a command ends (usage: 2; anything else: 1).
import { describe, expect, it } from "vitest";
import { parseFlags, runCommand, UsageError } from "../../../src/cli/args.js";
import { CniError, Code } from "../../../src/core/errors.js";
import { fixture } from "../fixtures.js";

const FLAGS = { network: { type: "string", multiple: true }, "dry-run": { type: "boolean" } } as const;

function io() {
  let out = "";
  let err = "";
  return {
    ctx: { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t) },
    out: () => out,
    err: () => err,
  };
}

describe("flags", () => {
  it("reads known flags, repeated ones as lists", () => {
    expect(parseFlags(["--network", "a", "--network=b", "--dry-run"], FLAGS)).toEqual({
      network: ["a", "b"],
      "dry-run": true,
    });
  });

  it("refuses unknown flags, positionals and missing values as usage errors", () => {
    for (const args of [["--bogus"], ["status"], ["--network"]])
      expect(() => parseFlags(args, FLAGS)).toThrow(UsageError);
  });
});

describe("a command", () => {
  it("gives its body's exit code and output", async () => {
    const o = io();
    const body = async (out: (t: string) => void) => {
      out("done\n");
      return 0;
    };
    expect(await runCommand("x", "usage\n", o.ctx, body)).toBe(0);
    expect([o.out(), o.err()]).toEqual(["done\n", ""]);
  });

  it("ends a usage error with 2, its name, the message and the usage", async () => {
    const o = io();
    expect(
      await runCommand(
        "portmap-hostip gc",
        "Usage: portmap-hostip gc\n",
        o.ctx,
        async () => parseFlags(["--bogus"], FLAGS) && 0,
      ),
    ).toBe(2);
    expect(o.err()).toMatch(/^portmap-hostip gc: .*'--bogus'.*\nUsage: portmap-hostip gc\n$/);
  });

  it("ends any other error with 1, its message and a CNI error's details", async () => {
    const o = io();
    const failing = async () => {
      throw new CniError(
        Code.IoFailure,
        "iptables -t nat -S failed (exit 4)",
        fixture("iptables/not-root-nft.stderr").trim(),
      );
    };
    expect(await runCommand("portmap-hostip status", "", o.ctx, failing)).toBe(1);
    expect(o.err()).toBe(
      `portmap-hostip status: iptables -t nat -S failed (exit 4)
${fixture("iptables/not-root-nft.stderr")}`,
    );
  });
});
