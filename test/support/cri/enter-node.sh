#!/bin/bash
# Runs as `ip netns exec NODE enter-node.sh FSTYPE OPTIONS TARGET … -- COMMAND…`: `ip netns exec` gave us a
# private mount namespace whose fresh /sys hides the cgroup filesystems runc needs; mount them again (they
# vanish with this mount namespace), then become COMMAND. A triple `bind SOURCE TARGET` bind-mounts SOURCE on
# an existing TARGET, in this mount namespace only. Absolute paths: PATH is the plugins' PATH.
set -eu
/usr/bin/mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
while [ "$1" != "--" ]; do
  if [ "$1" = bind ]; then
    /usr/bin/mount --bind "$2" "$3"
  else
    /usr/bin/mkdir -p "$3"
    /usr/bin/mount -t "$1" -o "$2" "$1" "$3"
  fi
  shift 3
done
shift
exec "$@"
