#!/usr/bin/env bash
# Benchmarks user-service and order-service on this machine (issue 6).
#
#   bash bench/run.sh            full measurement: BENCH_RUNS runs (default 3), medians
#   bash bench/run.sh --smoke    1 short run on 500 seeded rows; exits non-zero on any
#                                error or a service that does not start (for CI)
#
# Settings (full mode; --smoke fixes runs, duration, warm-up and seed size):
#   BENCH_RUNS=3  BENCH_DURATION=10 (seconds per scenario)  BENCH_WARMUP=2 (seconds)
#   BENCH_CONNECTIONS=32  BENCH_THREADS=2  BENCH_SEED=10000 (users, and as many orders)
#   BENCH_PGPORT=5432  BENCH_PGUSER=postgres  (PostgreSQL on 127.0.0.1, trust auth)
#   BENCH_NATS=127.0.0.1:4222 (NATS with JetStream; a stream of the run's own, deleted at the end)
#   BENCH_SKIP_BUILD=1 (use the binaries already built)  BENCH_KEEP_WORKDIR=1 (keep logs)
#   BENCH_REDIS_URL=redis://127.0.0.1:6379 (the Redis rate-limiter scenario; nats-server is
#   started by the script for the user-cache scenarios)
#   BENCH_RESULTS_DIR=bench/results
#
# Each run: fresh PostgreSQL databases (random names, dropped at the end), both
# services started on them (rate limiter off, info logs to a file) with their
# events flowing through NATS to audit-log-service, seeded through the API,
# then every scenario driven by wrk at fixed duration and
# concurrency, pgbench with the equivalent SQL on the same database, and the
# GET/POST user scenarios again on a fresh SQLite file. bench/bench.py parses,
# aggregates and renders; docs/BENCHMARKS.md explains the figures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$ROOT/scripts/common.sh"
start_script bench 20 "$@"
seconds_of() { # "10", "10s" -> 10
    local v=${1%s}
    [[ $v =~ ^[0-9]+$ ]] || die "expected whole seconds, got '$1'"
    echo "$v"
}

THREADS=${BENCH_THREADS:-2} CONNECTIONS=${BENCH_CONNECTIONS:-32}
if [[ $MODE == smoke ]]; then
    RUNS=1 DURATION=2 WARMUP=0 SEED=500
else
    RUNS=${BENCH_RUNS:-3}
    DURATION=$(seconds_of "${BENCH_DURATION:-10}")
    WARMUP=$(seconds_of "${BENCH_WARMUP:-2}")
    SEED=${BENCH_SEED:-10000}
