#!/usr/bin/env bash
# Where a POST user's CPU time goes (issues 14 and 17): user-service (its relay
# included), audit-log-service, nats-server, PostgreSQL's processes and wrk,
# in microseconds of CPU per answered request, from /proc/<pid>/stat during one
# wrk run; plus the outbox backlog when the run ends (events written but not
# yet published: a relay that falls behind defers work past the measurement).
#
#   bash bench/cpu_split.sh          one 10 s run after a 2 s warm-up
#   bash bench/cpu_split.sh --smoke  one 3 s run (harness check)
#
# Settings: BENCH_DURATION=10 BENCH_CONNECTIONS=32 BENCH_THREADS=2
#   BENCH_NATS=127.0.0.1:4222 BENCH_PGPORT=5432 BENCH_PGUSER=postgres
#   BENCH_SKIP_BUILD=1 (use the dist binaries already built)
#
# Fresh databases and a NATS stream of the run's own, removed at the end.
# nats-server and PostgreSQL are the machine's: their figures include whatever
# else they serve meanwhile, so run it on an otherwise idle machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$ROOT/scripts/common.sh"
start_script cpu-split 18 "$@"

THREADS=${BENCH_THREADS:-2} CONNECTIONS=${BENCH_CONNECTIONS:-32}
if [[ $MODE == smoke ]]; then DURATION=3 WARMUP=1; else DURATION=${BENCH_DURATION:-10} WARMUP=2; fi
((DURATION >= 3)) || die "BENCH_DURATION must be at least 3 seconds"
for tool in wrk psql curl python3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
export PGHOST=127.0.0.1 PGPORT=${BENCH_PGPORT:-5432} PGUSER=${BENCH_PGUSER:-postgres}
NATS_SERVER=${BENCH_NATS:-127.0.0.1:4222}
NATS_PID=$(pgrep -x nats-server | head -n 1) || die "no nats-server runs on this machine"
build_dist_binaries "$ROOT" "${BENCH_SKIP_BUILD:-0}"

RUN_ID=cpu_split_$(random_hex) WORK=
PIDS=()
cleanup() {
    local rc=$?
    stop_processes "${PIDS[@]}"
    sleep 0.5
    drop_databases "${RUN_ID}_users" "${RUN_ID}_audit"
    py nats-delete-stream "$NATS_SERVER" "${RUN_ID^^}" || log "could not delete stream ${RUN_ID^^}"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
make_run_dir cpu-split

for db in "${RUN_ID}_users" "${RUN_ID}_audit"; do
    psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" postgres >/dev/null
done
EVENTS=("NATS_URL=nats://$NATS_SERVER" "NATS_STREAM=${RUN_ID^^}" "NATS_SUBJECT_PREFIX=$RUN_ID")
# launch PREFIX BINARY VAR=value...: starts a service on a free port with only
# these variables (launch_service); sets LAUNCHED_PID and LAUNCHED_URL.
launch() {
    local prefix=$1 bin=$2 port out ms
    shift 2
    port=$(py free-port)
    out=$(launch_service "$WORK/$prefix.log" "$port" 30 "$bin" "${AUTH_ENV[@]}" "${EVENTS[@]}" "$@" \
        "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" "${prefix}_RATE_LIMIT=0" "${prefix}_LOG_LEVEL=info") ||
        die "$bin did not get ready (log: $WORK/$prefix.log)"
    read -r LAUNCHED_PID ms <<<"$out"
    PIDS+=("$LAUNCHED_PID")
    LAUNCHED_URL=http://127.0.0.1:$port
    log "$prefix ready in $ms ms"
}
launch USER_SERVICE "$USER_BIN" "USER_SERVICE_DATABASE_URL=postgres://$PGUSER@127.0.0.1:$PGPORT/${RUN_ID}_users"
USER_PID=$LAUNCHED_PID URL=$LAUNCHED_URL
launch AUDIT_LOG_SERVICE "$AUDIT_BIN" \
    "AUDIT_LOG_SERVICE_DATABASE_URL=postgres://$PGUSER@127.0.0.1:$PGPORT/${RUN_ID}_audit" \
    "AUDIT_LOG_SERVICE_USER_SERVICE_URL=$URL"
AUDIT_PID=$LAUNCHED_PID
BENCH_TOKEN=$(admin_token "$URL") || die "no admin token from user-service"
export BENCH_TOKEN

wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH/lua/post_user.lua" "$URL" -- "$RUN_ID" w >/dev/null

ticks() { # pid... -> their user + system clock ticks, summed
    local pid sum=0 stat
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # utime and stime: fields 14 and 15, the 12th and 13th after "(comm) ".
        sum=$((sum + $(awk '{print $12 + $13}' <<<"${stat##*) }")))
    done
    echo "$sum"
}
snapshot() { # one line: per-process ticks, then the machine's busy and total ticks
    local cpu
    read -ra cpu < <(head -n 1 /proc/stat)
    # shellcheck disable=SC2046 # one word per process id
    echo "$(ticks "$USER_PID") $(ticks "$AUDIT_PID") $(ticks "$NATS_PID") $(ticks $(pgrep -x postgres))" \
        "$(ticks "$WRK_PID") $((cpu[1] + cpu[2] + cpu[3] + cpu[6] + cpu[7]))" \
        "$((cpu[1] + cpu[2] + cpu[3] + cpu[4] + cpu[5] + cpu[6] + cpu[7]))"
}
log "POST user: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s after a ${WARMUP}s warm-up"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$BENCH/lua/post_user.lua" "$URL" -- "$RUN_ID" m \
    >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
# Counted over the run's middle: from half a second in to a second and a half
# before the end (a snapshot takes a while; wrk must still be there).
sleep 0.5
read -ra before < <(snapshot)
sleep "$((DURATION - 2))"
read -ra after < <(snapshot)
wait "$WRK_PID" || die "wrk failed: $(tail -n 3 "$WORK/wrk.out")"
backlog=$(psql -qXAt -c "SELECT count(*) FROM outbox WHERE published_at IS NULL" "${RUN_ID}_users")
rate=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.out")
errors=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.out")
[[ -z $errors ]] || die "wrk saw errors: $errors"

hz=$(getconf CLK_TCK)
python3 - "$rate" "$((DURATION - 2))" "$hz" "$backlog" "${before[@]}" "${after[@]}" <<'EOF'
import sys
rate, seconds, hz, backlog = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
values = [int(v) for v in sys.argv[5:]]
before, after = values[:7], values[7:]
requests = rate * seconds
names = ["user-service (relay included)", "audit-log-service", "nats-server", "postgres (all processes)", "wrk"]
print(f"POST user: {rate:,.0f} req/s; outbox backlog at the end: {backlog} events")
print("| process | CPU µs per request |")
print("|---|--:|")
for name, b, a in zip(names, before, after):
    print(f"| {name} | {(a - b) / hz * 1e6 / requests:.1f} |")
busy, total = after[5] - before[5], after[6] - before[6]
print(f"| machine, busy (all CPUs) | {busy / hz * 1e6 / requests:.1f} |")
print(f"machine busy {100 * busy / max(total, 1):.0f}% of the time")
EOF
