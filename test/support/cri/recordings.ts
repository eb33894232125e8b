// The plugin calls containerd made, per pod shape, as fixtures (test/fixtures/containerd/<shape>.json): stdin,
// CNI_* environment and PATH, and the plugin's answer, for ADD and every DEL. What varies from run to run
// (temporary paths, the run's network name, container IDs, netns names, MACs, veth names) is replaced by
// fixed stand-ins, so that the fixtures change only when what containerd sends changes.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../paths.js";
import type { Containerd, PluginCall } from "./containerd.js";

export const FIXTURE_DIR = join(REPO_ROOT, "test/fixtures/containerd");
/** Stand-ins in the fixtures. */
export const FIXTURE_NETWORK = "cri-e2e";
const FIXTURE_DIR_STANDIN = "/run/pmh-e2e/containerd";
const FIXTURE_PATH_STANDIN = "/usr/sbin:/usr/bin:/sbin:/bin";

export interface PodShape {
  name: string;
  /** The sandbox (container) ID containerd gave it. */
  id: string;
  /** What the test asked CRI for. */
  request: { portMappings: unknown[]; annotations: Record<string, string> };
}

export interface FixtureCall {
  command: string;
  env: Record<string, string>;
  stdin: unknown;
  code: number;
  /** The plugin's answer: JSON when it printed JSON, else the text. */
  stdout: unknown;
}

export interface ContainerdFixture {
  runtime: string;
  shape: string;
  request: PodShape["request"];
  calls: FixtureCall[];
}

/** A container ID of the fixture for a shape: 64 hex digits like containerd's, stable. */
export function fixtureId(shape: string): string {
  return createHash("sha256").update(`portmap-hostip fixture ${shape}`).digest("hex");
}

/** The calls made for one container, in order. */
export function shapeCalls(calls: readonly PluginCall[], id: string): PluginCall[] {
  return calls.filter((c) => c.env["CNI_CONTAINERID"] === id);
}

function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A recorded call with the run's own values replaced by the fixture's stand-ins. */
export function normaliseCall(
  call: PluginCall,
  shape: PodShape,
  run: { network: string; dir: string; path: string },
): FixtureCall {
  const replace = (text: string) =>
    text
      .split(run.dir)
      .join(FIXTURE_DIR_STANDIN)
      .split(run.path)
      .join(FIXTURE_PATH_STANDIN)
      .split(shape.id)
      .join(fixtureId(shape.name))
      .split(run.network)
      .join(FIXTURE_NETWORK)
      .replace(
        /cni-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g,
        "cni-00000000-0000-4000-8000-000000000000",
      )
      .replace(/\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b/g, "02:00:00:00:00:00")
      .replace(/\bveth[0-9a-f]{8}\b/g, "veth00000000");
  return {
    command: call.command,
    env: Object.fromEntries(Object.entries(call.env).map(([k, v]) => [k, replace(v)])),
    stdin: parsed(replace(call.stdin)),
    code: call.code,
    stdout: parsed(replace(call.stdout)),
  };
}

/** Writes one fixture per shape (PMH_RECORD_FIXTURES=1 runs of the containerd e2e test). */
export function recordFixtures(
  ctd: Containerd,
  shapes: readonly PodShape[],
  run: { network: string; dir: string; path: string; runtime: string },
): void {
  mkdirSync(FIXTURE_DIR, { recursive: true });
  const calls = ctd.calls();
  for (const shape of shapes) {
    const fixture: ContainerdFixture = {
      runtime: run.runtime,
      shape: shape.name,
      request: shape.request,
      calls: shapeCalls(calls, shape.id).map((c) => normaliseCall(c, shape, run)),
    };
    writeFileSync(join(FIXTURE_DIR, `${shape.name}.json`), `${JSON.stringify(fixture, null, 2)}\n`);
  }
}

export function readFixture(shape: string): ContainerdFixture {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, `${shape}.json`), "utf8")) as ContainerdFixture;
}

const keys = (v: unknown) => (v !== null && typeof v === "object" ? Object.keys(v).sort() : []);

/** What must stay as recorded: the calls in order, their exit codes, and which keys they carry where. */
export function callShapes(calls: readonly FixtureCall[]): unknown[] {
  return calls.map((c) => ({
    command: c.command,
    code: c.code,
    env: keys(c.env),
    stdin: keys(c.stdin),
    runtimeConfig: Object.fromEntries(
      Object.entries((c.stdin as { runtimeConfig?: object }).runtimeConfig ?? {}).map(([k, v]) => [
        k,
        v === null ? null : keys(v),
      ]),
    ),
  }));
}
