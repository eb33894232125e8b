#!/bin/bash
# Stands in the CNI bin dir as portmap-hostip: records what the runtime sends (stdin, CNI_* and PATH) and
# what the real plugin ($0.real) answers into $0.records/, then answers the same. Bash builtins only: the
# runtime's PATH may hold nothing else.
stdin=$(</dev/stdin)
record="${0}.records/${EPOCHREALTIME/./}-$$-${CNI_COMMAND:-none}"
printf '%s' "$stdin" >"$record.stdin"
for name in ${!CNI_@} PATH; do printf '%s=%s\n' "$name" "${!name}"; done >"$record.env"
stdout=$(printf '%s' "$stdin" | "${0}.real")
code=$?
printf '%s' "$stdout" >"$record.stdout"
printf '%s\n' "$code" >"$record.code"
printf '%s\n' "$stdout"
exit "$code"
