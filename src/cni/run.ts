// The CNI protocol around the commands: environment, stdin, result or error on stdout, exit code.
import { cmdAdd } from "../commands/add.js";
import { cmdCheck } from "../commands/check.js";
import { NotInstalled, checkUsable } from "../iptables/backend.js";
import { LATEST_VERSION, SUPPORTED_VERSIONS, parseEnvelope, parseNetConf } from "../core/config.js";
import type { CniEnv, Command } from "../core/names.js";
import { readAttachmentEnv, readCommand } from "./env.js";
import { CniError, Code } from "../core/errors.js";
import { decodeJson, readStdin } from "./stdin.js";

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** The config's cniVersion when it names a supported one, for the error result. */
function versionOf(json: unknown): string {
  const v = json !== null && typeof json === "object" ? (json as { cniVersion?: unknown }).cniVersion : undefined;
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v) ? v : LATEST_VERSION;
}

async function execute(command: Command, json: unknown, attachment: CniEnv | undefined): Promise<void> {
  switch (command) {
    case "ADD":
      print(await cmdAdd(parseNetConf(json), attachment!));
      return;
    case "CHECK":
      await cmdCheck(parseNetConf(json), attachment!);
      return;
    case "DEL":
      // portmap's own DEL (run after ours) removes the pod's chain, rewritten rules included. Only the
      // envelope must be valid, so that DEL never sticks on our policy.
      parseEnvelope(json);
      return;
    case "GC": {
      // Loaded lazily, like the operator commands: ADD never pays for it.
      const { cniGc } = await import("../ops/gc.js");
      await cniGc(json);
      return;
    }
    case "STATUS":
      parseEnvelope(json);
      await checkUsable().catch(async (err: Error) => {
        // A node without iptables at all leaves portmap only its nftables backend: then nft must work.
        if (!(err instanceof NotInstalled)) throw new CniError(Code.PluginNotAvailable, `iptables is not usable: ${err.message}`, err instanceof CniError ? err.details : "");
        const { checkNftUsable } = await import("../nftables/backend.js");
        await checkNftUsable().catch((nftErr: Error) => {
          throw new CniError(Code.PluginNotAvailable, `neither iptables nor nft is usable: ${nftErr.message}`, nftErr instanceof CniError ? nftErr.details : "");
        });
      });
      return;
    case "VERSION":
      print({ cniVersion: LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS });
      return;
  }
}

export async function runCni(): Promise<number> {
  let version = LATEST_VERSION;
  try {
    const env = process.env;
    const command = readCommand(env);
    const attachment = command === "ADD" || command === "DEL" || command === "CHECK" ? readAttachmentEnv(env, command) : undefined;
    // VERSION needs no configuration (and must not wait on a terminal for one).
    const json = command === "VERSION" ? undefined : decodeJson(readStdin());
    version = versionOf(json);
    await execute(command, json, attachment);
    return 0;
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(Code.IoFailure, (err as Error).message ?? String(err));
    print({ cniVersion: version, code: e.code, msg: e.message, details: e.details });
    return 1;
  }
}
