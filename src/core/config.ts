// The network configuration on stdin: our conflist entry, the list's name and cniVersion, prevResult and
// runtimeConfig. zod checks the shape; the semantic checks below name the offending field and value.

import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { CniError, Code } from "./errors.js";
import { type Cidr, type Ip, parseCidr, parseIp } from "./ip.js";
import { isInterfaceName } from "./names.js";

export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
export const LATEST_VERSION = "1.1.0";
export const ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";
const DEFAULT_ANNOTATION = "portmap-hostip/host-ip";
const DEFAULT_EXCLUDED = ["kube-ipvs0"];
/** Where ADD and DEL leave their per-container records for the keeper (host/state.ts). */
export const DEFAULT_STATE_DIR = "/run/portmap-hostip";

export type Protocol = "tcp" | "udp" | "sctp";
export const PROTOCOLS: readonly Protocol[] = ["tcp", "udp", "sctp"];

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: Protocol;
  /** The runtime's hostIP, parsed; undefined when it was absent or "". */
  hostIp: Ip | undefined;
}

export type DefaultHostIp = { kind: "node" } | { kind: "any" } | { kind: "ips"; ips: Ip[] };

export interface Policy {
  defaultHostIp: DefaultHostIp;
  nodeIps: Ip[] | undefined;
  /** The node's Kubernetes addresses (status.hostIPs): added to those read from its interfaces. */
  kubeNodeIps: Ip[] | undefined;
  nodeInterfaces: string[] | undefined;
  excludeInterfaces: string[];
  allowedHostCidrs: Cidr[] | undefined;
  annotation: string;
}

/** What every command needs: the list's identity. */
export interface Envelope {
  cniVersion: string;
  name: string;
}

export interface NetConf extends Envelope {
  policy: Policy;
  prevResult: PrevResult | undefined;
  portMappings: PortMapping[];
  /** The value of the policy's annotation on this pod, if the runtime sent it. */
  annotationValue: string | undefined;
  /** The entry's stateDir: where ADD and DEL leave their records (absolute). */
  stateDir: string;
}

const stringList = z.array(z.string());

const PrevResultSchema = z.looseObject({
  cniVersion: z.optional(z.string()),
  interfaces: z.optional(z.array(z.looseObject({ name: z.optional(z.string()), sandbox: z.optional(z.string()) }))),
  ips: z.optional(z.array(z.looseObject({ address: z.string(), interface: z.optional(z.int()) }))),
});
export type PrevResult = z.infer<typeof PrevResultSchema>;

const EnvelopeSchema = z.looseObject({ cniVersion: z.string(), name: z.string() });

const NetConfSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string(),
  defaultHostIP: z.optional(
    z.union([z.string(), stringList], { error: 'expected "node", "any", an IP address or a list of IP addresses' }),
  ),
  nodeIPs: z.optional(stringList),
  kubeNodeIPs: z.optional(stringList),
  nodeInterfaces: z.optional(stringList),
  excludeInterfaces: z.optional(stringList),
  allowedHostCIDRs: z.optional(stringList),
  annotation: z.optional(z.string()),
  logFile: z.optional(z.string()),
  stateDir: z.optional(z.string()),
  prevResult: z.optional(PrevResultSchema),
  runtimeConfig: z.optional(
    // Runtimes built on go-cni marshal a capability they have no value for as null (a Go nil map or slice):
    // containerd 1.6 sends pod-annotations null for every pod without annotations.
    z.looseObject({
      portMappings: z.optional(z.nullable(z.array(z.record(z.string(), z.unknown())))),
      [ANNOTATIONS_CAPABILITY]: z.optional(z.nullable(z.record(z.string(), z.string()))),
    }),
  ),
});

type Path = ReadonlyArray<PropertyKey>;

function pathText(path: Path): string {
  if (path.length === 0) return "the configuration";
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("");
}

function valueAt(root: unknown, path: Path): unknown {
  return path.reduce<unknown>(
    (v, key) => (v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[key] : undefined),
    root,
  );
}

