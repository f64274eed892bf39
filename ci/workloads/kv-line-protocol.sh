#!/usr/bin/env bash
# An example `harness chaos --workload` (the contract is in the doc comment
# of harness/src/chaos/service.rs), for a service that speaks the fake
# peer's line protocol: `PUT k v` -> `OK <seq>`, `GET k` -> `VALUE v`.
#
#   cargo run --release -p harness -- chaos --service target/release/fake-peer \
#       --workload ci/workloads/kv-line-protocol.sh
#
# CHAOS_PHASE=write: PUT until SIGTERM, reconnecting whenever the connection
#   ends (a handoff, a kill); every acknowledged write is appended to
#   $CHAOS_STATE_DIR/acked. Exits 1 if a connection was ever refused (the
#   listener must be held throughout), else 0.
# CHAOS_PHASE=verify: GET every acknowledged key; exit 0 if each returns its
#   value, else 1 naming the first lost write.
set -u
host="${CHAOS_ADDR%:*}"
port="${CHAOS_ADDR##*:}"
state="$CHAOS_STATE_DIR"

case "$CHAOS_PHASE" in
write)
    stop=0
    trap 'stop=1' TERM
    i=0
    refused=0
    : > "$state/acked"
    while [ "$stop" = 0 ]; do
        if ! { exec 3<>"/dev/tcp/$host/$port"; } 2> "$state/connect.err"; then
            if grep -q -i refused "$state/connect.err"; then
                refused=$((refused + 1))
            fi
            sleep 0.01 # back-off before reconnecting: pacing, not a wait
            continue
        fi
        while [ "$stop" = 0 ]; do
            printf 'PUT w%d v%d\n' "$i" "$i" >&3 2> /dev/null || break
            read -r -t 10 reply <&3 || break
            case "$reply" in
            OK*)
                echo "w$i v$i" >> "$state/acked"
                i=$((i + 1))
                ;;
            *) break ;; # ERR (sealed for a handoff): reconnect and retry
            esac
        done
        exec 3<&- 3>&-
    done
    echo "write phase: $i acknowledged writes, $refused refused connects"
    [ "$refused" = 0 ]
    ;;
verify)
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    n=0
    while read -r key value; do
        printf 'GET %s\n' "$key" >&3
        read -r -t 10 reply <&3 || { echo "no reply to GET $key"; exit 1; }
        if [ "$reply" != "VALUE $value" ]; then
            echo "lost acknowledged write $key=$value: GET answered '$reply'"
            exit 1
        fi
        n=$((n + 1))
    done < "$state/acked"
    echo "verified $n acknowledged writes"
    ;;
*)
    echo "unknown CHAOS_PHASE=${CHAOS_PHASE:-}" >&2
    exit 2
    ;;
esac
