// The node's keeper (install --watch --cache-dir): its probe, which nft monitor events start a pass, a run on a
// node where no pod has started yet, and its log lines as the docs show them.
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runInstall } from "../../../src/cli/install.js";
import { checkKeeper, NAT_EVENT } from "../../../src/cli/keeper.js";
import { fixture } from "../fixtures.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("install --check (the exec probe)", () => {
  it("passes while the keeper completes passes, fails when it stopped or never ran", async () => {
    await expect(checkKeeper(dir)).rejects.toThrow(/no keeper heartbeat/);
    await writeFile(join(dir, "keeper.alive"), JSON.stringify({ at: 1_000_000, resyncMs: 10_000 }));
    expect(await checkKeeper(dir, 1_005_000)).toBe("keeper: last complete pass 5 s ago");
    await expect(checkKeeper(dir, 1_000_000 + 61_000)).rejects.toThrow(/last complete pass was 61 s ago/);
  });
});

describe("which nft monitor events start a pass", () => {
  // Recorded: iptables-nft creating portmap's chains and a kube-proxy-like chain, a kube-proxy restore
  // (--noflush), `iptables -t nat -F`, `-X`, and a restore of the saved table.
  const lines = fixture("host/nft-monitor-ruleset.txt").trim().split("\n");
  it("portmap's chains, the built-in chains with its jumps and the table as a whole; not kube-proxy's chains", () => {
    const kube = lines.filter((l) => /ip nat KUBE-/.test(l));
    expect(kube.length).toBeGreaterThan(5);
    expect(kube.filter((l) => NAT_EVENT.test(l))).toEqual([]);
    expect(lines.filter((l) => / ip nat CNI-/.test(l)).every((l) => NAT_EVENT.test(l))).toBe(true);
    for (const l of [
      "delete rule ip nat CNI-DN-abc handle 5",
      "delete table ip nat",
      "add table ip nat",
      "add rule ip nat PREROUTING fib daddr type local counter packets 0 bytes 0 jump CNI-HOSTPORT-DNAT",
    ]) {
      expect(lines).toContain(l);
      expect(NAT_EVENT.test(l), l).toBe(true);
    }
  });

  // Recorded (host/record-nft-monitor-portmap.sh): portmap v1.9.1's nftables backend adding a pod, `nft flush
  // chain ip cni_hostport hostports`, its DEL and ADD, `nft delete table ip cni_hostport` and `ip6`.
  const portmap = fixture("host/nft-monitor-portmap-nftables.txt").trim().split("\n");
  it("every event of portmap's nftables tables: its rules, a flushed chain, a deleted table", () => {
    for (const l of [
      'add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.244.1.5:80 comment "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"',
      "delete rule ip cni_hostport hostports handle 11",
      "delete rule ip6 cni_hostport masquerading handle 13",
      "delete chain ip cni_hostport hostports",
      "delete table ip cni_hostport",
      "delete table ip6 cni_hostport",
    ])
      expect(portmap).toContain(l);
    expect(portmap.filter((l) => !NAT_EVENT.test(l))).toEqual([]);
  });
});

describe("install --watch --cache-dir on a node where no pod has started yet", () => {
  it("keeps the entry, completes passes (the probe passes) and ends with 0 on the signal", async () => {
    const conf = join(dir, "net.d");
    const bin = join(dir, "bin");
    const state = join(dir, "state");
    await mkdir(conf);
    await mkdir(bin);
    await writeFile(
      join(conf, "10.conflist"),
      JSON.stringify({ name: "n", cniVersion: "1.0.0", plugins: [{ type: "portmap" }] }),
    );
    await writeFile(join(dir, "binary"), "");
    const controller = new AbortController();
    const out: string[] = [];
    const args = [
      "--watch",
      "--binary",
      join(dir, "binary"),
      "--cni-conf-dir",
      conf,
      "--cni-bin-dir",
      bin,
      "--cache-dir",
      join(dir, "no-cache"),
      "--state-dir",
      state,
    ];
    const running = runInstall(args, {
      signal: controller.signal,
      stdout: (t) => void out.push(t),
      stderr: (t) => void out.push(t),
    });
    const deadline = Date.now() + 10_000;
    while ((await checkKeeper(state).catch(() => undefined)) === undefined) {
      if (Date.now() > deadline) throw new Error(`no keeper pass within 10 s:\n${out.join("")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(
      await runInstall(
        [
          "--check",
          "--cni-conf-dir",
          conf,
          "--cni-bin-dir",
          bin,
          "--cache-dir",
          join(dir, "no-cache"),
          "--state-dir",
          state,
        ],
        { stdout: () => {}, stderr: () => {} },
      ),
    ).toBe(0);
    controller.abort();
    expect(await running).toBe(0);
    const log = out.join("");
    expect(log).toContain("added the entry after portmap");
    expect(log).toContain(
      `keeper: no result cache at ${join(dir, "no-cache", "results")} yet (--cache-dir): nothing to rebuild from\n`,
    );
    expect(log).toContain("stopped\n");
  });
});

const ROOT = join(import.meta.dirname, "../../..");
const read = (file: string) => readFileSync(join(ROOT, file), "utf8");

describe("the keeper's lines in the docs", () => {
  it("name only reasons the keeper gives its passes", () => {
    const source = ["src/cli/keeper.ts", "src/install/main.ts"].map(read).join("\n");
    const reasons = new Set([...source.matchAll(/(?:trigger|onEntry)\("([^"]+)"\)/g)].map((m) => m[1]));
    const docs = ["README.md", ...readdirSync(join(ROOT, "docs")).map((f) => `docs/${f}`)].map(read).join("\n");
    const shown = [...docs.matchAll(/^keeper \(([^)]+)\): /gm)].map((m) => m[1]);
    expect(shown.length).toBeGreaterThan(0);
    for (const reason of shown) expect(reasons, reason).toContain(reason);
  });
});
