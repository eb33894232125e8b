// The keeper's parts that need no kernel: the verdict on each container (cache, unreadable files, records),
// libcni 1.1.0 cache entries, the records and the lock under the state directory, the heartbeat probe, the
// iptables variant choice (on what iptables-nft-save and iptables-legacy-save printed), the flags.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyOutcome } from "../../src/backends/backend.js";
import { planDead, planReconcile, type Wanted } from "../../src/backends/iptables-plan.js";
import { deadNow } from "../../src/backends/nftables-node.js";
import { parseInstallArgs, runInstall } from "../../src/cli/install.js";
import { checkKeeper, NAT_EVENT } from "../../src/cli/keeper.js";
import {
  type CachedAttachment,
  type CacheRead,
  ownedByUnreadable,
  parseCacheFile,
  readResultCache,
} from "../../src/host/cache.js";
import { ADD_RECORD_TTL_MS, judge } from "../../src/host/liveness.js";
import { type ContainerRecord, noteReadsFirst, readsFirst, writeRecord } from "../../src/host/record.js";
import { awaitKeeperLock, readRecords, withKeeperLock } from "../../src/host/state.js";
import { parseTable } from "../../src/iptables/table.js";
import { formatRule } from "../../src/iptables/text.js";
import { chooseVariant } from "../../src/iptables/variant.js";
import { parseChainJson } from "../../src/nftables/json.js";
import { DEAD_CONFIRM_MS, deadChainGoes } from "../../src/ops/pass.js";
import { changeLines } from "../../src/ops/report.js";
import { expectedChains, livePorts, portmapBackendOf } from "../../src/pipeline/attachment.js";
import { cacheEntryJson } from "../support/result-cache.js";
import { CHAIN, fixture, NODE } from "./fixtures.js";

const ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RESULT = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "eth0" }],
  ips: [{ address: "10.244.1.5/24", interface: 0 }],
};
const entry = (list: Record<string, unknown> & { name: string }, id = ID) =>
  cacheEntryJson({ list, containerID: id, ifName: "eth0", result: RESULT });

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "pmh-keeper-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("libcni's cache entries", () => {
  it("reads a conflist of spec 1.1.0 that gives cniVersions instead of cniVersion (the highest we speak)", () => {
    const a = parseCacheFile(
      entry({ name: "cbr0", cniVersions: ["0.4.0", "1.1.0", "9.9.9"], plugins: [{ type: "portmap" }] }),
      "f",
      0,
    );
    expect(a.cniVersion).toBe("1.1.0");
    expect(() => parseCacheFile(entry({ name: "cbr0", cniVersions: ["9.9.9"], plugins: [] }), "f", 0)).toThrow(
      /no cniVersion and no supported cniVersions/,
    );
  });

  it("keeps an unreadable file as a container nobody can judge: reported, never 'no attachment'", async () => {
    const results = join(dir, "results");
    await mkdir(results);
    await writeFile(join(results, `cbr0-${ID}-eth0`), "{ not json");
    await writeFile(
      join(results, `cbr0-other-eth0`),
      entry({ name: "cbr0", cniVersion: "1.0.0", plugins: [] }, "other"),
    );
    const cache = await readResultCache(dir);
    expect(cache.attachments.map((a) => a.containerId)).toEqual(["other"]);
    expect(cache.problems).toEqual([
      expect.stringMatching(/unreadable cache file .*not JSON.*its container's chains are kept/),
    ]);
    expect(ownedByUnreadable(cache, "cbr0", ID)).toBe(true);
    expect(ownedByUnreadable(cache, "cbr0", "0123")).toBe(false);
    const verdict = judge({ cache, records: new Map(), now: 0 });
    expect([verdict("cbr0", ID), verdict("cbr0", "other"), verdict("cbr0", "gone")]).toEqual([
      "unknown",
      "live",
      "dead",
    ]);
  });
});

