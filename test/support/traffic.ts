// Traffic probes: who answers at addr:port, seen from inside a namespace.
import { nsRun, nsRunOk } from "./netns.js";
import { ECHO_NET_SCRIPT } from "./paths.js";

export type Proto = "tcp" | "udp";

export interface ProbeOptions {
  /** The first attempt's wait for an answer (default 1000 ms); each further attempt waits twice as long. */
  timeoutMs?: number;
  /** Attempts when nothing answered in time (default 2); a refusal is final at once. */
  attempts?: number;
}

/**
 * Sends one TCP connection / UDP datagram from namespace `ns` to host:port and returns the identity the
 * answering server printed (e.g. "pod-a", "service"), or null when refused or nothing answered in time.
 * Each attempt is its own process with a token of its own that the answer must carry (echo-net.mjs): an
 * answer that comes too late for one attempt is never taken for another's. Silence is not taken for "nobody"
 * at the first timeout: a loaded machine can take longer than a second to answer, so the next attempt waits
 * twice as long.
 */
export async function whoAnswers(
  ns: string,
  proto: Proto,
  host: string,
  port: number,
  opts: ProbeOptions = {},
): Promise<string | null> {
  const attempts = opts.attempts ?? 2;
  for (let i = 0, timeoutMs = opts.timeoutMs ?? 1000; i < attempts; i++, timeoutMs *= 2) {
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
