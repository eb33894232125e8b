// Strict IP and CIDR parsing into the canonical text iptables-save prints.
import type { Address4, Address6 } from "ip-address";

// ip-address's two classes, each loaded at its first use: a configuration with no CIDR and no IPv6 address
// loads neither, an IPv4-only pod only the smaller IPv4 half. Plain `require`s, which esbuild bundles and keeps
// lazy (an `import` would run at every start, ~8 ms).
let v4: typeof Address4 | undefined;
let v6: typeof Address6 | undefined;
function address4(): typeof Address4 {
  v4 ??= (require("ip-address/dist/ipv4.js") as typeof import("ip-address/dist/ipv4.js")).Address4;
  return v4;
}
function address6(): typeof Address6 {
  v6 ??= (require("ip-address/dist/ipv6.js") as typeof import("ip-address/dist/ipv6.js")).Address6;
  return v6;
}

export type Family = 4 | 6;

export const FAMILIES: readonly Family[] = [4, 6];

export interface Ip {
  family: Family;
  /** Canonical text: dotted quad, or RFC 5952 (what glibc's inet_ntop prints). */
  text: string;
}

export interface Cidr {
  family: Family;
  text: string;
  /** ip-address's form, made (and the library loaded) at first use. */
  readonly address: Address4 | Address6;
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
  const Address6 = address6();
  if (!Address6.isValid(text)) return undefined;
  const v6 = new Address6(text);
  if (v6.isMapped4()) return { family: 4, text: v6.to4().correctForm() };
  return { family: 6, text: v6.correctForm() };
}

/**
 * An address as iproute2 prints it: inet_ntop's text, a dotted quad or RFC 5952 already, so an IPv6 one is
 * taken as it is (the node's link-local addresses need not load the IPv6 library for an IPv4 pod). A mapped
 * IPv4 form goes through parseIp.
 */
export function kernelIp(text: string): Ip | undefined {
  if (!text.includes(":") || text.includes(".")) return parseIp(text);
  return IPV6_CHARS.test(text) ? { family: 6, text } : undefined;
}

export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const bits = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(bits) || Number(bits) > (ip.family === 4 ? 32 : 128)) return undefined;
  const canonical = `${ip.text}/${Number(bits)}`;
  let address: Address4 | Address6 | undefined;
  return {
    family: ip.family,
    text: canonical,
    get address() {
      address ??= ip.family === 4 ? new (address4())(canonical) : new (address6())(canonical);
      return address;
    },
  };
}

/** A dotted quad as a 32-bit number. */
const ipv4Number = (text: string): number => text.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.family !== ip.family) return false;
  if (ip.family === 6) return new (address6())(ip.text).isInSubnet(cidr.address);
  // IPv4 is plain arithmetic: the hostPort ADD of an IPv4 pod then never loads ip-address (~1.5 ms).
  const [base = "", bits] = cidr.text.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipv4Number(base) / size) === Math.floor(ipv4Number(ip.text) / size);
}

/** The network of a CIDR as iptables prints it: 10.244.1.5/24 → 10.244.1.0/24 (IPv4 without the library). */
export function networkOf(cidr: Cidr): string {
  const [base = "", bits = ""] = cidr.text.split("/");
  if (cidr.family === 6) return `${cidr.address.startAddress().correctForm()}/${bits}`;
  const size = 2 ** (32 - Number(bits));
  const start = Math.floor(ipv4Number(base) / size) * size;
  return `${[24, 16, 8, 0].map((shift) => Math.floor(start / 2 ** shift) % 256).join(".")}/${bits}`;
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
// Parsed per family at first use: an IPv4 address needs no IPv6 library.
const notUnicast: Partial<Record<Family, Array<[Cidr, string]>>> = {};

/** Why an address can never be a pod's host IP; undefined when it could be. */
export function notUnicastReason(ip: Ip): string | undefined {
  notUnicast[ip.family] ??= NOT_UNICAST.filter(([cidr]) => cidr.includes(":") === (ip.family === 6)).map(
    ([cidr, why]): [Cidr, string] => [parseCidr(cidr) as Cidr, why],
  );
  return notUnicast[ip.family]?.find(([cidr]) => cidrContains(cidr, ip))?.[1];
}

/** The `-d` operand for one host address, as iptables-save prints it. */
export function hostCidr(ip: Ip): string {
  return `${ip.text}/${ip.family === 4 ? 32 : 128}`;
}