describe("the verdict on a container", () => {
  const cache = (ids: string[]): CacheRead => ({
    dir,
    present: true,
    attachments: ids.map((id) => parseCacheFile(entry({ name: "cbr0", cniVersion: "1.0.0", plugins: [] }, id), id, 0)),
    unreadable: [],
    problems: [],
  });
  const rec = (id: string, state: "added" | "deleted", at: number) =>
    [`cbr0\n${id}`, { network: "cbr0", containerId: id, state, at }] as const;

  it("live when cached; deleting once its DEL started (even while still cached); adding while its ADD may run", () => {
    const now = 10 * ADD_RECORD_TTL_MS;
    const verdict = judge({
      cache: cache(["live", "going"]),
      records: new Map([
        rec("going", "deleted", now),
        rec("starting", "added", now - 1000),
        rec("stale", "added", now - ADD_RECORD_TTL_MS - 1),
      ]),
      now,
    });
    expect(["live", "going", "starting", "stale", "never"].map((id) => verdict("cbr0", id))).toEqual([
      "live",
      "deleting",
      "adding",
      "dead",
      "dead",
    ]);
    expect(verdict("other-net", "live")).toBe("dead");
  });
});

describe("records and the keeper lock", () => {
  it("records ADD and DEL per network and container (any network name)", async () => {
    // True for the container's first record: its first ADD.
    expect(writeRecord(dir, "a/b net", "c1", "added")).toBe(true);
    expect(writeRecord(dir, "cbr0", "c1", "added")).toBe(true);
    expect(writeRecord(dir, "cbr0", "c1", "deleted")).toBe(false);
    const { records, problems } = await readRecords(dir);
    expect(problems).toEqual([]);
    expect([...records.values()].map((r) => [r.network, r.containerId, r.state]).sort()).toEqual([
      ["a/b net", "c1", "added"],
      ["cbr0", "c1", "deleted"],
    ]);
    expect((await readRecords(join(dir, "none"))).records.size).toBe(0);
  });

  it("keeps, per network, whether a first ADD reads before it writes (any network name)", () => {
    expect(readsFirst(dir, "a/b net")).toBe(false);
    noteReadsFirst(dir, "a/b net", true);
    expect([readsFirst(dir, "a/b net"), readsFirst(dir, "cbr0")]).toEqual([true, false]);
    noteReadsFirst(dir, "a/b net", false);
    expect(readsFirst(dir, "a/b net")).toBe(false);
  });

  it("makes a DEL wait for the pass that holds the lock, and no longer than its bound", async () => {
    const order: string[] = [];
    let release!: () => void;
    const held = withKeeperLock(dir, 1000, async () => {
      order.push("pass starts");
      await new Promise<void>((r) => (release = r));
      order.push("pass ends");
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(await awaitKeeperLock(dir, 100)).toBe(false);
    const waiting = awaitKeeperLock(dir, 5000).then((free) => order.push(`DEL goes on (${free})`));
    await new Promise((r) => setTimeout(r, 50));
    release();
    await Promise.all([held, waiting]);
    expect(order).toEqual(["pass starts", "pass ends", "DEL goes on (true)"]);
  });

  it("takes over a lock whose holder died (its lease ran out), and refuses one that is held", async () => {
    await writeFile(join(dir, "keeper.lock"), JSON.stringify({ pid: 1, until: Date.now() - 1 }));
    expect(await withKeeperLock(dir, 100, async () => "ran")).toBe("ran");
    await writeFile(join(dir, "keeper.lock"), JSON.stringify({ pid: 1, until: Date.now() + 60_000 }));
    await expect(withKeeperLock(dir, 100, async () => "ran")).rejects.toThrow(/held by process 1/);
  });
});

describe("install --check (the exec probe)", () => {
  it("passes while the keeper completes passes, fails when it stopped or never ran", async () => {
    await expect(checkKeeper(dir)).rejects.toThrow(/no keeper heartbeat/);
    await writeFile(join(dir, "keeper.alive"), JSON.stringify({ at: 1_000_000, resyncMs: 10_000 }));
    expect(await checkKeeper(dir, 1_005_000)).toBe("keeper: last complete pass 5 s ago");
    await expect(checkKeeper(dir, 1_000_000 + 61_000)).rejects.toThrow(/last complete pass was 61 s ago/);
  });

  it("checks the binary and the entry in the conflist", async () => {
    const out: string[] = [];
    const conf = join(dir, "net.d");
    const bin = join(dir, "bin");
    await mkdir(conf);
    await mkdir(bin);
    await writeFile(
      join(conf, "10.conflist"),
      JSON.stringify({ name: "n", cniVersion: "1.0.0", plugins: [{ type: "portmap" }] }),
    );
    const check = () =>
      runInstall(["--check", "--cni-conf-dir", conf, "--cni-bin-dir", bin], {
        stdout: (t) => void out.push(t),
        stderr: (t) => void out.push(t),
      });
    expect(await check()).toBe(1);
    await writeFile(join(bin, "portmap-hostip"), "", { mode: 0o755 });
    expect(await check()).toBe(1);
    expect(out.at(-1)).toMatch(/has no portmap-hostip entry/);
    await writeFile(
      join(conf, "10.conflist"),
      JSON.stringify({ name: "n", cniVersion: "1.0.0", plugins: [{ type: "portmap" }, { type: "portmap-hostip" }] }),
    );
    expect(await check()).toBe(0);
    expect(await readFile(join(conf, "10.conflist"), "utf8")).toContain("portmap-hostip");
  });
});

describe("the keeper's flags", () => {
  it("--check excludes the other modes; keeper flags need --cache-dir and valid values", async () => {
    expect(parseInstallArgs(["--check"]).mode).toBe("check");
    expect(() => parseInstallArgs(["--check", "--watch"])).toThrow(/--check excludes/);
    for (const [args, message] of [
      [["--watch", "--resync", "5"], /--resync needs --cache-dir/],
      [["--watch", "--cache-dir", "/c", "--resync", "0"], /--resync: invalid value "0"/],
      [["--watch", "--cache-dir", "/c", "--state-dir", "run"], /--state-dir: invalid value "run"/],
      [["--watch", "--cache-dir", "/c", "--iptables", "xt"], /--iptables: invalid value "xt"/],
    ] as const) {
      const err: string[] = [];
      expect(await runInstall([...args], { stdout: () => {}, stderr: (t) => void err.push(t) })).toBe(2);
      expect(err.join("")).toMatch(message);
    }
  });

  it("--state-dir goes into the entry as stateDir: the plugin records where the keeper reads", () => {
    const args = ["--watch", "--cache-dir", "/var/lib/cni", "--state-dir", "/run/elsewhere"];
    expect(parseInstallArgs(args).settings).toEqual({ stateDir: "/run/elsewhere" });
    // The default is the plugin's too: the entry stays as the init container (no keeper flags) writes it.
    expect(parseInstallArgs([...args.slice(0, 4), "/run/portmap-hostip"]).settings).toEqual({});
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

describe("the iptables variant (as kube-proxy's image picks it)", () => {
  const v = (name: string) => ({
    mangle: fixture(`host/iptables-variant/${name}-mangle.save`),
    all: fixture(`host/iptables-variant/${name}-all.save`),
  });
  it("follows kubelet's KUBE-IPTABLES-HINT chain", () => {
    expect(chooseVariant({ legacy: v("legacy-hint"), nft: v("nft-rules") })).toEqual({
      variant: "legacy",
      why: "kubelet's KUBE-IPTABLES-HINT chain is in legacy's mangle table",
    });
  });
  it("else the variant with more rules, nft on a tie", () => {
    const legacy = v("legacy-hint");
    const noHint = { mangle: "", all: legacy.all.replace(/^:KUBE-IPTABLES-HINT .*\n/m, "") };
    expect(chooseVariant({ legacy: noHint, nft: v("nft-rules") }).variant).toBe("nft");
    expect(chooseVariant({ legacy: noHint, nft: v("nft-empty") })).toEqual({
      variant: "legacy",
      why: "1 legacy rules against 0 nft rules",
    });
    expect(chooseVariant({ legacy: { mangle: "", all: "" }, nft: v("nft-empty") }).variant).toBe("nft");
  });
});

describe("a pass's plan on a recorded table (portmap's chain for container abc123, hostPorts 8080, 8443, 5353)", () => {
  // iptables-save → the `iptables -S` form parseTable reads.
  const table = parseTable(
    fixture("iptables/reference-v4.save")
      .split("\n")
      .map((l) => (l.startsWith(":") ? `-N ${l.slice(1).split(" ")[0]}` : l))
      .join("\n"),
  );
  const pod = (id: string, hostPort: number, portmap: Record<string, unknown> = {}) =>
    parseCacheFile(
      cacheEntryJson({
        list: {
          name: "cbr0",
          cniVersion: "1.0.0",
          plugins: [
            { type: "portmap", capabilities: { portMappings: true }, ...portmap },
            { type: "portmap-hostip", capabilities: { portMappings: true } },
          ],
        },
        containerID: id,
        ifName: "eth0",
        capabilityArgs: { portMappings: [{ HostPort: hostPort, ContainerPort: 80, Protocol: "tcp", HostIP: "" }] },
        result: {
          cniVersion: "1.0.0",
          interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
          ips: [{ address: "10.244.1.9/24", interface: 0 }],
        },
      }),
      id,
      0,
    );
  const wantedOf = (id: string, hostPort: number): Wanted[] => {
    const wanted = expectedChains(pod(id, hostPort), NODE)
      .filter((e) => e.family === 4)
      .map((expected) => ({ label: id, key: id, expected }));
    expect(wanted).toHaveLength(1);
    return wanted;
  };
  const dead = () => "dead" as const;

  it("deletes at once a dead chain that takes a live pod's port, with its jumps", () => {
    const asked: Array<[string, boolean]> = [];
    const plan = planDead(
      table,
      4,
      wantedOf("def456", 8080),
      livePorts([pod("def456", 8080)], () => true),
      dead,
      (_f, chain, conflicting) => {
        asked.push([chain, conflicting]);
        return conflicting;
      },
      new Set(["cbr0"]),
    );
    expect(asked).toEqual([[CHAIN, true]]);
    expect(plan.lines).toEqual([
      ...table.rules.get("CNI-HOSTPORT-DNAT")!.map((r) => formatRule(r, "-D")),
      `-F ${CHAIN}`,
      `-X ${CHAIN}`,
    ]);
    expect(changeLines({ ...emptyOutcome("iptables", 4), removed: plan.removed, leftAlone: plan.leftAlone })).toEqual([
      `deleted dead ${CHAIN} (network cbr0, container abc123) and 2 jump(s)`,
    ]);
  });

  it("leaves a dead chain that takes no live pod's port to the grace, and never judges an ADD under way or another network", () => {
    const asked: Array<[string, boolean]> = [];
    const later = planDead(
      table,
      4,
      wantedOf("def456", 9090),
      livePorts([pod("def456", 9090)], () => true),
      dead,
      (_f, chain, conflicting) => {
        asked.push([chain, conflicting]);
        return false;
      },
      new Set(["cbr0"]),
    );
    expect([asked, later.lines, later.undecided]).toEqual([[[CHAIN, false]], [], 1]);
    const never = () => {
      throw new Error("asked");
    };
    expect(planDead(table, 4, [], new Set(), () => "adding", never, new Set(["cbr0"])).lines).toEqual([]);
    expect(planDead(table, 4, [], new Set(), dead, never, new Set(["other"])).lines).toEqual([]);
  });

  it("judges the chain of a container whose DEL is recorded also in a network the cache names no more", () => {
    const plan = planDead(
      table,
      4,
      [],
      new Set(["tcp/8080"]),
      () => "deleting",
      (_f, _chain, c, d) => c && d,
      new Set(),
    );
    expect([plan.lines.includes(`-X ${CHAIN}`), plan.undecided]).toEqual([true, 1]);
  });

  it("counts the port of a live pod of portmap's nftables backend, not only this backend's: the dead chain goes at once", () => {
    const live = [pod("def456", 8080, { backend: "nftables" }), pod("ghi789", 9090)];
    expect([...livePorts(live, (a) => a.containerId === "def456")]).toEqual(["tcp/8080"]);
    const asked: boolean[] = [];
    const plan = planDead(
      table,
      4,
      [],
      livePorts(live, () => true),
      dead,
      (_f, _chain, conflicting) => {
        asked.push(conflicting);
        return conflicting;
      },
      new Set(["cbr0"]),
    );
    expect(asked).toEqual([true]);
    expect(plan.lines).toContain(`-X ${CHAIN}`);
  });

  it("decides when a dead chain goes: conflicting and deleted at once, conflicting after a second look, others after the grace", () => {
    const goes = (conflicting: boolean, deleted: boolean, age: number) =>
      deadChainGoes({ conflicting, deleted, age, graceMs: 30_000 });
    expect([
      goes(true, true, 0),
      goes(true, false, 0),
      goes(true, false, DEAD_CONFIRM_MS),
      goes(false, true, 29_999),
      goes(false, false, 30_000),
    ]).toEqual([true, false, true, false, true]);
  });

  it("lets a chain that needs a rebuild wait when the pass may not rebuild it yet", () => {
    const plan = planReconcile(table, 4, wantedOf("def456", 9090), () => false);
    expect(plan.waiting).toEqual(["def456"]);
    expect(plan.commands).toEqual([]);
  });

  describe("portmap's nftables rules (recorded: container abc123 on 8080, 8443, 5353)", () => {
    const chains = [4, 6].map((family) => ({
      family: family as 4 | 6,
      chain: "hostports",
      rules: parseChainJson(fixture(`nftables/reference-v${family}.json`)),
    }));
    const view = (attachments: CachedAttachment[], records: ContainerRecord[] = []) => ({
      cache: { dir: "/c", present: true, attachments, unreadable: [], problems: [] },
      records: new Map(records.map((r) => [`${r.network}\n${r.containerId}`, r])),
      network: NODE,
      now: 100_000,
    });
    const judged = (v: ReturnType<typeof view>, goes: (conflicting: boolean, deleted: boolean) => boolean) => {
      const asked: Array<[number, string, boolean, boolean]> = [];
      const result = deadNow(chains, {
        view: v,
        verdict: judge(v),
        collectNow: (family, chain, conflicting, deleted) => {
          asked.push([family, chain, conflicting, deleted]);
          return goes(conflicting, deleted);
        },
      });
      return { ...result, asked };
    };

    it("a container no attachment of any network has is dead; it takes a live pod's port (either family's rules asked)", () => {
      const { goes, dead, asked } = judged(
        view([pod("def456", 8443)], [{ network: "cbr0", containerId: "abc123", state: "deleted", at: 0 }]),
        (conflicting, deleted) => conflicting && deleted,
      );
      expect(asked).toEqual([
        [4, "cni_hostport abc123", true, true],
        [6, "cni_hostport abc123", true, true],
      ]);
      expect([[...goes], dead]).toEqual([["abc123"], 1]);
    });

    it("a rule on no live pod's port waits; a container cached on any network, or whose ADD may run, is not dead", () => {
      expect(judged(view([pod("def456", 9090)]), (c) => c).goes.size).toBe(0);
      const other = { ...pod("abc123", 9090), network: "other" };
      expect(judged(view([other]), () => true)).toEqual({ goes: new Set(), dead: 0, asked: [] });
      const adding = { network: "cbr0", containerId: "abc123", state: "added" as const, at: 99_000 };
      expect(judged(view([], [adding]), () => true).dead).toBe(0);
    });
  });

  it("gives each backend the attachments whose portmap used it", () => {
    expect(portmapBackendOf(pod("a", 1))).toBe("iptables");
    expect(portmapBackendOf(pod("a", 1, { backend: "iptables" }))).toBe("iptables");
    expect(portmapBackendOf(pod("a", 1, { backend: "nftables" }))).toBe("nftables");
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
      `keeper: no result cache at ${join(dir, "no-cache", "results")} (yet): nothing to rebuild from\n`,
    );
    expect(log).toContain("stopped\n");
  });
});
