// Kubernetes Events on the pods whose hostPorts the keeper saw start closed or put right, so that
// `kubectl describe pod` shows what the node did. Loaded only with an in-cluster service account; every call is
// bounded (host/kube.ts), sent one at a time off the pass, and a failure is a log line and a count, never a stop.

import { type KubePod, kubePod } from "../core/names.js";
import type { Kube, KubeResponse } from "../host/kube.js";
import type { StatusRow } from "../ops/status.js";
import type { ObservedPass, PassObserver } from "./keeper.js";
import type { Level, LogFields } from "./log.js";

export const COMPONENT = "portmap-hostip";
// As client-go's spam filter refills: one Event per pod and reason every 5 minutes at most.
export const PER_POD_MS = 5 * 60_000;
// A flush on a node of many pods is many repairs: beyond this many waiting, Events are dropped (and counted).
export const MAX_PENDING = 50;

type EventType = "Normal" | "Warning";

export interface EventsOptions {
  kube: Kube;
  /** The node's name (the DaemonSet's NODE_NAME), as the Events' source names it. */
  node: string;
  log: (level: Level, text: string, fields: LogFields) => void;
  /** An Event not recorded (dropped, refused, no answer). */
  failed: () => void;
  now?: () => number;
}

/** An API answer's words: its Status message, else its status code. */
function answerText(r: KubeResponse): string {
  const message = (r.body as { message?: unknown } | null)?.message;
  return `${r.status}${typeof message === "string" ? ` ${message}` : ""}`;
}

export class KubeEvents implements PassObserver {
  readonly wantsRows = true;
  private readonly lastSent = new Map<string, number>();
  private pending = 0;
  private queue: Promise<void> = Promise.resolve();
  private lastError = "";
  private readonly now: () => number;

  constructor(private readonly o: EventsOptions) {
    this.now = o.now ?? Date.now;
  }

  watching(): void {}

  entryPutBack(): void {}

  passed(p: ObservedPass): void {
    for (const r of p.repairs) {
      if (!r.pod || r.cause === "dead_chain_removed" || r.cause === "entry_put_back") continue;
      const family = r.family === undefined ? "" : `IPv${r.family} `;
      if (r.cause === "rescoped_address")
        this.record(
          r.pod,
          "HostPortRescoped",
          "Normal",
          `${this.o.node}: the node's addresses changed: its hostPort rules (${family}${r.place}) follow them`,
        );
      else
        this.record(
          r.pod,
          "HostPortRepaired",
          "Normal",
          `${this.o.node}: its hostPort rules (${family}${r.place}) were missing or changed: rebuilt`,
        );
    }
    for (const r of p.refused) this.record(r.pod, "HostPortRefused", "Warning", `${this.o.node}: ${r.message}`);
    // A mapping newly closed: the keeper says each once while it stays closed.
    const cache = p.report?.seen?.view.cache;
    for (const row of p.closed) {
      const a = cache?.attachments.find((x) => x.containerId === row.containerId && x.network === row.network);
      const pod = a && kubePod(a.cniArgs);
      if (pod) this.record(pod, "HostPortClosed", "Warning", closedText(this.o.node, row));
    }
    const horizon = this.now() - PER_POD_MS;
    for (const [key, at] of this.lastSent) if (at < horizon) this.lastSent.delete(key);
  }

  /** Queues one Event, unless the pod had one of that reason lately or too many wait. */
  private record(pod: KubePod, reason: string, type: EventType, message: string): void {
    const key = `${pod.namespace}/${pod.name}\n${reason}`;
    const last = this.lastSent.get(key);
    if (last !== undefined && this.now() - last < PER_POD_MS) return;
    if (this.pending >= MAX_PENDING) {
      this.o.failed();
      return;
    }
    this.lastSent.set(key, this.now());
    this.pending++;
    this.queue = this.queue
      .then(() => this.send(pod, reason, type, message))
      .then(
        () => {
          this.lastError = "";
        },
        (err: Error) => {
          this.o.failed();
          const text = `keeper: Event ${reason} on pod ${pod.namespace}/${pod.name} not recorded: ${err.message}`;
          // Said when it changes, not for every pod (an RBAC refusal is the same for all).
          if (err.message !== this.lastError) this.o.log("warning", text, { event: "event-failed", cause: reason });
          this.lastError = err.message;
        },
      )
      .finally(() => {
        this.pending--;
      });
  }

  /** Resolves once every Event queued so far is sent or given up (what the tests wait for). */
  settled(): Promise<void> {
    return this.queue;
  }

  private async send(pod: KubePod, reason: string, type: EventType, message: string): Promise<void> {
    const ns = encodeURIComponent(pod.namespace);
    let uid = pod.uid;
    // `kubectl describe pod` finds Events by the pod's UID: kubelet's CNI_ARGS carry it, else ask for it.
    if (uid === undefined) {
      const got = await this.o.kube.call("GET", `/api/v1/namespaces/${ns}/pods/${encodeURIComponent(pod.name)}`);
      if (got.status === 404) return; // gone meanwhile: nobody to tell
      const found = (got.body as { metadata?: { uid?: unknown } } | null)?.metadata?.uid;
      if (got.status !== 200 || typeof found !== "string") throw new Error(`GET pod: ${answerText(got)}`);
      uid = found;
    }
    const at = new Date(this.now()).toISOString();
    const posted = await this.o.kube.call("POST", `/api/v1/namespaces/${ns}/events`, {
      apiVersion: "v1",
      kind: "Event",
      metadata: { generateName: `${pod.name}.`, namespace: pod.namespace },
      involvedObject: { apiVersion: "v1", kind: "Pod", namespace: pod.namespace, name: pod.name, uid },
      reason,
      message,
      type,
      source: { component: COMPONENT, host: this.o.node },
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
    });
    if (posted.status !== 201) throw new Error(`POST event: ${answerText(posted)}`);
  }
}

const closedText = (node: string, row: StatusRow): string =>
  `${node}: hostPort ${row.hostPort}/${row.protocol} answers on no address${row.reason ? `: ${row.reason}` : ""}`;
