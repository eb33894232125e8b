// ADD: scope portmap's rules of this pod, all families or none, then pass prevResult on.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { convertResult } from "../core/result.js";
import { writeOutput } from "../host/output.js";
import { writeRecord } from "../host/record.js";
import { pathVariant } from "../iptables/variant.js";
import type { ResolvedMapping } from "../policy/resolve.js";

/** The result to print, and the host IPs decided per mapping (for the log file). */
export async function cmdAdd(
  conf: NetConf,
  env: CniEnv,
): Promise<{ result: Record<string, unknown>; resolved: ResolvedMapping[] }> {
  if (!conf.prevResult) {
    throw new CniError(Code.InvalidConfig, "no prevResult: portmap-hostip must run after portmap in a plugin chain");
  }
  // Computed before anything is written: a result we could not print must not follow a rewrite.
  const result = convertResult(conf.prevResult, conf.cniVersion);
  // A pod without hostPorts (most pods) has nothing more to do: the pipeline is not even loaded.
  if (conf.portMappings.length === 0) return { result, resolved: [] };
  const first = recordAdd(conf, env);
  const [{ scopePod }, { podBackends }] = await Promise.all([
    import("../backends/scope-pod.js"),
    import("../backends/registry.js"),
  ]);
  const { resolved, plans: all, notes, written } = await scopePod(conf, env, podBackends, first);
  // The default never fails a pod: what it left out, and why, must still be visible.
  for (const note of notes) writeOutput(2, `portmap-hostip: ${note}\n`);
  for (const { family, closed } of all) {
    // Not an error (the policy says so), but a pod that is unreachable over one family should be visible.
    for (const s of closed) {
      writeOutput(
        2,
        `portmap-hostip: hostPort ${s.hostPort}/${s.protocol} of pod ${podLabel(env)} has no IPv${family} host IP: not reachable over IPv${family}\n`,
      );
    }
  }
  // A UDP flow keeps the NAT decision of its first datagram: those made by portmap's unscoped rule in the
  // moment before our rewrite must go. Only pods with UDP mappings load and run this.
  if (written.length > 0 && conf.portMappings.some((m) => m.protocol === "udp")) {
    const { dropStaleUdp, procSource } = await import("../pipeline/conntrack.js");
    const warn = (text: string) => void writeOutput(2, `portmap-hostip: pod ${podLabel(env)}: ${text}\n`);
    // Both families' flows from one read of the kernel's table.
    const table = procSource();
    await Promise.all(
      written.map((plan) =>
        dropStaleUdp(plan.family, [{ before: plan.current, after: plan.desired }], warn, table).catch((err: Error) =>
          warn(err.message),
        ),
      ),
    );
  }
  return { result, resolved };
}

/**
 * Tells gc (and the keeper) that this container's chain is live though libcni has not cached the result yet,
 * and which iptables variant portmap wrote it with (ours: the runtime's PATH is portmap's), for a keeper that
 * finds it in no nat table (a flush) on a node with both.
 * ADD never waits for the keeper lock: no pass writes the chain of a container that is not cached. Best effort: a node without a writable state directory scopes pods all the same, with a warning.
 * True when this is the container's first ADD (it had no record): portmap has then just created its chain,
 * with its rules only (an ADD again finds our rules there, and portmap's appended after them).
 */
function recordAdd(conf: NetConf, env: CniEnv): boolean {
  try {
    return writeRecord(conf.stateDir, conf.name, env.containerId, "added", pathVariant());
  } catch (err) {
    writeOutput(
      2,
      `portmap-hostip: pod ${podLabel(env)}: no record in ${conf.stateDir} (${(err as Error).message}); gc --grace may take its chain for dead while ADD runs\n`,
    );
    return false;
  }
}
