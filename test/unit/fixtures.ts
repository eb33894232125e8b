// Loads the recorded real outputs under test/fixtures.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { decodeJson } from "../../src/cni/stdin.js";
import { CniError } from "../../src/core/errors.js";
import type { NodeNetwork } from "../../src/core/node.js";
import type { Rule } from "../../src/core/rule.js";
import { parseDefaultRoutesJson, parseIpAddressJson } from "../../src/host/network.js";
import { formatRule, parseRule } from "../../src/iptables/text.js";
import { scopeChain as scopeRules } from "../../src/pipeline/scope.js";
import type { FamilyScope } from "../../src/policy/resolve.js";

const dir = fileURLToPath(new URL("../fixtures/", import.meta.url));

export const fixture = (name: string): string => readFileSync(dir + name, "utf8");

export const CHAIN = "CNI-DN-3e9a3d0f9583cdc0e7133";

/**
 * The portmap builds whose iptables output is recorded (record.sh PORTMAP SUBDIR): Debian's 1.1.1 beside
 * the script, v1.9.1 in v1.9.1/. Tests of what portmap writes run for each.
 */
export const PORTMAP_VERSIONS = [
  { portmap: "1.1.1", dir: "" },
  { portmap: "1.9.1", dir: "v1.9.1/" },
] as const;

/** The `-A` lines of one chain in a recorded iptables-save (`dir`: a PORTMAP_VERSIONS entry's). */
export function chainOf(saveName: string, chain = CHAIN, dir = ""): string[] {
  return fixture(`iptables/${dir}${saveName}.save`)
    .split("\n")
    .filter((l) => l.startsWith(`-A ${chain} `));
}

/** The node namespace of the e2e topology: uplink up0 with 192.0.2.10, .11 and 2001:db8::10, kube-ipvs0 with 10.96.0.50. */
export const NODE: NodeNetwork = {
  addresses: parseIpAddressJson(fixture("host/ip-address.json")),
  defaultRouteInterfaces: {
    4: parseDefaultRoutesJson(fixture("host/ip-route-default-v4.json")),
    6: parseDefaultRoutesJson(fixture("host/ip-route-default-v6.json")),
  },
};

/** Both families: a dual-stack pod. */
export const BOTH: ReadonlySet<4 | 6> = new Set([4, 6]);

/** The CniError that `fn` throws; fails the test when it returns or throws anything else. */
export function cniError(fn: () => unknown): CniError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CniError) return err;
    throw err;
  }
  throw new Error("expected a CniError");
}

/** The CniError's code, or "ok" when `f` returns. */
export function codeOf(f: () => unknown): number | "ok" {
  try {
    f();
  } catch (err) {
    if (err instanceof CniError) return err.code;
    throw err;
  }
  return "ok";
}

/** The scoping transform on rule lines: read, scoped on the rule model, printed (the plugin's own edges). */
export function scopeChain(
  lines: readonly string[],
  scopes: readonly FamilyScope[],
): { rules: string[]; missing: FamilyScope[] } {
  const { rules, missing } = scopeRules(lines.map(parseRule), scopes);
  return { rules: rules.map((r) => formatRule(r)), missing };
}

/** Rule lines read into the rule model. */
export const rules = (lines: readonly string[]): Rule[] => lines.map(parseRule);

/** Rules printed as `iptables -S` lines. */
export const lines = (rules: readonly Rule[]): string[] => rules.map((r) => formatRule(r));

/** One CNI call containerd 1.6 made: its environment, stdin, exit code and stdout. */
export interface ContainerdCall {
  command: string;
  env: Record<string, string>;
  stdin: unknown;
  code: number;
  stdout: unknown;
}

/** What containerd sent the plugin for one pod shape of test/e2e/cri.test.ts. */
export interface ContainerdFixture {
  runtime: string;
  shape: string;
  request: {
    portMappings: Array<{ protocol?: string; containerPort: number; hostPort?: number; hostIp?: string }>;
    annotations: Record<string, string>;
  };
  calls: ContainerdCall[];
}

/** What containerd 1.6 sent, per pod shape (test/fixtures/containerd, recorded by test/e2e/cri.test.ts with PMH_RECORD_FIXTURES=1). */
export const containerdFixtures: ContainerdFixture[] = readdirSync(`${dir}containerd/`)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => JSON.parse(fixture(`containerd/${f}`)) as ContainerdFixture);

/** The bytes on the plugin's stdin of a recorded call, through the plugin's own decoder. */
export const stdinOf = (call: ContainerdCall) => decodeJson(Buffer.from(JSON.stringify(call.stdin)));
