#!/usr/bin/env bash
# The cost of distributed tracing (issue 15): GET user and POST order (which
# calls user-service) with spans exported over OTLP/HTTP at sampling ratio 1.0
# and 0.1, each as a ratio to the same scenario with tracing off, in one run.
#
#   bash bench/tracing.sh            BENCH_RUNS rounds (default 3) of off / 1.0 / 0.1
#   bash bench/tracing.sh --smoke    one short round (harness check)
#
# Settings: BENCH_RUNS=3 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_CONNECTIONS=32
#   BENCH_THREADS=2 BENCH_SEED=2000 (users) BENCH_PGPORT=5432 BENCH_PGUSER=postgres
#   BENCH_PROFILE=dist (or release: a quicker build) BENCH_SKIP_BUILD=1
#   BENCH_RESULTS_DIR=bench/results
#
# One pair of PostgreSQL databases is seeded once; for each mode both services
# are restarted with only the OTEL_* variables changed (off: none set), and
# the modes alternate within each round so drift hits them alike. The spans go
# to bench/otlp_sink.py, a stand-in collector that answers 200 and decodes
# nothing. The figure is requests/s; the ratio is the median over rounds of the
# traced mode's requests/s over the same round's untraced one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$ROOT/scripts/common.sh"
start_script bench-tracing 19 "$@"

THREADS=${BENCH_THREADS:-2} CONNECTIONS=${BENCH_CONNECTIONS:-32}
if [[ $MODE == smoke ]]; then
    RUNS=1 DURATION=2 WARMUP=0 SEED=200
else
    RUNS=${BENCH_RUNS:-3} DURATION=${BENCH_DURATION:-10} WARMUP=${BENCH_WARMUP:-2} SEED=${BENCH_SEED:-2000}
fi
for tool in wrk psql curl python3 cargo openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (bench/run.sh installs wrk)"
done
export PGHOST=127.0.0.1 PGPORT=${BENCH_PGPORT:-5432} PGUSER=${BENCH_PGUSER:-postgres}
PG_URL_BASE="postgres://$PGUSER@127.0.0.1:$PGPORT"

PROFILE=${BENCH_PROFILE:-dist}
if [[ $PROFILE == dist ]]; then
    build_dist_binaries "$ROOT" "${BENCH_SKIP_BUILD:-0}"
