// Which portmap the e2e suite chains in front of ours: $PMH_PORTMAP selects one of the matrix's variants
// (scripts/test-portmap-matrix runs the portmap scenarios once per variant; Debian's 1.1.1 is the default run).
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { REPO_ROOT, SYSTEM_CNI_DIR } from "./paths.js";

export const PORTMAP_VARIANTS = ["1.1.1", "1.9.1-iptables", "1.9.1-nftables"] as const;
export type PortmapVariantName = (typeof PORTMAP_VARIANTS)[number];

export interface PortmapVariant {
  name: PortmapVariantName;
  /** The portmap executable the type `portmap` resolves to. */
  binary: string;
  /** Where portmap writes: the nat table through iptables, or `ip`/`ip6 cni_hostport` through nft. */
  backend: "iptables" | "nftables";
  /** Keys added to portmap's conflist entry (`backend` for the nftables one). */
  conf: Record<string, unknown>;
}

/** The third-party binaries of the tests: ../shared/bin beside the checkout ($PMH_SHARED_BIN elsewhere). */
export function sharedBinDir(): string {
  return process.env["PMH_SHARED_BIN"] ?? resolve(REPO_ROOT, "../shared/bin");
}

/** portmap v1.9.1 with both backends. */
export function portmapV191(): string {
  return join(sharedBinDir(), "portmap-v1.9.1");
}

/** The variant $PMH_PORTMAP names (default 1.1.1); throws, naming the missing file, when its binary is absent. */
export function portmapVariant(): PortmapVariant {
  const name = (process.env["PMH_PORTMAP"] ?? "1.1.1") as PortmapVariantName;
  if (!PORTMAP_VARIANTS.includes(name))
    throw new Error(`PMH_PORTMAP=${name}: expected one of ${PORTMAP_VARIANTS.join(", ")}`);
  const binary = name === "1.1.1" ? join(SYSTEM_CNI_DIR, "portmap") : portmapV191();
  if (!existsSync(binary)) throw new Error(`PMH_PORTMAP=${name}: ${binary} does not exist, these tests cannot run`);
  const backend = name === "1.9.1-nftables" ? "nftables" : "iptables";
  return { name, binary, backend, conf: backend === "nftables" ? { backend } : {} };
}
