// Traffic probes: who answers at addr:port, seen from inside a namespace.
import { nsRun, nsRunOk } from "./netns.js";
import { ECHO_NET_SCRIPT } from "./paths.js";

export type Proto = "tcp" | "udp";

export interface ProbeOptions {
  /** Per attempt (default 1000 ms). */
  timeoutMs?: number;
  /** Attempts when nothing answered in time (default 2); a refusal is final at once. */
  attempts?: number;
}

/**
 * Sends one TCP connection / UDP datagram from namespace `ns` to host:port and returns the identity the
 * answering server printed (e.g. "pod-a", "service"), or null when refused or nothing answered in time.
 */
export async function whoAnswers(
  ns: string,
  proto: Proto,
  host: string,
  port: number,
  opts: ProbeOptions = {},
): Promise<string | null> {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const attempts = opts.attempts ?? 2;
  for (let i = 0; i < attempts; i++) {
    const r = await nsRun(
      ns,
      process.execPath,
      [ECHO_NET_SCRIPT, "ask", proto, host, String(port), String(timeoutMs)],
      {
        timeoutMs: timeoutMs + 5000,
      },
    );
    if (r.code === 0) return r.stdout.trim();
    if (r.code === 3) return null; // refused / unreachable: definitive
    if (r.code !== 2) throw new Error(`probe ${proto} ${host}:${port} from ${ns} failed (${r.code}): ${r.stderr}`);
  }
  return null;
}

/** Host part of an URL-ish destination: brackets IPv6. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Makes the node's firewall stateful, as kube-proxy or firewalld do: connection tracking then stays on while
 * a reload has wiped the NAT rules (without any such rule the kernel would track nothing meanwhile).
 */
export async function keepConntrackOn(node: string): Promise<void> {
  await nsRunOk(node, "iptables", ["-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
}
