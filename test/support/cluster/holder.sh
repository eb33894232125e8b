#!/bin/bash
# The node's PID 1: started as `nsenter --net=NODE unshare --mount --pid --fork --kill-child --mount-proc
# --propagation slave holder.sh DIR`, it gives the node its own filesystem where a node has its own, prints
# "ready", then reaps orphans until killed. Every daemon of the node is entered into its namespaces
# (nsenter -t PID -m -n -p), so killing it ends them all, with the pods, and its mounts go with it.
set -euo pipefail
dir=$1
# /run: pod network namespaces, shim sockets, the xtables lock, flannel's subnet file, the plugin's records.
mount -t tmpfs -o mode=755 tmpfs /run
# /var/lib and /var/log: kubelet's hard-coded paths, containerd's libcni cache (/var/lib/cni).
mkdir -p "$dir/var-lib" "$dir/var-log"
mount --bind "$dir/var-lib" /var/lib
mount --bind "$dir/var-log" /var/log
# The CNI directories, where a DaemonSet's hostPath volumes find them: /opt a tmpfs, /etc an overlay whose
# writes land in DIR/etc-upper (the machine has neither /etc/cni nor /opt/cni).
mount -t tmpfs -o mode=755 tmpfs /opt
mkdir -p "$dir/etc-upper" "$dir/etc-work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$dir/etc-upper,workdir=$dir/etc-work" /etc
mkdir -p /opt/cni/bin /etc/cni/net.d
# kubelet writes these host-wide sysctls at start: files holding the current values take its writes here.
mkdir -p "$dir/sysctl"
for key in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys \
  kernel/keys/root_maxbytes; do
  file="$dir/sysctl/${key//\//.}"
  cat "/proc/sys/$key" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done
echo ready
while :; do
  sleep 3600 &
  wait $! || true
done
