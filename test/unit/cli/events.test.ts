// The keeper's Kubernetes Events, against the API server's answers recorded on a real cluster
// (test/fixtures/kube/, recorded by test/cluster/events.test.ts with PMH_RECORD_FIXTURES=1): which Events a pass
// gives, their body, the pod's UID asked for when kubelet's CNI_ARGS lack it, the rate limit, and failures that
// are a log line and a count, never a throw.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KubeEvents, MAX_PENDING, PER_POD_MS } from "../../../src/cli/events.js";
import type { KubePod } from "../../../src/core/names.js";
import type { CachedAttachment } from "../../../src/host/cache.js";
import type { Kube, KubeResponse } from "../../../src/host/kube.js";
import type { PassReport } from "../../../src/ops/pass.js";
import type { StatusRow } from "../../../src/ops/status.js";
import { observedPass } from "./observed-pass.js";

const recorded = (name: string): KubeResponse =>
  JSON.parse(readFileSync(join(import.meta.dirname, "../../fixtures/kube", `${name}.json`), "utf8")) as KubeResponse;

interface Call {
  method: string;
  path: string;
  body: unknown;
}

function setup(answer: (c: Call) => KubeResponse = () => recorded("post-event-created")) {
  const calls: Call[] = [];
  const logged: string[] = [];
  let failures = 0;
  let now = Date.parse("2026-12-06T10:00:00Z");
  const kube: Kube = {
    call: async (method, path, body) => {
      const c = { method, path, body };
      calls.push(c);
      return answer(c);
    },
  };
  const events = new KubeEvents({
    kube,
    node: "node-1",
    log: (_level, text) => logged.push(text),
    failed: () => failures++,
    now: () => now,
  });
  return {
    events,
    calls,
    logged,
    failures: () => failures,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const WEB: KubePod = { namespace: "default", name: "web", uid: "0c1e5b8e-uid" };
const repaired = (pod: KubePod | undefined) =>
  observedPass({ repairs: [{ cause: "chain_rebuilt", pod, family: 4, place: "CNI-DN-3e9a3d0f9583cdc0e7133" }] });

describe("Events of a pass", () => {
  it("a repaired pod: HostPortRepaired on it, as the keeper's node", async () => {
    const t = setup();
    t.events.passed(repaired(WEB));
    await t.events.settled();
    expect(t.calls).toHaveLength(1);
    expect(t.calls[0]).toMatchObject({
      method: "POST",
      path: "/api/v1/namespaces/default/events",
      body: {
        metadata: { generateName: "web.", namespace: "default" },
        involvedObject: { apiVersion: "v1", kind: "Pod", namespace: "default", name: "web", uid: WEB.uid },
        reason: "HostPortRepaired",
        type: "Normal",
        message: "node-1: its hostPort rules (IPv4 CNI-DN-3e9a3d0f9583cdc0e7133) were missing or changed: rebuilt",
        source: { component: "portmap-hostip", host: "node-1" },
        count: 1,
      },
    });
    expect([t.failures(), t.logged]).toEqual([0, []]);
  });

  it("at most one per pod and reason every 5 minutes", async () => {
    const t = setup();
    t.events.passed(repaired(WEB));
    t.events.passed(repaired(WEB));
    t.advance(PER_POD_MS - 1);
    t.events.passed(repaired(WEB));
    t.advance(1);
    t.events.passed(repaired(WEB));
    await t.events.settled();
    expect(t.calls).toHaveLength(2);
  });

  it("asks for the pod's UID when kubelet's CNI_ARGS lack it; a pod gone meanwhile gets none", async () => {
    const t = setup((c) => (c.method === "GET" ? recorded("get-pod") : recorded("post-event-created")));
    t.events.passed(repaired({ ...WEB, uid: undefined }));
    await t.events.settled();
    const uid = (recorded("get-pod").body as { metadata: { uid: string } }).metadata.uid;
    expect(t.calls.map((c) => c.method)).toEqual(["GET", "POST"]);
    expect(t.calls[0]?.path).toBe("/api/v1/namespaces/default/pods/web");
    expect(t.calls[1]?.body).toMatchObject({ involvedObject: { uid } });
    const gone = setup(() => recorded("get-pod-missing"));
    gone.events.passed(repaired({ ...WEB, uid: undefined }));
    await gone.events.settled();
    expect([gone.calls.length, gone.failures()]).toEqual([1, 0]);
  });

  it("a refusal by RBAC is counted per Event and said once", async () => {
    const t = setup(() => recorded("post-event-forbidden"));
    t.events.passed(repaired(WEB));
    t.events.passed(repaired({ ...WEB, name: "db" }));
    await t.events.settled();
    expect(t.failures()).toBe(2);
    expect(t.logged).toHaveLength(1);
    expect(t.logged[0]).toMatch(/^keeper: Event HostPortRepaired on pod default\/web not recorded: POST event: 403 /);
    expect(t.logged[0]).toContain('cannot create resource "events"');
  });

  it("an API server that does not answer is a failure, not a throw", async () => {
    const t = setup(() => {
      throw new Error("POST /api/v1/namespaces/default/events: no answer from the API server within 5000 ms");
    });
    t.events.passed(repaired(WEB));
    await t.events.settled();
    expect([t.failures(), t.logged.length]).toEqual([1, 1]);
  });

  it(`drops (and counts) what is beyond ${MAX_PENDING} waiting`, async () => {
    const t = setup();
    const pods = Array.from({ length: MAX_PENDING + 3 }, (_, i) => ({ ...WEB, name: `web-${i}` }));
    t.events.passed(
      observedPass({ repairs: pods.map((pod) => ({ cause: "chain_rebuilt", pod, family: 4, place: "x" })) }),
    );
    await t.events.settled();
    expect([t.calls.length, t.failures()]).toEqual([MAX_PENDING, 3]);
  });

  it("a refused pod: HostPortRefused with the plugin's message; a rescope after an address change: HostPortRescoped", async () => {
    const t = setup();
    t.events.passed(
      observedPass({
        refused: [{ pod: WEB, message: "host IP 198.51.100.7 (from annotation) … is not allowed", at: 0 }],
        repairs: [{ cause: "rescoped_address", pod: { ...WEB, name: "api" }, family: 4, place: "CNI-DN-x" }],
      }),
    );
    await t.events.settled();
    expect(t.calls.map((c) => (c.body as { reason: string; type: string; message: string }).reason)).toEqual([
      "HostPortRescoped",
      "HostPortRefused",
    ]);
    expect(t.calls[1]?.body).toMatchObject({
      type: "Warning",
      message: "node-1: host IP 198.51.100.7 (from annotation) … is not allowed",
    });
  });

  it("a mapping the keeper found newly closed: HostPortClosed with the reason", async () => {
    const t = setup();
    const attachment = {
      network: "cbr0",
      containerId: "abc123",
      cniArgs: new Map([
        ["K8S_POD_NAMESPACE", "default"],
        ["K8S_POD_NAME", "web"],
        ["K8S_POD_UID", WEB.uid as string],
      ]),
    } as CachedAttachment;
    const report = { seen: { view: { cache: { attachments: [attachment] } } } } as unknown as PassReport;
    const closed = {
      family: 4,
      network: "cbr0",
      containerId: "abc123",
      protocol: "tcp",
      hostPort: 8080,
      state: "closed",
      reason: "its rules are missing",
    } as StatusRow;
    // A row of a container the cache does not name has no pod to tell.
    const stranger = { ...closed, containerId: "zzz999" };
    t.events.passed(observedPass({ report, closed: [closed, stranger] }));
    await t.events.settled();
    expect(t.calls.map((c) => c.body)).toMatchObject([
      {
        reason: "HostPortClosed",
        type: "Warning",
        involvedObject: { name: "web", uid: WEB.uid },
        message: "node-1: hostPort 8080/tcp answers on no address: its rules are missing",
      },
    ]);
  });
});