fi
[[ $RUNS =~ ^[1-9][0-9]*$ && $SEED =~ ^[1-9][0-9]*$ && $THREADS =~ ^[1-9][0-9]*$ &&
    $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS, BENCH_SEED, BENCH_THREADS, BENCH_CONNECTIONS must be positive integers"
((CONNECTIONS >= THREADS)) || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"
((DURATION >= 1)) || die "BENCH_DURATION must be at least 1 second"

# Only ever loopback.
export PGHOST=127.0.0.1 PGPORT=${BENCH_PGPORT:-5432} PGUSER=${BENCH_PGUSER:-postgres}
PG_URL_BASE="postgres://$PGUSER@127.0.0.1:$PGPORT"
NATS_SERVER=${BENCH_NATS:-127.0.0.1:4222}
# The breaker trips when at least half of the calls in its sliding window
# (CIRCUIT_BREAKER_INTERVAL) failed. A short window lets it trip on the first
# failures once user-service is stopped, instead of after as many failures as
# the previous minute had successes; a long timeout keeps it open throughout
# the scenario.
BREAKER_INTERVAL=2   # seconds
BREAKER_TIMEOUT=300  # seconds

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR=${BENCH_RESULTS_DIR:-$BENCH/results}
OUT_BASE=$RESULTS_DIR/$STAMP
[[ $MODE == smoke ]] && OUT_BASE=$RESULTS_DIR/$STAMP-smoke

# ---------------------------------------------------------------------------
# tools

ensure_wrk() {
    command -v wrk >/dev/null 2>&1 && return
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    log "wrk not found: apt-get install -y wrk"
    if ! "${sudo[@]}" apt-get install -y wrk >&2; then
        log "install failed; apt-get update, then retry"
        "${sudo[@]}" apt-get update >&2
        "${sudo[@]}" apt-get install -y wrk >&2
    fi
    command -v wrk >/dev/null 2>&1 || die "wrk is still missing"
}
ensure_wrk
for tool in pgbench psql curl python3 cargo nats-server; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
pg_isready -q -h 127.0.0.1 -p "$PGPORT" 2>/dev/null ||
    psql -qAtc 'select 1' postgres >/dev/null ||
    die "PostgreSQL is not answering on 127.0.0.1:$PGPORT"
(exec 3<>"/dev/tcp/${NATS_SERVER%:*}/${NATS_SERVER##*:}") 2>/dev/null ||
    die "NATS is not answering on $NATS_SERVER (the events go through it)"

# ---------------------------------------------------------------------------
# build

build_start=$SECONDS
build_dist_binaries "$ROOT" "${BENCH_SKIP_BUILD:-0}"
# The floor (issue 17): a bare server with the services' SQL, bench/floor.
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --profile dist -p bench-floor"
    cargo build --profile dist --quiet -p bench-floor
fi
FLOOR_BIN=${USER_BIN%/*}/bench-floor
[[ -x $FLOOR_BIN ]] || die "$FLOOR_BIN not found"

# The yardstick for authentication's cost: GET user on the last build without
# identity (BENCH_BASELINE_REV), measured in the same run on its own database.
# Full mode only (it is one more release build); BENCH_BASELINE_REV= skips it.
BASELINE_REV=${BENCH_BASELINE_REV-16f0678}
BASELINE_BIN=
if [[ $MODE == full && -n $BASELINE_REV ]]; then
    baseline_target=${BENCH_BASELINE_TARGET:-$HOME/.cache/bench-baseline-target}
    # The checkout stays at one path beside its target directory, so that a later
    # run finds the build up to date instead of recompiling the workspace's crates.
    baseline_src=$baseline_target/src-$BASELINE_REV
    if [[ ! -d $baseline_src ]]; then
        mkdir -p "$baseline_target"
        git -C "$ROOT" archive --format=tar --prefix=src/ "$BASELINE_REV" | tar -x -C "$baseline_target" ||
            die "cannot check out BENCH_BASELINE_REV=$BASELINE_REV"
        mv "$baseline_target/src" "$baseline_src"
    fi
    log "building the pre-identity user-service ($BASELINE_REV) into $baseline_target"
    (cd "$baseline_src" && CARGO_TARGET_DIR=$baseline_target cargo build --profile dist --quiet -p user-service) ||
        die "baseline build failed"
    BASELINE_BIN=$baseline_target/dist/user-service
fi
BUILD_SECONDS=$((SECONDS - build_start))

# ---------------------------------------------------------------------------
# state and cleanup

make_run_dir bench
DB_PREFIX=bench_$(random_hex)
declare -A PIDS=()  # service key (user-service@postgres) -> pid
declare -A PEAK=()  # service key -> highest VmHWM seen (KiB)
declare -A URLS=()  # service key -> base URL
DBS=()
STREAMS=()  # JetStream streams of this bench, deleted at the end
HWM_RESET=true

# run_child command...: runs it in the background and waits, so that a signal to
# this script interrupts the wait at once (cleanup then stops the child).
CHILD=
run_child() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

alive() { # pid: running and not a zombie
    [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

proc_kib() { # pid field -> KiB (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

sample_peak() { # key: fold the current VmHWM into PEAK
    local key=$1 pid=${PIDS[$1]:-} v
    [[ -n $pid ]] || return 0
    v=$(proc_kib "$pid" VmHWM)
    [[ -n $v ]] || return 0
    ((v > ${PEAK[$key]:-0})) && PEAK[$key]=$v
    return 0
}

reset_peak() { # key: start a new peak window (VmHWM := VmRSS)
    local pid=${PIDS[$1]}
    sample_peak "$1"
    echo 5 2>/dev/null >"/proc/$pid/clear_refs" || HWM_RESET=false
}

stop_service() { # key
    local key=$1 pid=${PIDS[$1]:-} i
    [[ -n $pid ]] || return 0
    sample_peak "$key"
    [[ -n ${RUN_JSON:-} && ${PEAK[$key]:-0} -gt 0 ]] &&
        py set "$RUN_JSON" "services.$key.peak_rss_kib=${PEAK[$key]}"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do # up to 10 s (SHUTDOWN_TIMEOUT is 5 s)
        alive "$pid" || break
        sleep 0.05
    done
    alive "$pid" && { log "$key (pid $pid) did not stop: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    unset "PIDS[$key]"
}

drop_databases() {
    local db
    for db in "${DBS[@]}"; do
        psql -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" postgres >/dev/null 2>&1 ||
            log "could not drop database $db"
    done
    DBS=()
}

delete_streams() {
    local stream
    for stream in "${STREAMS[@]}"; do
        py nats-delete-stream "$NATS_SERVER" "$stream" || log "could not delete stream $stream"
    done
    STREAMS=()
}

show_logs() {
    local f
    for f in "$WORK"/*.log; do
        [[ -e $f ]] || continue
        log "---- last lines of $(basename "$f")"
        tail -n 15 "$f" >&2 || true
    done
}

# The script's own stdout and stderr, for cleanup: a signal can arrive while a
# redirected command (run_child ... >file) is running.
exec 3>&1 4>&2

cleanup() {
    local rc=$?
    local key
    exec 1>&3 2>&4
    if [[ -n ${CHILD:-} ]]; then kill -TERM "$CHILD" 2>/dev/null || true; fi
    for key in "${!PIDS[@]}"; do stop_service "$key"; done
    drop_databases
    delete_streams
    # On failure (not on Ctrl-C or SIGTERM), the end of each service log still present.
    if ((rc != 0 && rc != 130 && rc != 143)) && [[ -d $WORK ]]; then show_logs; fi
    if [[ ${BENCH_KEEP_WORKDIR:-0} == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# services

create_database() { # name
    psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$1\"" postgres >/dev/null
    DBS+=("$1")
}

# start_service key port binary VAR=value... : spawn with only these variables
# (plus PATH and HOME), time it to a passing /health/ready, record idle RSS.
start_service() {
    local key=$1 port=$2 bin=$3 out pid ms idle
    shift 3
    if ! out=$(launch_service "$WORK/r$RUN-$key.log" "$port" 60 "$bin" "$@"); then
        die "$key failed to start (log: r$RUN-$key.log)"
    fi
    read -r pid ms <<<"$out"
    PIDS[$key]=$pid
    PEAK[$key]=0
    URLS[$key]=http://127.0.0.1:$port
    sleep 0.3 # let start-up work settle; no requests yet
    idle=$(proc_kib "$pid" VmRSS)
    py set "$RUN_JSON" "services.$key.start_to_ready_ms=$ms" "services.$key.idle_rss_kib=$idle" \
        "services.$key.pid=$pid"
    log "$key ready in $ms ms (pid $pid, idle RSS $((idle / 1024)) MiB)"
}

common_env() { # PREFIX port database-url
    echo "$1_HOST=127.0.0.1" "$1_PORT=$2" "$1_DATABASE_URL=$3" "$1_RATE_LIMIT=0" \
        "$1_LOG_LEVEL=info" "$1_SHUTDOWN_TIMEOUT=5" "${AUTH_ENV[@]}"
}

# events_env run: the run's own stream and subjects on the bench's NATS, the
# same for every service of the run (they publish to and consume from it).
events_env() {
    local stream=BENCH_${DB_PREFIX#bench_}_R$1
    echo "NATS_URL=nats://$NATS_SERVER" "NATS_STREAM=$stream" "NATS_SUBJECT_PREFIX=bench.${DB_PREFIX#bench_}.r$1"
}

# drain_events: waits until the audit log holds every event published so far,
# and records how many there were.
drain_events() {
    local out published stored ms
    out=$(py drain-events --audit "${URLS[audit-log-service@postgres]}" \
        "${URLS[user-service@postgres]}" "${URLS[order-service@postgres]}") ||
        die "events did not reach the audit log (see the services' logs)"
    read -r published stored ms <<<"$out"
    py set "$RUN_JSON" "events.published=$published" "events.stored=$stored" "events.drain_ms=$ms"
    log "events: $published published, $stored in the audit log ($ms ms after the last scenario)"
}

# settle_events: while audit-log-service runs, waits until the events written so
# far are relayed and stored, so that a scenario (or pgbench) does not share the
# machine with the backlog the previous one left (the seeding's 20,000 events
# before GET user, POST user's before pgbench's insert).
settle_events() {
    [[ -n ${PIDS[audit-log-service@postgres]:-} ]] || return 0
    py drain-events --audit "${URLS[audit-log-service@postgres]}" \
        "${URLS[user-service@postgres]}" "${URLS[order-service@postgres]}" >/dev/null ||
        die "events did not reach the audit log (see the services' logs)"
}

circuit() { py get-json "${URLS[order-service@postgres]}/health" info.user_service_circuit; }

# seed kind count base-url backend [users]: POSTs through the API with curl -Z,
# then checks every answer was 201 and the list endpoint's meta.total_count.
seed() {
    local kind=$1 count=$2 base=$3 backend=$4 users=${5:-1} cfg codes start created total ms
    cfg=$WORK/seed-$kind.cfg codes=$WORK/seed-$kind.codes
    py seed-config --kind "$kind" --count "$count" --users "$users" --base "$base" --out "$cfg"
    start=$(date +%s%N)
    run_child timeout 600 curl -sS -Z --parallel-max 16 -K "$cfg" >"$codes" 2>"$codes.err" || true
    ms=$((($(date +%s%N) - start) / 1000000))
    created=$(grep -c '^201$' "$codes" || true)
    if [[ $created != "$count" ]]; then
        log "seeding $kind: $created of $count created; answers:"
        sort "$codes" | uniq -c >&2
        sort "$codes.err" | uniq -c | sort -rn | head -n 5 >&2
        die "seeding $kind failed"
    fi
    # The last page's count is exact (above 1,000 rows page 1 only gives a lower bound).
    total=$(py get-json "$base/api/v1/$kind?page_size=1&page=$count" meta.total_count)
    [[ $total == "$count" ]] || die "seeding $kind: meta.total_count is $total, expected $count"
    py set "$RUN_JSON" "seed.$backend.$kind=$count" "seed.$backend.${kind}_ms=$ms"
    log "seeded $count $kind on $backend in $ms ms (meta.total_count = $total)"
}

# ---------------------------------------------------------------------------
# load

# run_wrk scenario base-url script "svc1 svc2" [script args...]
# Warm-up (BENCH_WARMUP s), then the measured run; the script gets the phase
# (w or m) as its last argument. EXTRA (array) adds fields to the record.
run_wrk() {
    local scenario=$1 url=$2 script=$BENCH/lua/$3 svcs=$4 svc fields=() logf
    shift 4
    settle_events
    for svc in $svcs; do reset_peak "$svc"; done
    fields+=("loadavg_1m=$(cut -d' ' -f1 /proc/loadavg)")
    if ((WARMUP > 0)); then
        run_child timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s \
            -s "$script" "$url" -- "$@" w >"$WORK/r$RUN-$scenario.warmup.out" 2>&1 ||
            log "$scenario: warm-up wrk exited non-zero"
    fi
    logf=$WORK/r$RUN-$scenario.out
    run_child timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
        -s "$script" "$url" -- "$@" m >"$logf" 2>&1 || log "$scenario: wrk exited non-zero"
    for svc in $svcs; do
        fields+=("peak_rss_kib.${svc%@*}=$(proc_kib "${PIDS[$svc]}" VmHWM)")
        sample_peak "$svc"
    done
    py wrk-record "$RUN_JSON" "$scenario" "$logf" "${fields[@]}" "${EXTRA[@]}"
}

# The transport pgbench must use to be compared fairly: the one the service's
# own pool uses. libpq's default (sslmode=prefer) negotiates TLS when the server
# offers it, while a service built without a TLS feature connects in plain text;
# on this machine TLS alone costs pgbench about a quarter of its select TPS.
# Sets PGBENCH_SSLMODE to require or disable.
match_service_transport() { # database application_name
    local tls
    tls=$(psql -qXAt -c "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s
        JOIN pg_stat_activity a USING (pid) WHERE a.datname = '$1' AND a.application_name = '$2'" postgres)
    if [[ $tls == t ]]; then PGBENCH_SSLMODE=require; else PGBENCH_SSLMODE=disable; fi
    py set "$RUN_JSON" "service_db_tls=$([[ $tls == t ]] && echo true || echo false)" \
        "pgbench_sslmode=$PGBENCH_SSLMODE"
}
PGBENCH_SSLMODE=disable

# run_pgbench scenario database sql-file [pgbench -D options...]
run_pgbench() {
    local scenario=$1 db=$2 sql=$BENCH/sql/$3 rc=0 logf
    shift 3
    settle_events
    local base=(env PGSSLMODE="$PGBENCH_SSLMODE" pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" "$@" -f "$sql")
    if ((WARMUP > 0)); then
        run_child timeout $((WARMUP + 60)) "${base[@]}" -T "$WARMUP" -D tag="r${RUN}w" "$db" \
            >"$WORK/r$RUN-$scenario.warmup.out" 2>&1 || log "$scenario: warm-up pgbench exited non-zero"
    fi
    logf=$WORK/r$RUN-$scenario.out
    run_child timeout $((DURATION + 60)) "${base[@]}" -T "$DURATION" -D tag="r${RUN}m" "$db" >"$logf" 2>&1 || rc=$?
    ((rc == 0)) || { log "$scenario: pgbench exited $rc:"; tail -n 5 "$logf" >&2; }
    py pgbench-record "$RUN_JSON" "$scenario" "$logf" "$rc" "loadavg_1m=$(cut -d' ' -f1 /proc/loadavg)"
}

# With user-service stopped: let the successes leave the breaker's window, then
# POST orders (each still answered 201, unverified) until the breaker reports
# open; at most 20. Prints the status codes.
open_breaker() {
    local i
    sleep "$((BREAKER_INTERVAL + 1))"
    for ((i = 0; i < 20; i++)); do
        curl -s -o /dev/null -w '%{http_code} ' --max-time 5 -H 'Content-Type: application/json' \
            -H "Authorization: Bearer $BENCH_TOKEN" \
            -d '{"user_id":1,"product_id":"SKU-1","quantity":1,"total_price":9.99}' \
            "${URLS[order-service@postgres]}/api/v1/orders" || true
        [[ $(circuit 2>/dev/null) == open ]] && break
    done
}

# Many replicas (issue 16), each pair from instances of its own over this run's
# databases, so that the scenarios above keep their settings:
# - POST order for 100 users with order-service's user cache off
#   (ORDER_SERVICE_USER_CACHE_TTL=0) and warm; the cache is trusted only while
#   user events arrive, so both run with a throwaway nats-server of this run's own;
# - GET user with the rate limiter on (a rate nothing reaches) in-process and in
#   Redis (BENCH_REDIS_URL, default the machine's; keys under a prefix of this run).
replica_scenarios() { # user-db order-db
    local udb=$1 odb=$2 port variant key ttl nport extra
    nport=$(py free-port)
    nats-server -a 127.0.0.1 -p "$nport" -js -sd "$WORK/r$RUN-nats" >"$WORK/r$RUN-nats.log" 2>&1 &
    PIDS[nats]=$!
    for variant in off warm; do
        key=order-service@cache-$variant ttl=0
        [[ $variant == warm ]] && ttl=300
        port=$(py free-port)
        # shellcheck disable=SC2046
        start_service "$key" "$port" "$ORDER_BIN" $(common_env ORDER_SERVICE "$port" "$PG_URL_BASE/$odb") \
            "ORDER_SERVICE_USER_SERVICE_URL=${URLS[user-service@postgres]}" "ORDER_SERVICE_USER_CACHE_TTL=$ttl" \
            "NATS_URL=nats://127.0.0.1:$nport"
        run_wrk "pg_post_order_cache_$variant" "${URLS[$key]}" post_order.lua "user-service@postgres $key" 100
        stop_service "$key"
    done
    stop_service nats
    for variant in local redis; do
        key=user-service@limiter-$variant extra=()
        [[ $variant == redis ]] && extra=("REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
            "USER_SERVICE_RATE_LIMIT_REDIS_PREFIX=bench:$DB_PREFIX:r$RUN:")
        port=$(py free-port)
        # shellcheck disable=SC2046
        start_service "$key" "$port" "$USER_BIN" $(common_env USER_SERVICE "$port" "$PG_URL_BASE/$udb") \
            "USER_SERVICE_RATE_LIMIT=1000000" "${extra[@]}"
        run_wrk "pg_get_user_limiter_$variant" "${URLS[$key]}" get_by_id.lua "$key" "$SEED" /api/v1/users/
        stop_service "$key"
    done
}

# ---------------------------------------------------------------------------
# one run

one_run() {
    RUN_JSON=$WORK/run-$RUN.json
    py set "$RUN_JSON" "run=$RUN" "loadavg_start=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
    local udb=${DB_PREFIX}_r${RUN}_users odb=${DB_PREFIX}_r${RUN}_orders adb=${DB_PREFIX}_r${RUN}_audit
    local U=user-service@postgres O=order-service@postgres A=audit-log-service@postgres S=user-service@sqlite
    local uport oport aport sport events
    EXTRA=()

    # --- PostgreSQL, events through NATS to the audit log
    create_database "$udb"
    create_database "$odb"
    create_database "$adb"
    events=$(events_env "$RUN")
    STREAMS+=("$(sed 's/.*NATS_STREAM=\([^ ]*\).*/\1/' <<<"$events")")
    uport=$(py free-port)
    # shellcheck disable=SC2046 # common_env's words are VAR=value pairs without spaces
    start_service "$U" "$uport" "$USER_BIN" $(common_env USER_SERVICE "$uport" "$PG_URL_BASE/$udb") $events
    oport=$(py free-port)
    # shellcheck disable=SC2046
    start_service "$O" "$oport" "$ORDER_BIN" $(common_env ORDER_SERVICE "$oport" "$PG_URL_BASE/$odb") $events \
        "ORDER_SERVICE_USER_SERVICE_URL=${URLS[$U]}" "CIRCUIT_BREAKER_TIMEOUT=$BREAKER_TIMEOUT" "CIRCUIT_BREAKER_INTERVAL=$BREAKER_INTERVAL"
    aport=$(py free-port)
    # shellcheck disable=SC2046
    start_service "$A" "$aport" "$AUDIT_BIN" $(common_env AUDIT_LOG_SERVICE "$aport" "$PG_URL_BASE/$adb") $events \
        "AUDIT_LOG_SERVICE_USER_SERVICE_URL=${URLS[$U]}"

    # Every scenario acts as the operator (an admin), reusing one token as a
    # client does for its lifetime.
    BENCH_TOKEN=$(admin_token "${URLS[$U]}") || die "no admin token from user-service"
    export BENCH_TOKEN
    seed users "$SEED" "${URLS[$U]}" postgres
    seed orders "$SEED" "${URLS[$O]}" postgres "$SEED"
    sample_peak "$U"
    sample_peak "$O"

    log "run $RUN/$RUNS: PostgreSQL scenarios (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, warm-up ${WARMUP}s)"
    run_wrk pg_get_user "${URLS[$U]}" get_by_id.lua "$U" "$SEED" /api/v1/users/
    match_service_transport "$udb" user-service
    run_pgbench pgbench_select "$udb" select_user.sql -D users="$SEED"
    run_wrk pg_list_users "${URLS[$U]}" list_users.lua "$U"
    run_wrk pg_post_user "${URLS[$U]}" post_user.lua "$U" "r$RUN"
    run_pgbench pgbench_insert "$udb" insert_user.sql -D n=0
    run_wrk pg_get_order "${URLS[$O]}" get_by_id.lua "$U $O" "$SEED" /api/v1/orders/

    EXTRA=("breaker_before=$(circuit)")
    run_wrk pg_post_order "${URLS[$O]}" post_order.lua "$U $O" "$SEED"
    py set "$RUN_JSON" "scenarios.pg_post_order.breaker_after=$(circuit)"
    drain_events
    stop_service "$A"
    EXTRA=()
    replica_scenarios "$udb" "$odb"

    # user-service away: the first calls fail (connection refused) and open the
    # breaker, which stays open for BREAKER_TIMEOUT s; orders are still created.
    stop_service "$U"
    log "user-service stopped; opening the breaker: $(open_breaker)"
    EXTRA=("breaker_before=$(circuit)")
    [[ ${EXTRA[0]} == breaker_before=open ]] || log "WARNING: breaker is ${EXTRA[0]#*=}, expected open"
    run_wrk pg_post_order_breaker_open "${URLS[$O]}" post_order.lua "$O" "$SEED"
    py set "$RUN_JSON" "scenarios.pg_post_order_breaker_open.breaker_after=$(circuit)"
    EXTRA=()
    stop_service "$O"

    # --- the floor on the same databases: the same routes, SQL and JSON, no plumbing
    local F=floor@postgres fport
    fport=$(py free-port)
    start_service "$F" "$fport" "$FLOOR_BIN" "FLOOR_PORT=$fport" \
        "FLOOR_USER_DATABASE_URL=$PG_URL_BASE/$udb" "FLOOR_ORDER_DATABASE_URL=$PG_URL_BASE/$odb"
    run_wrk floor_get_user "${URLS[$F]}" get_by_id.lua "$F" "$SEED" /api/v1/users/
    run_wrk floor_post_user "${URLS[$F]}" post_user.lua "$F" "r${RUN}f"
    run_wrk floor_get_order "${URLS[$F]}" get_by_id.lua "$F" "$SEED" /api/v1/orders/
    stop_service "$F"
    drop_databases

    # --- the pre-identity build, unauthenticated (full mode)
    if [[ -n $BASELINE_BIN ]]; then
        local B=user-service@baseline bport token=$BENCH_TOKEN
        create_database "${DB_PREFIX}_r${RUN}_baseline"
        bport=$(py free-port)
        # shellcheck disable=SC2046
        start_service "$B" "$bport" "$BASELINE_BIN" $(common_env USER_SERVICE "$bport" "$PG_URL_BASE/${DB_PREFIX}_r${RUN}_baseline")
        BENCH_TOKEN=
        seed users "$SEED" "${URLS[$B]}" baseline
        run_wrk pg_get_user_unauthenticated "${URLS[$B]}" get_by_id.lua "$B" "$SEED" /api/v1/users/
        BENCH_TOKEN=$token
        stop_service "$B"
        drop_databases
    fi

    # --- SQLite (fresh file)
    sport=$(py free-port)
    # shellcheck disable=SC2046
    start_service "$S" "$sport" "$USER_BIN" $(common_env USER_SERVICE "$sport" "sqlite:$WORK/r$RUN-users.db")
    BENCH_TOKEN=$(admin_token "${URLS[$S]}") || die "no admin token from user-service"
    seed users "$SEED" "${URLS[$S]}" sqlite
    sample_peak "$S"
    log "run $RUN/$RUNS: SQLite scenarios"
    run_wrk sqlite_get_user "${URLS[$S]}" get_by_id.lua "$S" "$SEED" /api/v1/users/
    run_wrk sqlite_post_user "${URLS[$S]}" post_user.lua "$S" "r${RUN}s"
    stop_service "$S"
    rm -f "$WORK/r$RUN-users.db"*

    py set "$RUN_JSON" "loadavg_end=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
    # Service logs can reach hundreds of MiB per run; keep them only when asked.
    [[ ${BENCH_KEEP_WORKDIR:-0} == 1 ]] || rm -f "$WORK"/r"$RUN"-*.log
}

# ---------------------------------------------------------------------------
# machine facts, runs, report

MACHINE=$WORK/machine.json
git_commit() {
    local c
    c=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; return; }
    if ! GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" diff --quiet HEAD -- Cargo.toml Cargo.lock src crates services 2>/dev/null; then
        c="$c (service sources differ from this commit)"
    fi
    echo "$c"
}
mem_kib=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
py set "$MACHINE" \
    "nproc=$(nproc)" \
    "cpu_model=\"$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)\"" \
    "memory=\"$(awk -v k="$mem_kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }')\"" \
    "kernel=\"$(uname -sr) $(uname -m)\"" \
    "postgres_version=\"$(psql -qXAtc 'show server_version' postgres)\"" \
    "wrk_version=\"$({ wrk -v 2>&1 || true; } | head -n 1)\"" \
    "pgbench_version=\"$(pgbench --version)\"" \
    "rustc_version=\"$(rustc --version 2>/dev/null || echo unknown)\"" \
    "git_commit=\"$(git_commit)\"" \
    "postgres_settings=\"$(psql -qXAt -F= -R', ' -c "SELECT name, current_setting(name)
        FROM pg_settings WHERE name IN ('shared_buffers', 'max_connections', 'fsync', 'synchronous_commit',
        'autovacuum', 'ssl') ORDER BY name" postgres)\"" \
    "settings.mode=$MODE" "settings.runs=$RUNS" "settings.threads=$THREADS" \
    "settings.connections=$CONNECTIONS" "settings.duration_s=$DURATION" "settings.warmup_s=$WARMUP" \
    "settings.seed_users=$SEED" "settings.seed_orders=$SEED" \
    "settings.circuit_breaker_timeout_s=$BREAKER_TIMEOUT" \
    "settings.circuit_breaker_interval_s=$BREAKER_INTERVAL" "settings.build_seconds=$BUILD_SECONDS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log "$MODE mode: $RUNS run(s); uptime:$(uptime | sed 's/.*load/ load/')"
bench_start=$SECONDS
RUN_FILES=()
for ((RUN = 1; RUN <= RUNS; RUN++)); do
    log "=== run $RUN/$RUNS"
    one_run
    RUN_FILES+=("$WORK/run-$RUN.json")
done
py set "$MACHINE" "loadavg=\"$LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)\"" \
    "settings.hwm_reset=$HWM_RESET" "settings.measure_seconds=$((SECONDS - bench_start))"

mkdir -p "$RESULTS_DIR"
report_rc=0
py report --mode "$MODE" --stamp "$STAMP" --machine "$MACHINE" --out-base "$OUT_BASE" "${RUN_FILES[@]}" ||
    report_rc=$?
log "measurement took $((SECONDS - bench_start)) s (build $BUILD_SECONDS s)"
log "results: ${OUT_BASE#"$ROOT"/}.json and .md"
case $report_rc in
    0) ;;
    3) die "some scenarios had errors (see the errors column; BENCH_KEEP_WORKDIR=1 keeps the service logs)" ;;
    *) die "report failed ($report_rc)" ;;
esac
