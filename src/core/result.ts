// The result we print (prevResult, content unchanged, in the config's cniVersion) and what we read from it.

import type { PrevResult } from "./config.js";
import { type Family, parseIp } from "./ip.js";

function ipFamily(address: string): Family | undefined {
  const slash = address.indexOf("/");
  return parseIp(slash < 0 ? address : address.slice(0, slash))?.family;
}

/**
 * 0.3.x and 0.4.0 results carry `ips[].version`; 1.x results do not. Everything else passes through as is.
 */
export function convertResult(prev: PrevResult, cniVersion: string): Record<string, unknown> {
  const { cniVersion: _from, ...rest } = prev;
  const legacy = cniVersion.startsWith("0.");
  const ips = rest.ips?.map(({ version: _version, ...ip }) => {
    // Only 0.x results need the family: a 1.x one does not parse its addresses.
    const family = legacy ? ipFamily(ip.address) : undefined;
    return family ? { ...ip, version: String(family) } : ip;
  });
  return { cniVersion, ...rest, ...(ips ? { ips } : {}) };
}

/**
 * The pod's address families: where portmap found a pod IP, exactly as portmap picks it (the first address
 * of each family whose interface, if known, is the sandbox's CNI_IFNAME).
 */
export function podFamilies(prev: PrevResult | undefined, ifname: string): Set<Family> {
  return new Set(podAddresses(prev, ifname).keys());
}

/** The pod address portmap uses per family, as the result states it (`address/prefix`). */
export function podAddresses(prev: PrevResult | undefined, ifname: string): Map<Family, string> {
  const addresses = new Map<Family, string>();
  for (const ip of prev?.ips ?? []) {
    const iface = ip.interface === undefined ? undefined : prev?.interfaces?.[ip.interface];
    if (iface && (iface.name !== ifname || !iface.sandbox)) continue;
    const family = ipFamily(ip.address);
    if (family && !addresses.has(family)) addresses.set(family, ip.address);
  }
  return addresses;
}
