// Hostile and broken input, end to end: the real plugin binary in the node namespace, behind logging
// stand-ins for iptables/ip6tables(-restore) that record every invocation and then run the real program.
// Each input must give a CNI error (JSON on stdout, the documented code, no crash trace), leave both nat
// tables exactly as they were, and never run iptables-restore. Valid inputs that normalise (mapped IPv6
// forms of a node IP) reach iptables only as validated addresses: every line the plugin writes is one of
// portmap's own rules with at most a `-d <address>/<len>` that the policy allows.
import { afterAll, beforeAll, expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import {
  bridgeConflist,
  containerdMapping,
  describeRun,
  dnChainName,
  type NatSnapshot,
  type NetConfList,
  NODE_IP1,
  NODE_IP2,
  natSave,
  PLUGIN_TYPE,
  podRuntime,
  type RuntimeConf,
  rulesIn,
  withoutPlugin,
} from "../support/harness.js";
import { type Case, cases, type Json, withAnnotation } from "../support/hostile-cases.js";
import {
  CRASH_TRACE,
  createStandins,
  type Invocation,
  invocations,
  type RawRun,
  replaceChain,
  runPluginRaw,
  type Standins,
} from "../support/standins.js";

/** Addresses as the plugin may write them after `-d`: validated, canonical, host length. */
const HOST_CIDR =
  /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\/32$|^[0-9a-f:]+\/128$/;

/**
 * The whole vocabulary of what the plugin may hand to iptables: fixed argv, and restore input made of the
 * chain's declaration and portmap's own rules (from `portmapRules`), each with at most one `-d` host address.
 */
function assertVocabulary(calls: readonly Invocation[], chain: string, portmapRules: ReadonlySet<string>): void {
  for (const call of calls) {
    const argv = call.argv.join(" ");
    if (call.program === "iptables" || call.program === "ip6tables") {
      expect(argv, call.program).toMatch(/^-w 5 -t nat -S (CNI-DN-[0-9a-f]{21}|POSTROUTING)$/);
      continue;
    }
    expect(call.program).toMatch(/^ip6?tables-restore$/);
    expect(argv).toMatch(/^-w 5 --noflush( --test)?$/);
    const lines = call.stdin.split("\n");
    expect(lines.at(-1)).toBe("");
    expect(lines[0]).toBe("*nat");
    expect(lines.at(-2)).toBe("COMMIT");
    if (lines.length === 3) continue; // STATUS' empty transaction
    expect(lines[1]).toBe(`:${chain} - [0:0]`);
    for (const line of lines.slice(2, -2)) {
      const m = / -d (\S+)/.exec(line);
      const bare = m ? line.replace(` -d ${m[1]}`, "") : line;
      if (m) expect(m[1], line).toMatch(HOST_CIDR);
      expect(line.match(/ -d /g)?.length ?? 0, line).toBeLessThanOrEqual(1);
      expect(portmapRules.has(bare), `${line}\n is not one of portmap's rules with a -d added`).toBe(true);
    }
  }
}

describeAsRoot("hostile and broken input", () => {
  const h = useHarness();
  let list: NetConfList;
  let rt: RuntimeConf;
  let base: Json;
  let baseEnv: Record<string, string>;
  let standins: Standins;
  let chain: string;
  let original: NatSnapshot;

  const snapshot = async (): Promise<NatSnapshot> => ({
    v4: await natSave(h.topo.node, 4),
    v6: await natSave(h.topo.node, 6),
  });

  beforeAll(async () => {
    list = bridgeConflist({ dataDir: h.topo.ipamDataDir, dualStack: true, hostip: { defaultHostIP: "node" } });
    // portmap alone, then we feed our plugin whatever we like on top of the chain it wrote.
    const started = await h.startPod("victim", withoutPlugin(list), {
      portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")],
    });
    expect(started.add.ok, describeRun(started.add)).toBe(true);
    rt = podRuntime(started.pod, { portMappings: [containerdMapping(8080, 80), containerdMapping(5353, 53, "udp")] });
    const ours = list.plugins.find((p) => p.type === PLUGIN_TYPE)!;
    base = h.cni.pluginStdin(list, ours, rt, started.add.result);
    standins = createStandins(h.topo.tmpDir);
    baseEnv = h.cni.pluginEnv("ADD", rt, standins.path);
    chain = dnChainName(list.name, rt.containerID);
    original = await snapshot();
    expect(rulesIn(original.v4, chain).length).toBe(6);
    expect(rulesIn(original.v6, chain).length).toBe(4);
  });

  afterAll(() => {
    // Across every hostile input, the listings that did run had fixed arguments only (each case checks
    // that iptables-restore did not run).
    assertVocabulary(
      invocations(standins).filter((c) => !c.program.endsWith("-restore")),
      chain,
      new Set(),
    );
  });

  async function runCase(c: Case, path = standins.path): Promise<RawRun> {
    const env: Record<string, string> = { ...baseEnv, PATH: path };
    for (const [k, v] of Object.entries(c.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const stdin = c.stdin ?? base;
    const input = typeof stdin === "function" ? stdin(structuredClone(base)) : stdin;
    return runPluginRaw(h.topo.node, {
      env,
      input: typeof input === "string" || Buffer.isBuffer(input) ? input : JSON.stringify(input),
    });
  }

  /** Puts portmap's chain back as it was (after a case that changed it, so that the next one starts clean). */
  async function resetChain(): Promise<void> {
    for (const family of [4, 6] as const)
      await replaceChain(h.topo.node, family, chain, rulesIn(family === 4 ? original.v4 : original.v6, chain));
  }

  it.each(cases)("$what → CNI error $code, no change, no iptables-restore", async (c) => {
    const before = invocations(standins).length;
    const r = await runCase(c);
    const calls = invocations(standins).slice(before);
    const after = await snapshot();
    if (JSON.stringify(after) !== JSON.stringify(original)) await resetChain();
    expect(r.signal, r.stderr).toBeNull();
    expect(r.code, `stdout: ${r.stdout.slice(0, 500)}\nstderr: ${r.stderr.slice(0, 500)}`).toBe(1);
    expect(r.stderr).not.toMatch(CRASH_TRACE);
    expect(r.output, r.stdout.slice(0, 500)).toMatchObject({ cniVersion: expect.any(String), msg: expect.any(String) });
    expect([c.code].flat(), r.stdout.slice(0, 500)).toContain(r.output!["code"]);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(
      calls.filter((i) => i.program.endsWith("-restore")),
      "iptables-restore must not run",
    ).toEqual([]);
    expect(after).toEqual(original);
  });

  it("a valid ADD writes only portmap's rules with validated -d addresses (mapped IPv6 forms normalised)", async () => {
    const portmapRules = new Set([...rulesIn(original.v4, chain), ...rulesIn(original.v6, chain)]);
    const audited = createStandins(h.topo.tmpDir);
    for (const annotation of [
      "::ffff:192.0.2.11",
      "::ffff:c000:20b",
      `8080=${NODE_IP1}, 5353/UDP = ::ffff:${NODE_IP2}`,
      "",
    ]) {
      const before = invocations(audited).length;
      const r = await runCase(
        { what: annotation, code: 0, stdin: (b) => (annotation === "" ? b : withAnnotation(b, annotation)) },
        audited.path,
      );
      const calls = invocations(audited).slice(before);
      expect(r.code, r.stdout).toBe(0);
      // Only the plugin's own notes (a mapping left without IPv6 host IPs), never a trace.
      expect(r.stderr.split("\n").filter((l) => l && !l.startsWith("portmap-hostip: "))).toEqual([]);
      expect(calls.filter((c) => c.program.endsWith("-restore")).length).toBeGreaterThan(0);
      assertVocabulary(calls, chain, portmapRules);
      const after = await snapshot();
      const v4 = rulesIn(after.v4, chain);
      const allowed =
        annotation === ""
          ? [NODE_IP1, NODE_IP2, "127.0.0.1"]
          : annotation.includes("8080=")
            ? [NODE_IP1, NODE_IP2]
            : [NODE_IP2];
      expect(v4.length).toBeGreaterThan(0);
      for (const rule of v4) expect(allowed.map((ip) => `${ip}/32`)).toContain(/ -d (\S+)/.exec(rule)?.[1]);
      // Put portmap's chain back for the next round (and the cases above, whatever order they run in).
      await resetChain();
      expect(await snapshot()).toEqual(original);
    }
  });
});
