// Strict IP and CIDR parsing into the canonical text iptables-save prints.
import type { Address4, Address6 } from "ip-address";

let library: typeof import("ip-address") | undefined;
/**
 * ip-address, loaded at its first use (~8 ms): a configuration that holds no IPv6 address and no CIDR never
 * loads it. A plain `require`, which esbuild bundles and keeps lazy (an `import` would run at start-up).
 */
function ipAddress(): typeof import("ip-address") {
  library ??= require("ip-address") as typeof import("ip-address");
  return library;
}

export type Family = 4 | 6;

export interface Ip {
  family: Family;
  /** Canonical text: dotted quad, or RFC 5952 (what glibc's inet_ntop prints). */
  text: string;
}

export interface Cidr {
  family: Family;
  text: string;
  address: Address4 | Address6;
}

const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
// Hex groups, colons and an embedded dotted quad only: no prefix, no zone, no spaces.
const IPV6_CHARS = /^[0-9a-fA-F:.]{2,45}$/;

/** A single host address; no prefix, no zone. IPv4-mapped IPv6 forms become their IPv4 address. */
export function parseIp(text: string): Ip | undefined {
  // Plain regexes, not node:net's isIP, whose large IPv6 pattern costs milliseconds to compile per process.
  if (IPV4.test(text)) return { family: 4, text };
  if (!IPV6_CHARS.test(text) || !text.includes(":")) return undefined;
  const { Address6 } = ipAddress();
  if (!Address6.isValid(text)) return undefined;
  const v6 = new Address6(text);
  if (v6.isMapped4()) return { family: 4, text: v6.to4().correctForm() };
  return { family: 6, text: v6.correctForm() };
}

export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const bits = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(bits) || Number(bits) > (ip.family === 4 ? 32 : 128)) return undefined;
  const canonical = `${ip.text}/${Number(bits)}`;
  const { Address4, Address6 } = ipAddress();
  return {
    family: ip.family,
    text: canonical,
    address: ip.family === 4 ? new Address4(canonical) : new Address6(canonical),
  };
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.family !== ip.family) return false;
  const { Address4, Address6 } = ipAddress();
  return ip.family === 4
    ? new Address4(ip.text).isInSubnet(cidr.address)
    : new Address6(ip.text).isInSubnet(cidr.address);
}

// Addresses that are never a unicast address of this node, whatever its interfaces say.
const NOT_UNICAST: ReadonlyArray<[string, string]> = [
  ["0.0.0.0/32", "the unspecified address"],
  ["255.255.255.255/32", "the broadcast address"],
  ["224.0.0.0/4", "a multicast address"],
  ["169.254.0.0/16", "a link-local address"],
  ["::/128", "the unspecified address"],
  ["ff00::/8", "a multicast address"],
  ["fe80::/10", "a link-local address"],
];
let notUnicast: Array<[Cidr, string]> | undefined;

/** Why an address can never be a pod's host IP; undefined when it could be. */
export function notUnicastReason(ip: Ip): string | undefined {
  notUnicast ??= NOT_UNICAST.map(([cidr, why]) => [parseCidr(cidr) as Cidr, why]);
  return notUnicast.find(([cidr]) => cidrContains(cidr, ip))?.[1];
}

/** The `-d` operand for one host address, as iptables-save prints it. */
export function hostCidr(ip: Ip): string {
  return `${ip.text}/${ip.family === 4 ? 32 : 128}`;
}
