// The cluster's certificates (openssl, EC P-256: quick to make) and one kubeconfig per client, in one directory.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runOk } from "../exec.js";

/** A client of the API server: its certificate's CN and O (group), and the kubeconfig made for it. */
const CLIENTS = {
  admin: { cn: "admin", o: "system:masters" },
  "kube-controller-manager": { cn: "system:kube-controller-manager", o: "" },
  "kube-scheduler": { cn: "system:kube-scheduler", o: "" },
  "kube-proxy": { cn: "system:kube-proxy", o: "" },
} as const;
export type Client = keyof typeof CLIENTS | "kubelet";

export interface Pki {
  dir: string;
  ca: string;
  caKey: string;
  /** The API server's serving certificate and key. */
  apiserver: { cert: string; key: string };
  /** The API server's client certificate towards kubelets. */
  apiserverKubeletClient: { cert: string; key: string };
  /** kubelet's serving certificate and key. */
  kubeletServing: { cert: string; key: string };
  /** The service-account signing key pair. */
  serviceAccount: { key: string; pub: string };
  kubeconfig(client: Client): string;
}

export const APISERVER_URL = "https://127.0.0.1:6443";

export async function makePki(dir: string, node: { name: string; ip: string }, serviceIp: string): Promise<Pki> {
  const path = (name: string) => join(dir, name);
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];
  const openssl = (args: string[]) => runOk("openssl", args, { timeoutMs: 30_000 });
  await openssl([
    ...["req", "-x509", "-new", ...ecKey, "-keyout", path("ca.key"), "-out", path("ca.crt"), "-subj", "/CN=pmh-ca"],
    ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  /** A certificate signed by the CA; `sans` make it a serving one too. */
  const issue = async (name: string, subject: string, sans: string[] = []) => {
    const pair = { cert: path(`${name}.crt`), key: path(`${name}.key`) };
    await openssl([
      ...["req", "-x509", "-new", ...ecKey, "-CA", path("ca.crt"), "-CAkey", path("ca.key")],
      ...["-keyout", pair.key, "-out", pair.cert, "-subj", subject],
      ...["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=critical,digitalSignature"],
      ...["-addext", `extendedKeyUsage=${sans.length > 0 ? "serverAuth,clientAuth" : "clientAuth"}`],
      ...(sans.length > 0 ? ["-addext", `subjectAltName=${sans.join(",")}`] : []),
    ]);
    return pair;
  };
  const dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];
  const [apiserver, apiserverKubeletClient, kubeletServing, ...clients] = await Promise.all([
    issue("apiserver", "/CN=kube-apiserver", [
      ...["127.0.0.1", node.ip, serviceIp].map((ip) => `IP:${ip}`),
      ...[...dns, "localhost"].map((name) => `DNS:${name}`),
    ]),
    issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"),
    issue("kubelet-serving", `/CN=${node.name}`, [`DNS:${node.name}`, `IP:${node.ip}`]),
    issue("kubelet", `/O=system:nodes/CN=system:node:${node.name}`),
    ...Object.entries(CLIENTS).map(([name, { cn, o }]) => issue(name, `${o ? `/O=${o}` : ""}/CN=${cn}`)),
  ]);
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path("sa.key")]);
  await openssl(["pkey", "-in", path("sa.key"), "-pubout", "-out", path("sa.pub")]);
  const pairs = new Map<Client, { cert: string; key: string }>([
    ["kubelet", clients[0]!],
    ...Object.keys(CLIENTS).map((name, i) => [name as Client, clients[i + 1]!] as const),
  ]);
  for (const [client, pair] of pairs) {
    // JSON is YAML: a kubeconfig kubectl and every component read.
    const config = {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "pmh", cluster: { server: APISERVER_URL, "certificate-authority": path("ca.crt") } }],
      users: [{ name: client, user: { "client-certificate": pair.cert, "client-key": pair.key } }],
      contexts: [{ name: "pmh", context: { cluster: "pmh", user: client } }],
      "current-context": "pmh",
    };
    writeFileSync(path(`${client}.kubeconfig`), JSON.stringify(config, null, 2));
  }
  return {
    dir,
    ca: path("ca.crt"),
    caKey: path("ca.key"),
    apiserver,
    apiserverKubeletClient,
    kubeletServing,
    serviceAccount: { key: path("sa.key"), pub: path("sa.pub") },
    kubeconfig: (client) => path(`${client}.kubeconfig`),
  };
}
