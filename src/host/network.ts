// The node's own addresses and default-route interfaces, read in the namespace the plugin runs in.
import { readFileSync } from "node:fs";
import { CniError, Code } from "../core/errors.js";
import { parseIp } from "../core/ip.js";
import type { NodeAddress, NodeNetwork } from "../core/node.js";
import { run } from "./run.js";

interface IpAddrLink {
  ifname?: string;
  addr_info?: Array<{ family?: string; local?: string; scope?: string }>;
}

/** Parses `ip -j address show`: every address of every interface, up or down (kube-ipvs0 is down). */
export function parseIpAddressJson(text: string): NodeAddress[] {
  const links = JSON.parse(text) as IpAddrLink[];
  const addresses: NodeAddress[] = [];
  for (const link of links) {
    for (const info of link.addr_info ?? []) {
      const ip = info.local === undefined ? undefined : parseIp(info.local);
      if (link.ifname && ip) addresses.push({ ifname: link.ifname, ip, scope: info.scope ?? "global" });
    }
  }
  return addresses;
}

const RTF_UP = 0x1;
const RTF_REJECT = 0x200;

function addOnce(list: string[], ifname: string): void {
  if (ifname !== "lo" && !list.includes(ifname)) list.push(ifname);
}

/** /proc/net/route: Iface Destination Gateway Flags RefCnt Use Metric Mask …, hex, main table. */
export function parseProcRoute(text: string): string[] {
  const ifaces: string[] = [];
  for (const line of text.split("\n").slice(1)) {
    const [iface, dest, , flags, , , , mask] = line.trim().split(/\s+/);
    if (iface && dest === "00000000" && mask === "00000000" && (parseInt(flags ?? "0", 16) & (RTF_UP | RTF_REJECT)) === RTF_UP) addOnce(ifaces, iface);
  }
  return ifaces;
}

/** /proc/net/ipv6_route: dest plen src splen nexthop metric refcnt use flags iface, hex. */
export function parseProcIpv6Route(text: string): string[] {
  const ifaces: string[] = [];
  for (const line of text.split("\n")) {
    const [dest, plen, , , , , , , flags, iface] = line.trim().split(/\s+/);
    if (iface && /^0{32}$/.test(dest ?? "") && plen === "00" && (parseInt(flags ?? "0", 16) & (RTF_UP | RTF_REJECT)) === RTF_UP) addOnce(ifaces, iface);
  }
  return ifaces;
}

function readOptional(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    // A node without IPv6 has no /proc/net/ipv6_route: no IPv6 default route.
    return "";
  }
}

export async function readNodeNetwork(): Promise<NodeNetwork> {
  const addr = await run("ip", ["-j", "address", "show"], { timeoutMs: 10_000 }).catch((err: Error) => ({ code: -1, stdout: "", stderr: err.message }));
  if (addr.code !== 0) throw new CniError(Code.IoFailure, `cannot list the node's addresses with "ip -j address show": ${addr.stderr.trim()}`);
  return {
    addresses: parseIpAddressJson(addr.stdout),
    defaultRouteInterfaces: { 4: parseProcRoute(readOptional("/proc/net/route")), 6: parseProcIpv6Route(readOptional("/proc/net/ipv6_route")) },
  };
}
