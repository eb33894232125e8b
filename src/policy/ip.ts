// Strict IP and CIDR parsing into the canonical text iptables-save prints.
import { isIP } from "node:net";
import { Address4, Address6 } from "ip-address";

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

/** A single host address; no prefix, no zone. IPv4-mapped IPv6 forms become their IPv4 address. */
export function parseIp(text: string): Ip | undefined {
  const family = isIP(text);
  if (family === 4) return { family: 4, text: new Address4(text).correctForm() };
  if (family !== 6 || text.includes("%")) return undefined;
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
  return { family: ip.family, text: canonical, address: ip.family === 4 ? new Address4(canonical) : new Address6(canonical) };
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.family !== ip.family) return false;
  return ip.family === 4 ? new Address4(ip.text).isInSubnet(cidr.address) : new Address6(ip.text).isInSubnet(cidr.address);
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
