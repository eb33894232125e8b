// libcni's result cache entry (`<cacheDir>/results/<network>-<containerID>-<ifname>`), as libcni's cacheAdd
// writes it: kind cniCacheV1, the conflist's bytes in base64, CNI_ARGS as pairs, capability args, result.
// No side effects on import: unit tests use it as well as the invoker.

export interface CacheEntryInput {
  /** The conflist exactly as the runtime loaded it. */
  list: { name: string; [key: string]: unknown };
  containerID: string;
  ifName: string;
  netns?: string;
  /** CNI_ARGS as "K=V;K=V". */
  args?: string;
  capabilityArgs?: Record<string, unknown>;
  result: Record<string, unknown>;
}

/** The file name libcni gives the entry. */
export function cacheFileName(e: Pick<CacheEntryInput, "list" | "containerID" | "ifName">): string {
  return `${e.list.name}-${e.containerID}-${e.ifName}`;
}

export function cacheEntryJson(e: CacheEntryInput): string {
  const cniArgs = (e.args ?? "")
    .split(";")
    .filter((p) => p.includes("="))
    .map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]);
  return JSON.stringify({
    kind: "cniCacheV1",
    containerId: e.containerID,
    config: Buffer.from(JSON.stringify(e.list)).toString("base64"),
    ifName: e.ifName,
    networkName: e.list.name,
    ...(e.netns === undefined ? {} : { netns: e.netns }),
    ...(cniArgs.length > 0 ? { cniArgs } : {}),
    ...(e.capabilityArgs === undefined ? {} : { capabilityArgs: e.capabilityArgs }),
    result: e.result,
  });
}
