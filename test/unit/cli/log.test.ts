// The keeper's log: its lines as they are (text), or one JSON object a line; information on stdout, the rest on
// stderr, in both; the installer's lines as objects of their own.
import { describe, expect, it } from "vitest";
import { keeperLog, linesTo } from "../../../src/cli/log.js";

function capture(format: "text" | "json") {
  const out: string[] = [];
  const err: string[] = [];
  const log = keeperLog(
    format,
    (t) => void out.push(t),
    (t) => void err.push(t),
    () => new Date("2026-12-06T10:00:01.204Z"),
  );
  return { log, out, err };
}

const LINE = "keeper (rules changed): IPv4: default/web (cbr0, 3f2a): rewrote (3 rules) CNI-DN-97432852e321b0caf4228";
const FIELDS = {
  event: "repaired",
  trigger: "firewall",
  family: 4,
  pod: "default/web",
  chain: "CNI-DN-97432852e321b0caf4228",
  cause: "chain_rebuilt",
} as const;

describe("the keeper's log", () => {
  it("as text: the line alone", () => {
    const t = capture("text");
    t.log("info", LINE, FIELDS);
    t.log("error", "keeper (resync): IPv4: write failed: x", { event: "write-failed" });
    expect([t.out, t.err]).toEqual([[`${LINE}\n`], ["keeper (resync): IPv4: write failed: x\n"]]);
  });

  it("as JSON: time, level, the fields, the line as message; one object a line", () => {
    const t = capture("json");
    t.log("info", LINE, FIELDS);
    t.log("warning", 'keeper: a "quoted"\nproblem', { event: "problem" });
    expect(t.out.map((l) => JSON.parse(l))).toEqual([
      { time: "2026-12-06T10:00:01.204Z", level: "info", ...FIELDS, message: LINE },
    ]);
    expect(t.err).toHaveLength(1);
    expect(t.err[0]?.split("\n")).toHaveLength(2);
    expect(JSON.parse(t.err[0]!)).toMatchObject({
      level: "warning",
      event: "problem",
      message: 'keeper: a "quoted"\nproblem',
    });
  });

  it("takes the installer's lines, each an object", () => {
    const t = capture("json");
    linesTo(
      t.log,
      "info",
      "installer",
    )("watching /etc/cni/net.d\n/etc/cni/net.d/10-flannel.conflist: added the entry after portmap\n");
    expect(t.out.map((l) => JSON.parse(l).message)).toEqual([
      "watching /etc/cni/net.d",
      "/etc/cni/net.d/10-flannel.conflist: added the entry after portmap",
    ]);
  });
});
