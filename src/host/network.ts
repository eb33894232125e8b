// The node's own addresses and default-route interfaces, read in the namespace the plugin runs in.
import { readFileSync } from "node:fs";
import { CniError, Code } from "../core/errors.js";
import { type Family, hostCidr, type Ip, kernelIp } from "../core/ip.js";
import type { NodeAddress, NodeNetwork } from "../core/node.js";
import { type Runner, run } from "./run.js";

interface IpAddrLink {
  ifname?: string;
  addr_info?: Array<{ family?: string; local?: string; scope?: string; temporary?: boolean; dadfailed?: boolean }>;
}

/** Parses `ip -j address show`: every address of every interface, up or down (kube-ipvs0 is down). */
export function parseIpAddressJson(text: string): NodeAddress[] {
  const links = JSON.parse(text) as IpAddrLink[];
  const addresses: NodeAddress[] = [];
  for (const link of links) {
    for (const info of link.addr_info ?? []) {
      const ip = info.local === undefined ? undefined : kernelIp(info.local);
      if (link.ifname && ip) {
        addresses.push({
          ifname: link.ifname,
          ip,
          scope: info.scope ?? "global",
          temporary: info.temporary === true,
          dadFailed: info.dadfailed === true,
        });
      }
    }
  }
  return addresses;
}

interface IpRoute {
  dst?: string;
  /** Printed only for a table other than main (when every table is listed). */
  table?: string;
  /** Absent for unicast; unreachable, blackhole, prohibit, throw: no way out. */
  type?: string;
  dev?: string;
  /** A multipath route (or a nexthop group, `nhid`), which /proc/net/route shows with its first nexthop only. */
  nexthops?: Array<{ dev?: string }>;
}

/**
 * Parses `ip -j route show default` (or `route show table all exact ::/0`): the interfaces of every nexthop of
 * every unicast default route of the main table.
 */
export function parseDefaultRoutesJson(text: string): string[] {
  const ifaces: string[] = [];
  for (const route of JSON.parse(text) as IpRoute[]) {
    if (route.dst !== "default" || (route.type !== undefined && route.type !== "unicast")) continue;
    if (route.table !== undefined && route.table !== "main") continue;
    for (const dev of [route.dev, ...(route.nexthops ?? []).map((n) => n.dev)]) {
      if (dev !== undefined && dev !== "lo" && !ifaces.includes(dev)) ifaces.push(dev);
    }
  }
  return ifaces;
}

async function ip(runner: Runner, args: string[], input = ""): Promise<string> {
  const r = await runner("ip", args, { input, timeoutMs: 10_000 }).catch((err: Error) => ({
    code: -1,
    stdout: "",
    stderr: err.message,
  }));
  if (r.code !== 0)
    throw new CniError(
      Code.IoFailure,
      `cannot read the node's network with "ip ${args.join(" ")}": ${r.stderr.trim()}`,
    );
  return r.stdout;
}

/** `ip -j link show`: the interfaces that are not up (their addresses stay local, but `address show up` omits them). */
export function parseDownLinks(text: string): string[] {
  const links = JSON.parse(text) as Array<{ ifname?: string; flags?: string[] }>;
  return links.flatMap((l) => (l.ifname && !(l.flags ?? []).includes("UP") ? [l.ifname] : []));
}

/** The prefix count of the kernel's IPv4 local table, from /proc/net/fib_triestat; undefined when it says none. */
export function parseLocalPrefixes(text: string): number | undefined {
  const local = text.indexOf("\nLocal:");
  const m = local < 0 ? null : /Prefixes:\s+(\d+)/.exec(text.slice(local));
  return m ? Number(m[1]) : undefined;
}

/** The node's IPv6 addresses, from /proc/net/if_inet6: one line each, every interface, up or down. */
export function countIpv6Addresses(text: string): number {
  let lines = 0;
  for (let at = text.indexOf("\n"); at >= 0; at = text.indexOf("\n", at + 1)) lines++;
  return lines;
}

/**
 * Above this many local addresses of a family (kube-proxy in IPVS mode puts every Service IP on kube-ipvs0,
 * which is down), `ip -j address show` prints megabytes (10,000 addresses: 1.5 MB, 48 ms, and ~20 ms to parse
 * here): then only the up interfaces' addresses are listed, and the down ones' only where the policy looks.
 */
const MANY_LOCAL_ADDRESSES = 1_000;

/**
 * Whether this node has so many local addresses that listing them all is the larger part of an ADD: IPv4's
 * count is the kernel's local prefixes (/proc/net/fib_triestat, a few lines), IPv6's the lines of
 * /proc/net/if_inet6 (IPv6-only clusters put their Service IPs there).
 */
export function manyLocalAddresses(): boolean {
  // A file the kernel does not have (no IPv6, no procfs) counts none.
  const read = (path: string): string => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  };
  const v4 = parseLocalPrefixes(read("/proc/net/fib_triestat")) ?? 0;
  return v4 > MANY_LOCAL_ADDRESSES || countIpv6Addresses(read("/proc/net/if_inet6")) > MANY_LOCAL_ADDRESSES;
}

/**
 * One `ip` process lists the addresses and the default routes of the families asked for (a batch costs what
 * `ip address` alone costs). `-6` would apply to the whole batch: IPv6's line lists every table's routes to
 * exactly ::/0 (the prefix gives the family), and the parser keeps the main table's, as `ip -6 route show
 * default` prints them. With `upOnly`, only the addresses of the interfaces that are up are listed, and `down`
 * names the others.
 */
export async function readNodeNetwork(
  families: readonly Family[] = [4, 6],
  runner: Runner = run,
  upOnly = false,
): Promise<NodeNetwork & { down: string[] }> {
  const commands = upOnly ? ["link show", "address show up"] : ["address show"];
  if (families.includes(4)) commands.push("route show default");
  if (families.includes(6)) commands.push("route show table all exact ::/0");
  const batch = await ip(runner, ["-j", "-batch", "-"], commands.map((c) => `${c}\n`).join(""));
  // Without -p each command prints its JSON on one line.
  const lines = batch.split("\n").filter((line) => line.trim() !== "");
  const links = upOnly ? lines.shift() : undefined;
  const addresses = lines.shift();
  const v4 = families.includes(4) ? lines.shift() : undefined;
  const v6 = families.includes(6) ? lines.shift() : undefined;
  return {
    addresses: parseIpAddressJson(addresses ?? "[]"),
    defaultRouteInterfaces: { 4: parseDefaultRoutesJson(v4 ?? "[]"), 6: parseDefaultRoutesJson(v6 ?? "[]") },
    down: links === undefined ? [] : parseDownLinks(links),
  };
}

/** Every interface's address equal to one of `ips`: one `ip` process, each `to` a dump of every address that ip filters. */
export async function readHolders(ips: readonly Ip[], runner: Runner = run): Promise<NodeAddress[]> {
  const input = ips.map((a) => `address show to ${hostCidr(a)}\n`).join("");
  const out = await ip(runner, ["-j", "-batch", "-"], input);
  return out
    .split("\n")
    .filter((line) => line.trim() !== "")
    .flatMap((line) => parseIpAddressJson(line));
}
