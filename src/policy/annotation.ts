// The pod's host-IP annotation: comma-separated entries, each `IP` or `PORT[/PROTO]=IP`.

import { PROTOCOLS, type Protocol } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { type Ip, parseIp } from "../core/ip.js";

// A pod needs a handful of entries; the bounds keep a hostile value from costing anything.
export const MAX_ANNOTATION_LENGTH = 4096;
export const MAX_ANNOTATION_ENTRIES = 64;

export interface HostIpAnnotation {
  /** Entries without a port: every mapping of the pod. */
  all: Ip[];
  /** Entries for one `port/protocol`; they replace `all` for that mapping. */
  byPort: Map<string, Ip[]>;
}

export const portKey = (port: number, protocol: Protocol): string => `${port}/${protocol}`;

const ENTRY = /^(?:(\d{1,5})\s*(?:\/\s*([A-Za-z]+)\s*)?=\s*)?(\S+)$/;

function addUnique(list: Ip[], ip: Ip): void {
  if (!list.some((x) => x.text === ip.text)) list.push(ip);
}

export function parseAnnotation(value: string, key: string, pod: string): HostIpAnnotation {
  const fail = (why: string) =>
    new CniError(
      Code.InvalidAnnotation,
      `invalid annotation ${key} on pod ${pod}: ${why}`,
      `value: ${JSON.stringify(value.slice(0, 300))}`,
    );
  if (value.length > MAX_ANNOTATION_LENGTH) throw fail(`longer than ${MAX_ANNOTATION_LENGTH} characters`);
  const result: HostIpAnnotation = { all: [], byPort: new Map() };
  // An empty value (as templates often leave it) states no preference: the default applies.
  if (value === "") return result;
  const entries = value.split(",");
  if (entries.length > MAX_ANNOTATION_ENTRIES) throw fail(`more than ${MAX_ANNOTATION_ENTRIES} entries`);
  for (const rawEntry of entries) {
    const entry = rawEntry.trim();
    const m = ENTRY.exec(entry);
    if (!m) throw fail(`entry ${JSON.stringify(entry)} is not IP or PORT[/PROTO]=IP`);
    const [, port, proto, ipText = ""] = m;
    const ip = parseIp(ipText);
    if (!ip) throw fail(`entry ${JSON.stringify(entry)}: ${JSON.stringify(ipText)} is not an IP address`);
    if (port === undefined) {
      addUnique(result.all, ip);
      continue;
    }
    const portNumber = Number(port);
    if (portNumber < 1 || portNumber > 65535)
      throw fail(`entry ${JSON.stringify(entry)}: port ${port} is not from 1 to 65535`);
    const protocol = (proto ?? "tcp").toLowerCase() as Protocol;
    if (!PROTOCOLS.includes(protocol))
      throw fail(`entry ${JSON.stringify(entry)}: protocol ${JSON.stringify(proto)} is not tcp, udp or sctp`);
    const k = portKey(portNumber, protocol);
    const list = result.byPort.get(k) ?? [];
    addUnique(list, ip);
    result.byPort.set(k, list);
  }
  return result;
}
