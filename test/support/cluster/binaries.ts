// The cluster's programs: Kubernetes v1.32.6 and flannel's CNI plugin from ../shared/bin (the Kubernetes ones
// xz-compressed: unpacked once into .cache/, checked against ../shared/bin/README.md's sha256), etcd from
// Debian's etcd-server package (scripts/setup unpacks it into .cache/etcd-server).
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { runOk } from "../exec.js";
import { REPO_ROOT } from "../paths.js";
import { sharedBinDir } from "../portmap-variant.js";

export const KUBERNETES_VERSION = "v1.32.6";
const SHA256 = {
  kubelet: "a1aed14e4d87be3a36221ecff47628eaf4b0f3747bbc4d22a0ea7fcbd562797f",
  "kube-apiserver": "367f46719e9b1f11eeedc28bdc15a8100cce4c01613aadc25efdc669491f53bb",
  "kube-controller-manager": "ef145ffabe8dcacadcf3b7f205c0a2b5b322a6a4fc176d1cf43e3d052ab3bc2b",
  "kube-scheduler": "9f0b47c66d92c05d609a40c699cbb04bd1c73882be79994adbfa6c6bfd7841ce",
  "kube-proxy": "78b38547dec4d66a4cb7ce5791623b72627ee72c7ab5ac5841ef3c22ea4ebae5",
  kubectl: "318cdcda90994615d6229673034afd4c1e6192905d62f10b851bf05573f8f188",
} as const;
export type KubernetesProgram = keyof typeof SHA256;
const FLANNEL = "flannel-v1.9.1-flannel1";
const ETCD = join(REPO_ROOT, ".cache/etcd-server/usr/bin/etcd");
const CACHE = join(REPO_ROOT, `.cache/kubernetes-${KUBERNETES_VERSION}`);

export interface ClusterBinaries {
  kubernetes: Record<KubernetesProgram, string>;
  etcd: string;
  flannel: string;
}

/** What the cluster needs and is missing, one line each (empty: it can run). */
export function missingClusterBinaries(): string[] {
  const shared = sharedBinDir();
  const wanted = [
    ...Object.keys(SHA256).map((name) => join(shared, `${name}-${KUBERNETES_VERSION}.xz`)),
    join(shared, FLANNEL),
  ];
  const missing = wanted.filter((file) => !existsSync(file)).map((file) => `${file} (see ../shared/bin/README.md)`);
  if (!existsSync(ETCD)) missing.push(`${ETCD} (bash scripts/setup unpacks Debian's etcd-server there)`);
  return missing;
}

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => hash.update(d))
      .on("end", () => resolve(hash.digest("hex")))
      .on("error", reject);
  });
}

/** The programs' paths, unpacking the Kubernetes ones into .cache/ first where needed. */
export async function clusterBinaries(): Promise<ClusterBinaries> {
  const missing = missingClusterBinaries();
  if (missing.length > 0) throw new Error(`the cluster cannot run without:\n${missing.join("\n")}`);
  mkdirSync(CACHE, { recursive: true });
  const kubernetes = {} as Record<KubernetesProgram, string>;
  await Promise.all(
    (Object.keys(SHA256) as KubernetesProgram[]).map(async (name) => {
      const file = join(CACHE, name);
      kubernetes[name] = file;
      if (existsSync(file)) return;
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        // xz -d turns TMP.xz into TMP.
        copyFileSync(join(sharedBinDir(), `${name}-${KUBERNETES_VERSION}.xz`), `${tmp}.xz`);
        await runOk("xz", ["-d", `${tmp}.xz`], { timeoutMs: 120_000 });
        chmodSync(tmp, 0o755);
        const sum = await sha256(tmp);
        if (sum !== SHA256[name])
          throw new Error(`${name}: sha256 ${sum}, ../shared/bin/README.md says ${SHA256[name]}`);
        renameSync(tmp, file);
      } finally {
        rmSync(tmp, { force: true });
        rmSync(`${tmp}.xz`, { force: true });
      }
    }),
  );
  return { kubernetes, etcd: ETCD, flannel: join(sharedBinDir(), FLANNEL) };
}
