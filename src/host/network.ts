// The node's own addresses and default-route interfaces, read in the namespace the plugin runs in.
import { CniError, Code } from "../core/errors.js";
import { type Family, kernelIp } from "../core/ip.js";
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
  /** Absent for unicast; unreachable, blackhole, prohibit, throw: no way out. */
  type?: string;
  dev?: string;
  /** A multipath route (or a nexthop group, `nhid`), which /proc/net/route shows with its first nexthop only. */
  nexthops?: Array<{ dev?: string }>;
}

/** Parses `ip -j route show default`: the interfaces of every nexthop of every unicast default route. */
export function parseDefaultRoutesJson(text: string): string[] {
  const ifaces: string[] = [];
  for (const route of JSON.parse(text) as IpRoute[]) {
    if (route.dst !== "default" || (route.type !== undefined && route.type !== "unicast")) continue;
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

/**
 * One `ip` process lists the addresses and the IPv4 default routes (a batch costs what `ip address` alone
 * costs); IPv6 needs its own (`-6` is global in a batch), run in parallel only when IPv6 is asked for.
 */
export async function readNodeNetwork(
  families: readonly Family[] = [4, 6],
  runner: Runner = run,
): Promise<NodeNetwork> {
  const [batch, v6] = await Promise.all([
    ip(runner, ["-j", "-batch", "-"], families.includes(4) ? "address show\nroute show default\n" : "address show\n"),
    families.includes(6) ? ip(runner, ["-j", "-6", "route", "show", "default"]) : "[]",
  ]);
  // Without -p each command prints its JSON on one line.
  const [addresses, v4 = "[]"] = batch.split("\n").filter((line) => line.trim() !== "");
  return {
    addresses: parseIpAddressJson(addresses ?? "[]"),
    defaultRouteInterfaces: { 4: parseDefaultRoutesJson(v4), 6: parseDefaultRoutesJson(v6) },
  };
}
