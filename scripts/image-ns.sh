#!/bin/bash
# Runs as `unshare --mount [--user] --propagation private image-ns.sh DIR [--userns] [--emulate-arm64]
# [--private-var] -- COMMAND…` (scripts/build-image.mjs): sets up the private mount namespace, then becomes
# COMMAND. Nothing here outlives it.
#   --userns         wait for one line on stdin: the parent has mapped our user IDs by then.
#   --emulate-arm64  a binfmt_misc instance of this user namespace only (Linux ≥ 6.7) with Debian's own
#                    qemu-aarch64 registration: arm64 programs run under qemu here, and the machine's binfmt
#                    settings stay as they are.
#   --private-var    DIR's var-lib and var-cache over /var/lib and /var/cache: buildah keeps a blob-info cache
#                    in /var/lib/containers and a lock in /var/cache/containers whatever --root says.
set -euo pipefail
dir=$1
shift
while [ "$1" != "--" ]; do
  case $1 in
    --userns) read -r _ ;;
    --emulate-arm64)
      mkdir -p "$dir/binfmt"
      mount -t binfmt_misc binfmt_misc "$dir/binfmt"
      cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$dir/binfmt/register"
      ;;
    --private-var)
      mkdir -p "$dir/var-lib" "$dir/var-cache"
      mount --bind "$dir/var-lib" /var/lib
      mount --bind "$dir/var-cache" /var/cache
      ;;
    *) echo "image-ns.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
shift
exec "$@"
