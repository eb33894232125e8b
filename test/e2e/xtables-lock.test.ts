// The xtables lock held by another program (iptables-legacy, the lock in a private XTABLES_LOCKFILE): ADD
// gives up after its bounded wait with code 11 (try again later) and changes nothing; once the lock is free,
// the retried ADD scopes the rules.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { describeAsRoot, useHarness } from "../support/e2e.js";
import { run } from "../support/exec.js";
import {
  bridgeConflist,
  chainRules,
  containerdMapping,
  describeRun,
  dnChainName,
  NODE_IP1,
  natSave,
  PLUGIN_TYPE,
  POD_SUBNET,
  podIPs,
  podRuntime,
  scopedRules,
} from "../support/harness.js";

const lockDir = mkdtempSync(join(tmpdir(), "pmh-xtlock-"));
const lockFile = join(lockDir, "xtables.lock");
writeFileSync(lockFile, "");
afterAll(() => rmSync(lockDir, { recursive: true, force: true }));

/** Holds the lock with util-linux flock until the returned process is killed. */
async function holdLock(): Promise<ChildProcess> {
  // --no-fork: the pid is the one holding the lock, so killing it frees the lock.
  const holder = spawn("flock", ["--exclusive", "--no-fork", lockFile, "sleep", "300"], { stdio: "ignore" });
  // Held once a non-blocking flock fails.
  for (let i = 0; i < 100; i++) {
    if ((await run("flock", ["--nonblock", lockFile, "true"], { timeoutMs: 5_000 })).code !== 0) return holder;
    await new Promise((r) => setTimeout(r, 50));
  }
  holder.kill("SIGKILL");
  throw new Error(`flock did not take ${lockFile}`);
}

describeAsRoot("the xtables lock is held by another program (iptables-legacy)", () => {
  const h = useHarness({ legacyIptables: true, extraEnv: { XTABLES_LOCKFILE: lockFile } });

  it("ADD ends with code 11 and changes nothing; with the lock free again, ADD scopes the rules", async () => {
    const list = bridgeConflist({ dataDir: h.topo.ipamDataDir, hostip: { defaultHostIP: "node" } });
    const at = list.plugins.findIndex((p) => p.type === PLUGIN_TYPE);
    const pod = await h.topo.addPod("lock");
    const rt = podRuntime(pod, { portMappings: [containerdMapping(8108, 80)], hostIPAnnotation: NODE_IP1 });
    const base = await h.cni.add(list, rt, { to: at });
    expect(base.ok, describeRun(base)).toBe(true);
    const snapshot = async () => ({
      v4: await natSave(h.topo.node, 4, h.iptables),
      v6: await natSave(h.topo.node, 6, h.iptables),
    });
    const before = await snapshot();

    const holder = await holdLock();
    let held: Awaited<ReturnType<typeof h.cni.add>>;
    try {
      // The invoker kills a plugin after 30 s: an ADD that waited for the lock forever would not print code 11.
      held = await h.cni.add(list, rt, { from: at, ...(base.result ? { prevResult: base.result } : {}) });
    } finally {
      holder.kill("SIGKILL");
      await new Promise((r) => holder.once("close", r));
    }
    expect(held.ok).toBe(false);
    expect(held.failed?.output, describeRun(held)).toMatchObject({ code: 11, msg: expect.stringMatching(/iptables/) });
    expect(held.failed?.output?.["details"]).toMatch(/xtables lock/);
    expect(await snapshot()).toEqual(before);

    const retried = await h.cni.add(list, rt, { from: at, ...(base.result ? { prevResult: base.result } : {}) });
    expect(retried.ok, describeRun(retried)).toBe(true);
    const chain = dnChainName(list.name, pod.containerID);
    const spec = {
      chain,
      family: 4 as const,
      podSubnet: POD_SUBNET,
      podIP: podIPs(base.result).v4!,
      hostPort: 8108,
      containerPort: 80,
    };
    expect(await chainRules(h.topo.node, chain, 4, h.iptables)).toEqual(scopedRules(spec, [NODE_IP1]));
  });
});
