// The CNI protocol around the commands: environment, stdin, result or error on stdout, exit code.
import { cmdAdd } from "../commands/add.js";
import {
  LATEST_VERSION,
  parseEnvelope,
  parseLogFile,
  parseNetConf,
  SUPPORTED_VERSIONS,
  stateDirOf,
} from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { type CniEnv, type Command, kubePod, kubernetesPod } from "../core/names.js";
import { writeOutput } from "../host/output.js";
import { writeRecord, writeRefusal } from "../host/record.js";
import { readAttachmentEnv, readCommand } from "./env.js";
import type { CallRecord } from "./log-file.js";
import { decodeJson, readStdin } from "./stdin.js";

function print(value: unknown): void {
  writeOutput(1, `${JSON.stringify(value)}\n`);
}

/** The config's cniVersion when it names a supported one, for the error result. */
function versionOf(json: unknown): string {
  const v = json !== null && typeof json === "object" ? (json as { cniVersion?: unknown }).cniVersion : undefined;
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v) ? v : LATEST_VERSION;
}

/** What the log file records of a call, filled in as the call gets there. */
type CallLog = Pick<CallRecord, "mappings" | "resolved">;

async function execute(command: Command, json: unknown, attachment: CniEnv | undefined, log: CallLog): Promise<void> {
  switch (command) {
    case "ADD": {
      const conf = parseNetConf(json);
      log.mappings = conf.portMappings;
      const { result, resolved } = await cmdAdd(conf, attachment!);
      log.resolved = resolved;
      print(result);
      return;
    }
    case "CHECK": {
      const conf = parseNetConf(json);
      log.mappings = conf.portMappings;
      // Loaded here, like the pipeline it runs: an ADD never pays for it.
      const { cmdCheck } = await import("../commands/check.js");
      await cmdCheck(conf, attachment!);
      return;
    }
    case "DEL": {
      // portmap's own DEL (run after ours) removes the pod's chain, rewritten rules included. Only the
      // envelope must be valid, so that DEL never sticks on our policy.
      const { name } = parseEnvelope(json);
      if (hasPortMappings(json)) await recordDel(stateDirOf(json), name, attachment!);
      return;
    }
    case "GC": {
      // Loaded lazily, like the operator commands: ADD never pays for it.
      const [{ cniGc }, { podBackends }] = await Promise.all([
        import("../ops/gc.js"),
        import("../backends/registry.js"),
      ]);
      await cniGc(await podBackends(), json);
      return;
    }
    case "STATUS": {
      parseEnvelope(json);
      // Loaded only here: a pod start that runs no tool never pays for child_process.
      const [{ cniStatus }, { podBackends }] = await Promise.all([
        import("../commands/status.js"),
        import("../backends/registry.js"),
      ]);
      await cniStatus(await podBackends());
      return;
    }
    case "VERSION":
      print({ cniVersion: LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS });
      return;
  }
}

/** The entry's logFile; DEL ignores an invalid one rather than stick (ADD has refused it already). */
function logFileOf(command: Command, json: unknown): string | undefined {
  try {
    return parseLogFile(json);
  } catch (err) {
    if (command === "DEL") return undefined;
    throw err;
  }
}

// Long enough for a keeper pass to finish its write (one iptables-restore per family); DEL goes on after it.
const DEL_KEEPER_WAIT_MS = 10_000;

function hasPortMappings(json: unknown): boolean {
  const rc = (json as { runtimeConfig?: { portMappings?: unknown } }).runtimeConfig;
  return Array.isArray(rc?.portMappings) && rc.portMappings.length > 0;
}

/**
 * Marks the container deleted before portmap's DEL removes its chain, so that no reconcile brings it back,
 * and lets a pass that read the records before the mark finish its write first. Never fails DEL.
 */
async function recordDel(dir: string, network: string, env: CniEnv): Promise<void> {
  try {
    writeRecord(dir, network, env.containerId, "deleted");
    const { awaitKeeperLock } = await import("../host/state.js");
    if (!(await awaitKeeperLock(dir, DEL_KEEPER_WAIT_MS)))
      writeOutput(
        2,
        `portmap-hostip: DEL of container ${env.containerId}: the keeper lock in ${dir} was still held after ${DEL_KEEPER_WAIT_MS} ms; going on\n`,
      );
  } catch (err) {
    writeOutput(
      2,
      `portmap-hostip: DEL of container ${env.containerId}: no record in ${dir} (${(err as Error).message})\n`,
    );
  }
}

export async function runCni(): Promise<number> {
  const time = new Date();
  const started = performance.now();
  let version = LATEST_VERSION;
  let logFile: string | undefined;
  let command: Command | undefined;
  let attachment: CniEnv | undefined;
  const log: CallLog = { mappings: undefined, resolved: undefined };
  let error: CniError | undefined;
  let json: unknown;
  try {
    const env = process.env;
    command = readCommand(env);
    attachment =
      command === "ADD" || command === "DEL" || command === "CHECK" ? readAttachmentEnv(env, command) : undefined;
    // VERSION needs no configuration (and must not wait on a terminal for one).
    json = command === "VERSION" ? undefined : decodeJson(readStdin());
    version = versionOf(json);
    logFile = command === "VERSION" ? undefined : logFileOf(command, json);
    await execute(command, json, attachment, log);
  } catch (err) {
    error =
      err instanceof CniError
        ? err
        : new CniError(Code.IoFailure, (err as Error).message ?? String(err), "", { cause: err });
    print({ cniVersion: version, code: error.code, msg: error.message, details: error.details });
    // The keeper tells Kubernetes (an Event on the pod) why its hostPort can never be what it asked for.
    const pod = attachment && kubePod(attachment.args);
    if (command === "ADD" && error.code === Code.HostIpNotAllowed && pod)
      writeRefusal(stateDirOf(json), pod, error.message);
  }
  if (logFile !== undefined) {
    // Loaded only when configured: calls without a logFile pay nothing for it.
    const { logCall } = await import("./log-file.js");
    logCall(logFile, {
      time,
      command: command!,
      pod: attachment && kubernetesPod(attachment.args),
      containerId: attachment?.containerId,
      ...log,
      error: error && { code: error.code, msg: error.message },
      durationMs: performance.now() - started,
    });
  }
  return error ? 1 : 0;
}