/** The offending value, short; a huge or deeply nested one is only named by its kind. */
function preview(value: unknown): string {
  if (value === undefined) return "missing";
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch {
    // Nested deeper than the stack allows.
  }
  if (json !== undefined && json.length <= 200) return json;
  return Array.isArray(value) ? "an array" : typeof value === "object" ? "an object" : `${json?.slice(0, 200)}…`;
}

function invalid(path: Path, value: unknown, why: string): CniError {
  const shown = preview(value);
  return new CniError(Code.InvalidConfig, `invalid network configuration: ${pathText(path)} = ${shown}: ${why}`);
}

/** Checks `json` against a schema; a mismatch is code 7 naming the first offending field and its value. */
export function parseShape<T>(schema: z.ZodMiniType<T>, json: unknown): T {
  let parsed = z.safeParse(schema, json);
  if (parsed.success) return parsed.data;
  // zod/mini has no messages of its own ("Invalid input"); English ones are set up on this rare path only.
  z.config(en());
  parsed = z.safeParse(schema, json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const path = issue?.path ?? [];
  throw invalid(path, valueAt(json, path), issue?.message ?? "invalid");
}

function checkVersion(version: string, field: string): void {
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(
      Code.IncompatibleVersion,
      `incompatible CNI versions: ${field} ${JSON.stringify(version)} is not one of ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
}

export function parseEnvelope(json: unknown): Envelope {
  const { cniVersion, name } = parseShape(EnvelopeSchema, json);
  checkVersion(cniVersion, "cniVersion");
  return { cniVersion, name };
}

const LogFileSchema = z.looseObject({ logFile: z.optional(z.string()) });

/** An absolute path naming a file (not a folder), as the logFile key and the installer's --log-file need. */
export function isLogFilePath(path: string): boolean {
  return path.startsWith("/") && !path.endsWith("/") && !path.includes("\0");
}

/**
 * The entry's logFile, read apart from the rest of the configuration so that a call whose configuration is
 * otherwise invalid is still logged.
 */
export function parseLogFile(json: unknown): string | undefined {
  const { logFile } = parseShape(LogFileSchema, json);
  if (logFile !== undefined && !isLogFilePath(logFile))
    throw invalid(["logFile"], logFile, "expected an absolute path of a file");
  return logFile;
}

// Kubernetes annotation key: a qualified name, optionally prefixed by a DNS subdomain.
const ANNOTATION_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const ANNOTATION_PREFIX = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function isAnnotationKey(key: string): boolean {
  const slash = key.lastIndexOf("/");
  return ANNOTATION_NAME.test(key.slice(slash + 1)) && (slash < 0 || ANNOTATION_PREFIX.test(key.slice(0, slash)));
}

function must<T>(value: T | undefined, error: () => CniError): T {
  if (value === undefined) throw error();
  return value;
}

function ipList(values: string[], path: Path): Ip[] {
  return values.map((v, i) => must(parseIp(v), () => invalid([...path, i], v, "not an IP address")));
}

function ifnameList(values: string[], path: Path): string[] {
  values.forEach((v, i) => {
    if (!isInterfaceName(v)) throw invalid([...path, i], v, "not an interface name");
  });
  return values;
}

function parseDefaultHostIp(value: string | string[] | undefined): DefaultHostIp {
  if (value === undefined || value === "node") return { kind: "node" };
  if (value === "any") return { kind: "any" };
  const list = typeof value === "string" ? [value] : value;
  const error = () =>
    invalid(["defaultHostIP"], value, 'expected "node", "any", an IP address or a non-empty list of IP addresses');
  if (list.length === 0) throw error();
  return { kind: "ips", ips: list.map((v) => must(parseIp(v), error)) };
}

/** portMappings keys are matched case-insensitively, as Go's JSON decoder does (containerd sends `HostPort`). */
function parsePortMapping(raw: Record<string, unknown>, index: number): PortMapping {
  const field = (name: string): [string, unknown] => {
    const key = Object.keys(raw).find((k) => k.toLowerCase() === name.toLowerCase());
    return key === undefined ? [name, undefined] : [key, raw[key]];
  };
  const base = ["runtimeConfig", "portMappings", index];
  const port = (name: string): number => {
    const [key, v] = field(name);
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 65535)
      throw invalid([...base, key], v, "expected a port number from 1 to 65535");
    return v;
  };
  const [protoKey, proto] = field("protocol");
  if (proto !== undefined && typeof proto !== "string")
    throw invalid([...base, protoKey], proto, "expected tcp, udp or sctp");
  const protocol = (proto === undefined || proto === "" ? "tcp" : proto.toLowerCase()) as Protocol;
  if (!PROTOCOLS.includes(protocol)) throw invalid([...base, protoKey], proto, "expected tcp, udp or sctp");
  const [ipKey, hostIp] = field("hostIP");
  if (hostIp !== undefined && typeof hostIp !== "string")
    throw invalid([...base, ipKey], hostIp, "expected an IP address or an empty string");
  const ip = hostIp === undefined || hostIp === "" ? undefined : parseIp(hostIp);
  if (hostIp && !ip) throw invalid([...base, ipKey], hostIp, "expected an IP address or an empty string");
  return { hostPort: port("hostPort"), containerPort: port("containerPort"), protocol, hostIp: ip };
}

// An annotation key such as "constructor" must not find Object.prototype's members.
function ownValue(map: Record<string, string> | null | undefined, key: string): string | undefined {
  return map && Object.hasOwn(map, key) ? map[key] : undefined;
}

export function parseNetConf(json: unknown): NetConf {
  const raw = parseShape(NetConfSchema, json);
  checkVersion(raw.cniVersion, "cniVersion");
  if (raw.prevResult?.cniVersion !== undefined) checkVersion(raw.prevResult.cniVersion, "prevResult.cniVersion");
  const annotation = raw.annotation ?? DEFAULT_ANNOTATION;
  if (!isAnnotationKey(annotation)) throw invalid(["annotation"], annotation, "not a Kubernetes annotation key");
  const stateDir = raw.stateDir ?? DEFAULT_STATE_DIR;
  if (!isStateDir(stateDir)) throw invalid(["stateDir"], stateDir, "expected an absolute directory path");
  const allowed = raw.allowedHostCIDRs?.map((v, i) =>
    must(parseCidr(v), () => invalid(["allowedHostCIDRs", i], v, "not a CIDR (address/prefix)")),
  );
  return {
    cniVersion: raw.cniVersion,
    name: raw.name,
    policy: {
      defaultHostIp: parseDefaultHostIp(raw.defaultHostIP),
      nodeIps: raw.nodeIPs && ipList(raw.nodeIPs, ["nodeIPs"]),
      kubeNodeIps: raw.kubeNodeIPs && ipList(raw.kubeNodeIPs, ["kubeNodeIPs"]),
      nodeInterfaces: raw.nodeInterfaces && ifnameList(raw.nodeInterfaces, ["nodeInterfaces"]),
      excludeInterfaces: raw.excludeInterfaces
        ? ifnameList(raw.excludeInterfaces, ["excludeInterfaces"])
        : DEFAULT_EXCLUDED,
      allowedHostCidrs: allowed,
      annotation,
    },
    prevResult: raw.prevResult,
    portMappings: (raw.runtimeConfig?.portMappings ?? []).map(parsePortMapping),
    annotationValue: ownValue(raw.runtimeConfig?.[ANNOTATIONS_CAPABILITY], annotation),
    stateDir,
  };
}

export const isStateDir = (path: string): boolean => path.startsWith("/") && !path.includes("\0") && path.length < 4096;

/** DEL's state directory: the entry's when it is usable, else the default (DEL never fails on it). */
export function stateDirOf(json: unknown): string {
  const dir = json !== null && typeof json === "object" ? (json as { stateDir?: unknown }).stateDir : undefined;
  return typeof dir === "string" && isStateDir(dir) ? dir : DEFAULT_STATE_DIR;
}
