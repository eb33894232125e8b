// STATUS: ready for ADD when the first backend portmap would use works; a node without its tool at all (no
// iptables) leaves portmap the next one (its nftables backend), which must work then.
import type { RuleBackend } from "../backends/backend.js";
import { CniError, Code } from "../core/errors.js";
import { NotInstalled } from "../host/tool.js";

export async function cniStatus(backends: readonly RuleBackend[]): Promise<void> {
  const missing: string[] = [];
  for (const backend of backends) {
    try {
      await backend.usable();
      return;
    } catch (err) {
      const last = missing.length === backends.length - 1;
      if (!(err instanceof NotInstalled) || last) {
        const which =
          missing.length > 0 ? `neither ${[...missing, backend.tool].join(" nor ")} is` : `${backend.tool} is not`;
        throw new CniError(
          Code.PluginNotAvailable,
          `${which} usable: ${(err as Error).message}`,
          err instanceof CniError ? err.details : "",
          { cause: err },
        );
      }
      missing.push(backend.tool);
    }
  }
}
