// What a node has on it besides the cluster's daemons: the files kube-flannel and flanneld leave, and the
// machine's kernel settings the node must not change.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, SYSTEM_CNI_DIR } from "../paths.js";
import type { ClusterBinaries } from "./binaries.js";

const FLANNEL_CONFLIST = join(REPO_ROOT, "test/fixtures/flannel/cni-conf.json");

/** What kube-flannel's DaemonSet and flanneld leave on a node: the flannel plugin, the conflist, the subnet file. */
export function layOutNode(
  nodePath: (p: string) => string,
  binaries: ClusterBinaries,
  subnet: { network: string; subnet: string },
): void {
  copyFileSync(binaries.flannel, nodePath("/opt/cni/bin/flannel"));
  // flannel delegates to bridge and host-local; portmap is the conflist's second plugin (Debian's, 1.1.1).
  for (const plugin of ["bridge", "host-local", "portmap", "loopback"])
    copyFileSync(join(SYSTEM_CNI_DIR, plugin), nodePath(`/opt/cni/bin/${plugin}`));
  copyFileSync(FLANNEL_CONFLIST, nodePath("/etc/cni/net.d/10-flannel.conflist"));
  mkdirSync(nodePath("/run/flannel"));
  writeFileSync(
    nodePath("/run/flannel/subnet.env"),
    `FLANNEL_NETWORK=${subnet.network}\nFLANNEL_SUBNET=${subnet.subnet}\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n`,
  );
}

/** The machine's sysctls kubelet and kube-proxy would write: stop() checks they are as they were. */
export function hostKernelSettings(): Record<string, string> {
  const keys = [
    ...["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops"],
    ...["kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/netfilter/nf_conntrack_max"],
    ...["net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait"],
  ];
  return Object.fromEntries(
    keys.map((key) => {
      try {
        return [key, readFileSync(`/proc/sys/${key}`, "utf8").trim()];
      } catch {
        return [key, "(absent)"];
      }
    }),
  );
}