else
    [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || cargo build --profile "$PROFILE" --quiet -p user-service -p order-service
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    USER_BIN=$target/$PROFILE/user-service ORDER_BIN=$target/$PROFILE/order-service
fi

make_run_dir bench-tracing
DB=bench_tracing_$(random_hex)
PIDS=()
cleanup() {
    local rc=$?
    stop_processes "${PIDS[@]}"
    sleep 0.5
    drop_databases "${DB}_users" "${DB}_orders"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for db in "${DB}_users" "${DB}_orders"; do psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" postgres >/dev/null; done
SINK_PORT=$(py free-port)
python3 "$BENCH/otlp_sink.py" "$SINK_PORT" &
PIDS+=($!)

# otel_env MODE: the variables of one mode (off: none, tracing is not configured).
otel_env() {
    [[ $1 == off ]] && return
    echo "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT" \
        "OTEL_TRACES_SAMPLER=parentbased_traceidratio" "OTEL_TRACES_SAMPLER_ARG=$1"
}

# start BIN PREFIX PORT DB VAR=value...: prints the pid once /health/ready answers.
start() {
    local bin=$1 prefix=$2 port=$3 db=$4 out
    shift 4
    out=$(launch_service "$WORK/$prefix.log" "$port" 60 "$bin" "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" \
        "${prefix}_DATABASE_URL=$PG_URL_BASE/$db" "${prefix}_RATE_LIMIT=0" "${prefix}_LOG_LEVEL=info" \
        "${prefix}_SHUTDOWN_TIMEOUT=5" "${AUTH_ENV[@]}" "$@") || die "$prefix did not start"
    echo "${out%% *}"
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
}

# wrk_rps NAME URL SCRIPT ARGS...: warm-up, then the measured run; prints requests/s
# (exits non-zero on connection or status errors).
wrk_rps() {
    local name=$1 url=$2 script=$BENCH/lua/$3 out
    shift 3
    if ((WARMUP > 0)); then
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s -s "$script" "$url" -- "$@" w >/dev/null 2>&1 || true
    fi
    out=$WORK/$name.out
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$script" "$url" -- "$@" m >"$out" 2>&1 ||
        die "$name: wrk failed"
    python3 - "$out" <<'PY'
import json, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("BENCH_RESULT "))
r = json.loads(line.split(" ", 1)[1])
errors = sum(r["errors"].values())
if errors:
    sys.exit(f"{sys.argv[1]}: {errors} errors {r['errors']}")
print(f"{r['requests'] / (r['duration_us'] / 1e6):.1f}")
PY
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
seeded=false
for ((round = 1; round <= RUNS; round++)); do
    for mode in off 1.0 0.1; do
        uport=$(py free-port) oport=$(py free-port)
        # shellcheck disable=SC2046 # otel_env's words are VAR=value pairs without spaces
        upid=$(start "$USER_BIN" USER_SERVICE "$uport" "${DB}_users" $(otel_env "$mode"))
        PIDS+=("$upid")
        # shellcheck disable=SC2046
        opid=$(start "$ORDER_BIN" ORDER_SERVICE "$oport" "${DB}_orders" $(otel_env "$mode") \
            "ORDER_SERVICE_USER_SERVICE_URL=http://127.0.0.1:$uport")
        PIDS+=("$opid")
        BENCH_TOKEN=$(admin_token "http://127.0.0.1:$uport") || die "no admin token"
        export BENCH_TOKEN
        if [[ $seeded == false ]]; then
            py seed-config --kind users --count "$SEED" --users 1 --base "http://127.0.0.1:$uport" --out "$WORK/seed.cfg"
            curl -sS -Z --parallel-max 16 -K "$WORK/seed.cfg" >"$WORK/seed.codes" 2>"$WORK/seed.err" || true
            if [[ $(grep -c '^201$' "$WORK/seed.codes") != "$SEED" ]]; then
                sort "$WORK/seed.codes" | uniq -c | sort -rn | head -n 5 >&2
                die "seeding $SEED users failed"
            fi
            seeded=true
        fi
        get=$(wrk_rps "r$round-$mode-get" "http://127.0.0.1:$uport" get_by_id.lua "$SEED" /api/v1/users/)
        post=$(wrk_rps "r$round-$mode-post" "http://127.0.0.1:$oport" post_order.lua "$SEED")
        printf '%s\t%s\tget_user\t%s\n%s\t%s\tpost_order\t%s\n' "$round" "$mode" "$get" "$round" "$mode" "$post" >>"$RESULTS"
        log "round $round, tracing $mode: GET user $get/s, POST order $post/s"
        stop "$opid"
        stop "$upid"
    done
done
SINK=$(curl -fsS "http://127.0.0.1:$SINK_PORT/stats")

mkdir -p "${BENCH_RESULTS_DIR:-$BENCH/results}"
OUT=${BENCH_RESULTS_DIR:-$BENCH/results}/$(date -u +%Y%m%dT%H%M%SZ)-tracing$([[ $MODE == smoke ]] && echo -smoke || true).md
python3 - "$RESULTS" "$OUT" "$SINK" "$PROFILE" "$RUNS" "$DURATION" "$CONNECTIONS" <<'PY'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
out, sink, profile, runs, duration, connections = sys.argv[2:]
rps = {(int(r), m, s): float(v) for r, m, s, v in rows}
targets = {"1.0": 0.75, "0.1": 0.9}
lines = [
    f"# Tracing cost ({profile} build, {runs} round(s) of {duration} s per scenario, {connections} connections)",
    "",
    "| scenario | off (req/s) | 1.0 (req/s) | ratio at 1.0 (target >= 0.75) | 0.1 (req/s) | ratio at 0.1 (target >= 0.9) |",
    "|---|---|---|---|---|---|",
]
failed = False
for scenario, label in (("get_user", "GET user"), ("post_order", "POST order (calls user-service)")):
    rounds = sorted({r for r, _, s in rps if s == scenario})
    med = {m: statistics.median(rps[(r, m, scenario)] for r in rounds) for m in ("off", "1.0", "0.1")}
    ratio = {m: statistics.median(rps[(r, m, scenario)] / rps[(r, "off", scenario)] for r in rounds) for m in targets}
    ok = {m: ratio[m] >= t for m, t in targets.items()}
    failed |= not all(ok.values())
    mark = lambda m: f"{ratio[m]:.2f} {'ok' if ok[m] else 'BELOW'}"
    lines.append(f"| {label} | {med['off']:.0f} | {med['1.0']:.0f} | {mark('1.0')} | {med['0.1']:.0f} | {mark('0.1')} |")
lines += ["", f"OTLP sink received: {json.loads(sink)}", ""]
text = "\n".join(lines)
open(out, "w").write(text)
print(text)
PY
log "results: ${OUT#"$ROOT"/}"
