# Sourced by scripts/demo and bench/run: tags this run's network namespaces and temporary directories
# (pmh-<tag>-*) and removes whatever a killed run leaves of them. The run removes them itself otherwise.
export PMH_NETNS_TAG="$1$$"
sweep() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^pmh-${PMH_NETNS_TAG}-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "${TMPDIR:-/tmp}/pmh-${PMH_NETNS_TAG}-"*
}
trap sweep EXIT
trap 'exit 130' INT TERM
