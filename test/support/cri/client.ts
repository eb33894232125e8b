// A CRI v1 client (the RuntimeService calls the tests make) over containerd's gRPC socket, typed by hand for
// the subset in api.proto. Every call has a deadline.

import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { REPO_ROOT } from "../paths.js";

export const PROTO_FILE = join(REPO_ROOT, "test/support/cri/api.proto");

export interface CriPortMapping {
  protocol?: "TCP" | "UDP" | "SCTP";
  containerPort: number;
  hostPort?: number;
  hostIp?: string;
}

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  portMappings?: CriPortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string };
}

export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface PodSandboxStatusResponse {
  status: {
    id: string;
    metadata: PodSandboxMetadata;
    state: "SANDBOX_READY" | "SANDBOX_NOTREADY";
    network: { ip: string; additionalIps: Array<{ ip: string }> } | null;
    annotations: Record<string, string>;
  };
  /** Verbose only: "info" holds containerd's JSON (pid, runtimeSpec, cniResult, …). */
  info: Record<string, string>;
}

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata;
  state: "SANDBOX_READY" | "SANDBOX_NOTREADY";
  labels: Record<string, string>;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
type Method = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: Callback<unknown>,
) => void;

let definition: grpc.GrpcObject | undefined;

function runtimeService(): grpc.ServiceClientConstructor {
  definition ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO_FILE, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true }),
  );
  const v1 = (definition["runtime"] as grpc.GrpcObject)["v1"] as grpc.GrpcObject;
  return v1["RuntimeService"] as grpc.ServiceClientConstructor;
}

export class CriClient {
  private readonly client: grpc.Client;

  constructor(
    socket: string,
    private readonly deadlineMs = 60_000,
  ) {
    const Service = runtimeService();
    this.client = new Service(`unix://${socket}`, grpc.credentials.createInsecure());
  }

  private call<T>(name: string, request: unknown, deadlineMs = this.deadlineMs): Promise<T> {
    const method = (this.client as unknown as Record<string, Method>)[name]!.bind(this.client);
    return new Promise((resolve, reject) => {
      method(request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, value) =>
        err ? reject(err) : resolve(value as T),
      );
    });
  }

  version(deadlineMs?: number): Promise<VersionResponse> {
    return this.call("Version", { version: "v1" }, deadlineMs);
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    return (await this.call<{ podSandboxId: string }>("RunPodSandbox", { config })).podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call("StopPodSandbox", { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call("RemovePodSandbox", { podSandboxId: id });
  }

  podSandboxStatus(id: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call("PodSandboxStatus", { podSandboxId: id, verbose });
  }

  async listPodSandbox(labels: Record<string, string> = {}): Promise<PodSandbox[]> {
    return (await this.call<{ items: PodSandbox[] }>("ListPodSandbox", { filter: { labelSelector: labels } })).items;
  }

  close(): void {
    this.client.close();
  }
}

/** The text of a failed call (gRPC status details), for assertions on what the runtime reports. */
export function grpcMessage(err: unknown): string {
  return (err as grpc.ServiceError).details ?? (err as Error).message;
}
