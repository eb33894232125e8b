// The Kubernetes API as a pod reaches it (in-cluster): the service account's token and CA from their mounted
// files, the API server from KUBERNETES_SERVICE_HOST and _PORT, one HTTPS request at a time through Node's
// https, each bounded by a time limit. Loaded only where those are there (the keeper in its DaemonSet).
import { readFile } from "node:fs/promises";
import { request } from "node:https";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
const REQUEST_TIMEOUT_MS = 5_000;
// An API answer is a few KiB; anything near this is not one.
const MAX_RESPONSE_BYTES = 1 << 20;

export interface KubeResponse {
  status: number;
  body: unknown;
}

export interface Kube {
  /** `method path` with a JSON body; the answer's status and JSON body. Rejects on a network failure or the time limit. */
  call(method: "GET" | "POST", path: string, body?: unknown): Promise<KubeResponse>;
}

/**
 * The in-cluster API, or undefined outside a cluster: no KUBERNETES_SERVICE_HOST, or no token mounted (the
 * pod's automountServiceAccountToken is false). Throws when they are there but unusable (no CA, a bad port).
 */
export async function inCluster(
  env: NodeJS.ProcessEnv = process.env,
  dir = SERVICE_ACCOUNT_DIR,
  timeoutMs = REQUEST_TIMEOUT_MS,
): Promise<Kube | undefined> {
  const host = env["KUBERNETES_SERVICE_HOST"];
  const port = env["KUBERNETES_SERVICE_PORT"] ?? "443";
  const tokenFile = `${dir}/token`;
  if (!host || !(await readFile(tokenFile, "utf8").catch(() => undefined))) return undefined;
  if (!/^\d{1,5}$/.test(port)) throw new Error(`KUBERNETES_SERVICE_PORT ${JSON.stringify(port)} is not a port`);
  let ca: Buffer;
  try {
    ca = await readFile(`${dir}/ca.crt`);
  } catch (err) {
    throw new Error(`no CA for the API server in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return kubeAt(host, Number(port), ca, tokenFile, timeoutMs);
}

/** The API server at host:port, trusted by `ca`; the token is read again at every call (kubelet rotates it). */
export function kubeAt(host: string, port: number, ca: Buffer, tokenFile: string, timeoutMs: number): Kube {
  return {
    async call(method, path, body) {
      const token = (await readFile(tokenFile, "utf8")).trim();
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      return new Promise<KubeResponse>((resolve, reject) => {
        const req = request(
          {
            // An IPv6 service address goes in brackets in the URL, bare here.
            host: host.replace(/^\[(.*)\]$/, "$1"),
            port,
            method,
            path,
            ca,
            headers: {
              Authorization: `Bearer ${token}`,
              Accept: "application/json",
              ...(payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {}),
            },
            signal: AbortSignal.timeout(timeoutMs),
          },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on("data", (chunk: Buffer) => {
              size += chunk.length;
              if (size > MAX_RESPONSE_BYTES)
                req.destroy(new Error(`${method} ${path}: answer over ${MAX_RESPONSE_BYTES} bytes`));
              else chunks.push(chunk);
            });
            res.on("end", () => {
              const text = Buffer.concat(chunks).toString("utf8");
              let parsed: unknown = text;
              try {
                parsed = JSON.parse(text);
              } catch {
                // kept as text: the status says what happened
              }
              resolve({ status: res.statusCode ?? 0, body: parsed });
            });
            res.on("error", reject);
          },
        );
        req.on("error", (err) =>
          reject(
            err.name === "AbortError"
              ? new Error(`${method} ${path}: no answer from the API server within ${timeoutMs} ms`, { cause: err })
              : new Error(`${method} ${path}: ${err.message}`, { cause: err }),
          ),
        );
        req.end(payload);
      });
    },
  };
}
