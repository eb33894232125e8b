// The UDP conntrack step: which flows go after a pod's UDP rules changed, on what real conntrack and the kernel
// printed, and the step without the tool.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  dropStaleUdp,
  linesToPorts,
  parseConntrack,
  procConntrack,
  procSource,
  staleEntries,
  udpChanges,
} from "../../../src/pipeline/conntrack.js";
import { chainOf, fixture, rules as read, rules } from "../fixtures.js";

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

describe("stale UDP conntrack entries", () => {
  const entries = parseConntrack(fixture("ops/conntrack-v4.txt"));
  const unscoped = chainOf("reference-v4");
  const scopedTo = (ip: string) =>
    unscoped.map((r) => (r.includes("udp") ? r.replace(/^(-A \S+( -s \S+)?)/, `$1 -d ${ip}/32`) : r));

  it("reads conntrack's listing: original tuple and where replies come from", () => {
    expect(entries).toEqual([
      { src: "192.0.2.10", dst: "192.0.2.10", sport: 40000, dport: 5353, replyTarget: "10.244.1.5:53" },
      { src: "192.0.2.10", dst: "192.0.2.11", sport: 40000, dport: 5353, replyTarget: "192.0.2.11:5353" },
    ]);
    expect(parseConntrack(fixture("ops/conntrack-v6.txt"))[0]?.replyTarget).toBe("[2001:db8:244:1::5]:53");
  });

  it("reads the kernel's /proc/net/nf_conntrack as the tool lists it, per family", () => {
    const proc = fixture("ops/nf_conntrack.txt");
    const sorted = (e: ReturnType<typeof parseConntrack>) =>
      [...e].sort((a, b) => `${a.dst}:${a.dport}`.localeCompare(`${b.dst}:${b.dport}`));
    // Every UDP flow of the family; the tool's fixtures hold those of port 5353.
    expect(sorted(parseConntrack(procConntrack(proc, 4)).filter((e) => e.dport === 5353))).toEqual(sorted(entries));
    expect(parseConntrack(procConntrack(proc, 4))).toHaveLength(3);
    expect(parseConntrack(procConntrack(proc, 6))).toEqual(parseConntrack(fixture("ops/conntrack-v6.txt")));
  });

  it("parses only the lines of flows to the ports asked for (not 53 for 5353, nor 5354)", () => {
    const proc = fixture("ops/nf_conntrack.txt");
    expect(parseConntrack(procConntrack(linesToPorts(proc, [5353]), 4))).toEqual(
      parseConntrack(procConntrack(proc, 4)).filter((e) => e.dport === 5353),
    );
    expect(linesToPorts(proc, [53])).toBe("");
    expect(linesToPorts(proc, [5353, 5354]).split("\n")).toHaveLength(4);
  });

  it("reads the kernel's table once for every family that asks, and not when it holds too many flows", () => {
    const dir = mkdtempSync(join(tmpdir(), "pmh-ct-"));
    try {
      const [table, count] = [join(dir, "nf_conntrack"), join(dir, "count")];
      writeFileSync(table, fixture("ops/nf_conntrack.txt"));
      writeFileSync(count, "4\n");
      const source = procSource(table, count);
      const first = source();
      writeFileSync(table, "");
      expect([first, source()]).toEqual([fixture("ops/nf_conntrack.txt"), fixture("ops/nf_conntrack.txt")]);
      writeFileSync(count, "5001\n");
      expect(procSource(table, count)()).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("only UDP ports whose rules changed are looked at", () => {
    expect(udpChanges(read(unscoped), read(unscoped))).toEqual([]);
    expect(udpChanges(read(unscoped), read(scopedTo("192.0.2.11"))).map((c) => c.hostPort)).toEqual([5353]);
  });

  it("drops the flow the old rule sent to the pod from an address no longer mapped, and the one a now-mapped address sent elsewhere", () => {
    const [change] = udpChanges(read(unscoped), read(scopedTo("192.0.2.11")));
    expect(staleEntries(entries, change!).map((e) => e.dst)).toEqual(["192.0.2.10", "192.0.2.11"]);
  });

  it("keeps flows that already go where the rules say", () => {
    const [change] = udpChanges(read(unscoped), read(scopedTo("192.0.2.10")));
    expect(staleEntries(entries, change!)).toEqual([]);
  });

  it("after a pod re-creation (new pod IP), drops the flows to the old pod", () => {
    const [change] = udpChanges([], read(unscoped.map((r) => r.replace("10.244.1.5:53", "10.244.1.9:53"))));
    expect(staleEntries(entries, change!).map((e) => e.dst)).toEqual(["192.0.2.10", "192.0.2.11"]);
  });
});

describe("the UDP conntrack step", () => {
  it("says on stderr, without failing, that the conntrack tool is missing", async () => {
    vi.stubEnv("PATH", "/nonexistent");
    const warnings: string[] = [];
    const unscoped = chainOf("reference-v4");
    const scoped = unscoped.map((r) =>
      r.includes("udp") ? r.replace(/^(-A \S+( -s \S+)?)/, "$1 -d 192.0.2.10/32") : r,
    );
    // Without /proc/net/nf_conntrack the tool lists the flows: the missing tool is what is reported.
    const noProc = procSource("/nonexistent", "/nonexistent");
    expect(
      await dropStaleUdp(4, [{ before: rules(unscoped), after: rules(scoped) }], (t) => warnings.push(t), noProc),
    ).toBe(0);
    expect(warnings).toEqual([
      expect.stringMatching(
        /^conntrack not usable \(.*ENOENT.*\): stale UDP conntrack entries of hostPort 5353 are not removed$/,
      ),
    ]);
  });

  it("runs nothing when no UDP rule changed", async () => {
    vi.stubEnv("PATH", "/nonexistent");
    const warnings: string[] = [];
    expect(
      await dropStaleUdp(4, [{ before: rules(chainOf("reference-v4")), after: rules(chainOf("reference-v4")) }], (t) =>
        warnings.push(t),
      ),
    ).toBe(0);
    expect(warnings).toEqual([]);
  });
});
