#!/usr/bin/env bash
# Soak test (issue 7): a sustained mixed read/write load on both services, then
# checks that nothing degrades over time.
#
#   bash scripts/soak.sh           60 s of load (make soak)
#   bash scripts/soak.sh --smoke   12 s, smaller seed (make soak-smoke, in CI)
#
# Both optimised (dist profile) binaries run on fresh PostgreSQL databases (random names, dropped
# at the end; loopback only, trust auth), wired together, seeded through the API.
# Two wrk processes then drive, for SOAK_DURATION seconds,
#   user-service:  70% GET user, 15% list/search, 10% POST user, 5% PUT user
#   order-service: 60% GET order, 15% list, 20% POST order, 5% PUT status
# bounded in time (wrk -d) and in count (each wrk thread stops after its share
# of SOAK_MAX_REQUESTS). Samples are taken after the warm-up and just before the
# load ends, and the run fails when
#   - any 5xx was answered (the services' own *_requests_total{status=~"5.."}),
#   - wrk saw connect/read/write errors or timeouts,
#   - RSS grew more than SOAK_RSS_GROWTH_PCT % + 16 MiB from warm-up to end,
#   - open file descriptors grew more than 4 from warm-up to end,
#   - PostgreSQL sessions of a service exceed what it had after warm-up or its
#     pool size (SOAK_POOL), whichever is larger.
#
# Settings: SOAK_DURATION (60; smoke 12)  SOAK_WARMUP (10; smoke 4)  SOAK_SEED (2000; smoke 300)
#   SOAK_CONNECTIONS=16 (per wrk)  SOAK_THREADS=2  SOAK_MAX_REQUESTS=5000000 (per wrk)
#   SOAK_POOL=10  SOAK_RSS_GROWTH_PCT=50  SOAK_PGPORT=5432  SOAK_SKIP_BUILD=1
#   SOAK_KEEP_WORKDIR=1 (keep logs and wrk output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=common.sh
. "$ROOT/scripts/common.sh"
start_script soak 29 "$@"
if [[ $MODE == smoke ]]; then
    DURATION=${SOAK_DURATION:-12} WARMUP=${SOAK_WARMUP:-4} SEED=${SOAK_SEED:-300}
else
    DURATION=${SOAK_DURATION:-60} WARMUP=${SOAK_WARMUP:-10} SEED=${SOAK_SEED:-2000}
fi
CONNECTIONS=${SOAK_CONNECTIONS:-16} THREADS=${SOAK_THREADS:-2}
MAX_REQUESTS=${SOAK_MAX_REQUESTS:-5000000} POOL=${SOAK_POOL:-10}
RSS_GROWTH_PCT=${SOAK_RSS_GROWTH_PCT:-50}
for v in DURATION WARMUP SEED CONNECTIONS THREADS MAX_REQUESTS POOL RSS_GROWTH_PCT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "SOAK_$v must be a whole number, got '${!v}'"
done
((DURATION >= WARMUP + 3)) || die "SOAK_DURATION must be at least SOAK_WARMUP + 3"

export PGHOST=127.0.0.1 PGPORT=${SOAK_PGPORT:-5432} PGUSER=${SOAK_PGUSER:-postgres}
if ! command -v wrk >/dev/null 2>&1; then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    log "wrk not found: apt-get install -y wrk"
    "${sudo[@]}" apt-get install -y wrk >&2 || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y wrk >&2; }
    command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk)"
fi
for tool in psql curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
psql -qAtc 'select 1' postgres >/dev/null 2>&1 || die "PostgreSQL is not answering on 127.0.0.1:$PGPORT"

build_dist_binaries "$ROOT" "${SOAK_SKIP_BUILD:-0}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
PREFIX=soak_$(random_hex)
UDB=${PREFIX}_users ODB=${PREFIX}_orders
declare -A PID=()
WRK_PIDS=()

cleanup() {
    local rc=$? svc p i
    for p in "${WRK_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for svc in "${!PID[@]}"; do
        p=${PID[$svc]}
        kill -TERM "$p" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
    done
    for db in "$UDB" "$ODB"; do
        psql -qX -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" postgres >/dev/null 2>&1 || true
    done
    if ((rc != 0)); then
        for f in "$WORK"/*.log; do
            [[ -e $f ]] || continue
            log "---- last lines of $(basename "$f")"
            tail -n 10 "$f" >&2 || true
        done
    fi
    if [[ ${SOAK_KEEP_WORKDIR:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# the load: two wrk scripts, written here so the mix is read in one place

cat >"$WORK/common.lua" <<EOF
dofile("$ROOT/bench/lua/lib.lua")
local budget, sent = 0, 0
function init(args)
  bench_init()
  items = tonumber(args[1])
  budget = math.floor(tonumber(args[2]) / $THREADS)
end
-- Bounded in count as well as time: a thread stops after its share.
function response(status, headers, body)
  sent = sent + 1
  if sent >= budget then wrk.thread:stop() end
end
-- A request() over a mix of { percent, make(id) } (the percents add up to 100);
-- id is a random seeded row.
function mix(choices)
  return function()
    local r, id = math.random(100), math.random(1, items)
    for _, choice in ipairs(choices) do
      r = r - choice[1]
      if r <= 0 then return choice[2](id) end
    end
  end
end
EOF
cat >"$WORK/users.lua" <<'EOF'
dofile(os.getenv("SOAK_WORK") .. "/common.lua")
local counter = 0
request = mix({
  { 70, function(id) return wrk.format("GET", "/api/v1/users/" .. id, auth_headers) end },
  { 15, function()
    return wrk.format("GET", "/api/v1/users?page=" .. math.random(1, 5) .. "&page_size=20&search=seed", auth_headers)
  end },
  { 10, function()
    counter = counter + 1
    local body = string.format('{"email":"soak-%d-%d-%d@soak.test","name":"Soak User","age":%d}',
      tid, counter, math.random(1, 999999999), math.random(1, 150))
    return wrk.format("POST", "/api/v1/users", json_headers, body)
  end },
  { 5, function(id)
    local body = string.format('{"name":"Soak Renamed %d","age":%d}', math.random(1, 999), math.random(1, 150))
    return wrk.format("PUT", "/api/v1/users/" .. id, json_headers, body)
  end },
})
EOF
cat >"$WORK/orders.lua" <<'EOF'
dofile(os.getenv("SOAK_WORK") .. "/common.lua")
request = mix({
  { 60, function(id) return wrk.format("GET", "/api/v1/orders/" .. id, auth_headers) end },
  { 15, function()
    return wrk.format("GET", "/api/v1/orders?page_size=20&user_id=" .. math.random(1, items), auth_headers)
  end },
  { 20, function()
    local body = string.format('{"user_id":%d,"product_id":"SKU-%d","quantity":%d,"total_price":%d.%02d}',
      math.random(1, items), math.random(1, 100), math.random(1, 5), math.random(1, 500), math.random(0, 99))
    return wrk.format("POST", "/api/v1/orders", json_headers, body)
  end },
  { 5, function(id)
    local status = ({ "confirmed", "shipped", "cancelled" })[math.random(1, 3)]
    return wrk.format("PUT", "/api/v1/orders/" .. id, json_headers, '{"status":"' .. status .. '"}')
  end },
})
EOF
export SOAK_WORK=$WORK

# ---------------------------------------------------------------------------
# services

declare -A URL=()
start_service() { # name binary VAR=value... (sets PID[name] and URL[name])
    local name=$1 bin=$2 port out
    shift 2
    port=$(py free-port)
    local prefix=${name^^}
    prefix=${prefix//-/_}
    out=$(launch_service "$WORK/$name.log" "$port" 60 "$bin" "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" \
        "${prefix}_RATE_LIMIT=0" "${prefix}_LOG_LEVEL=warn" "${prefix}_SHUTDOWN_TIMEOUT=5" \
        "${prefix}_DATABASE_MAX_CONNECTIONS=$POOL" "$@") ||
        die "$name failed to start"
    PID[$name]=${out%% *}
    URL[$name]=http://127.0.0.1:$port
}

seed() { # kind count base [users]
    local kind=$1 count=$2 base=$3 created
    py seed-config --kind "$kind" --count "$count" --users "${4:-1}" --base "$base" --out "$WORK/seed-$kind.cfg"
    timeout 600 curl -sS -Z --parallel-max 16 -K "$WORK/seed-$kind.cfg" >"$WORK/seed-$kind.codes" 2>"$WORK/seed-$kind.err" || true
    created=$(grep -c '^201$' "$WORK/seed-$kind.codes" || true)
    if [[ $created != "$count" ]]; then
        sort "$WORK/seed-$kind.codes" | uniq -c | sort -rn | head -n 5 >&2
        die "seeding $kind: $created of $count created"
    fi
}

for db in "$UDB" "$ODB"; do psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" postgres >/dev/null; done
setup_identity "$WORK"
start_service user-service "$USER_BIN" "USER_SERVICE_DATABASE_URL=postgres://$PGUSER@127.0.0.1:$PGPORT/$UDB" "${AUTH_ENV[@]}"
USER_URL=${URL[user-service]}
start_service order-service "$ORDER_BIN" "ORDER_SERVICE_DATABASE_URL=postgres://$PGUSER@127.0.0.1:$PGPORT/$ODB" \
    "ORDER_SERVICE_USER_SERVICE_URL=$USER_URL" "${AUTH_ENV[@]}"
ORDER_URL=${URL[order-service]}
# The load acts as the operator (an admin): every route is open to it.
BENCH_TOKEN=$(admin_token "$USER_URL") || die "no admin token from user-service"
export BENCH_TOKEN
log "services up (user-service pid ${PID[user-service]}, order-service pid ${PID[order-service]}); seeding $SEED users and orders"
seed users "$SEED" "$USER_URL"
seed orders "$SEED" "$ORDER_URL" "$SEED"

# ---------------------------------------------------------------------------
# samples

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
sessions() { psql -qXAtc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1'" postgres; }
server_errors() { # base-url prefix: sum of *_requests_total with a 5xx status
    curl -sf --max-time 10 "$1/metrics" | awk -v m="$2_requests_total" \
        'index($0, m "{") == 1 && $0 ~ /status="5[0-9][0-9]"/ { s += $NF } END { printf "%d\n", s }'
}
declare -A S=()
sample() { # phase
    S[$1.user.rss]=$(rss_kib "${PID[user-service]}") S[$1.order.rss]=$(rss_kib "${PID[order-service]}")
    S[$1.user.fds]=$(fds "${PID[user-service]}") S[$1.order.fds]=$(fds "${PID[order-service]}")
    S[$1.user.db]=$(sessions "$UDB") S[$1.order.db]=$(sessions "$ODB")
}

sample idle
log "load: ${DURATION}s (warm-up ${WARMUP}s), per service wrk -t$THREADS -c$CONNECTIONS, at most $MAX_REQUESTS requests each"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$WORK/users.lua" "$USER_URL" \
    -- "$SEED" "$MAX_REQUESTS" >"$WORK/wrk-users.out" 2>&1 &
WRK_PIDS+=($!)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$WORK/orders.lua" "$ORDER_URL" \
    -- "$SEED" "$MAX_REQUESTS" >"$WORK/wrk-orders.out" 2>&1 &
WRK_PIDS+=($!)
started=$SECONDS
sleep "$WARMUP"
sample early
sleep "$((DURATION - WARMUP - 2))"
sample end
for p in "${WRK_PIDS[@]}"; do wait "$p" || die "wrk exited non-zero (see $WORK/wrk-*.out)"; done
WRK_PIDS=()
log "load done after $((SECONDS - started)) s"
sleep 1
sample after

# ---------------------------------------------------------------------------
# verdict

wrk_field() { # file python-expression over r (the BENCH_RESULT json)
    python3 - "$1" "$2" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.M)
r = json.loads(m.group(1)) if m else None
print(eval(sys.argv[2]) if r else "n/a")
EOF
}
FAIL=()
check() { # condition-description, then a test
    local what=$1
    shift
    "$@" || FAIL+=("$what")
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

printf '\nsoak (%s): %s s mixed load, 2 x wrk -t%s -c%s, seed %s users + %s orders, pool %s\n' \
    "$MODE" "$DURATION" "$THREADS" "$CONNECTIONS" "$SEED" "$SEED" "$POOL"
printf '%-32s %-22s %-22s\n' "" user-service order-service
row() { printf '%-32s %-22s %-22s\n' "$@"; }
declare -A REQ RPS SOCK NON2XX P99 E5
for svc in user order; do
    out=$WORK/wrk-${svc}s.out
    REQ[$svc]=$(wrk_field "$out" 'r["requests"]')
    RPS[$svc]=$(wrk_field "$out" 'round(r["requests"] / (r["duration_us"] / 1e6))')
    SOCK[$svc]=$(wrk_field "$out" 'sum(v for k, v in r["errors"].items() if k != "status")')
    NON2XX[$svc]=$(wrk_field "$out" 'r["errors"]["status"]')
    P99[$svc]=$(wrk_field "$out" 'round(r["latency_us"]["p99"] / 1000, 1)')
done
E5[user]=$(server_errors "$USER_URL" user_service)
E5[order]=$(server_errors "$ORDER_URL" order_service)
for svc in user order; do # wrk keeps the clock running after its count bound is hit
    [[ ${REQ[$svc]} =~ ^[0-9]+$ ]] && ((REQ[$svc] >= MAX_REQUESTS)) && RPS[$svc]="${RPS[$svc]}, count bound hit"
done
row "requests (req/s)" "${REQ[user]} (${RPS[user]}/s)" "${REQ[order]} (${RPS[order]}/s)"
row "p99 latency ms" "${P99[user]}" "${P99[order]}"
row "4xx answers (404/409/400)" "${NON2XX[user]}" "${NON2XX[order]}"
row "5xx answers (/metrics)" "${E5[user]}" "${E5[order]}"
row "wrk socket errors" "${SOCK[user]}" "${SOCK[order]}"
declare -A RSSROW FDROW DBROW
for svc in user order; do
    RSSROW[$svc]="$(mib "${S[idle.$svc.rss]}") / $(mib "${S[early.$svc.rss]}") / $(mib "${S[end.$svc.rss]}")"
    FDROW[$svc]="${S[idle.$svc.fds]} / ${S[early.$svc.fds]} / ${S[end.$svc.fds]} / ${S[after.$svc.fds]}"
    DBROW[$svc]="${S[idle.$svc.db]} / ${S[early.$svc.db]} / ${S[end.$svc.db]} / ${S[after.$svc.db]}"
done
row "RSS MiB idle / warm / end" "${RSSROW[user]}" "${RSSROW[order]}"
row "fds idle / warm / end / after" "${FDROW[user]}" "${FDROW[order]}"
row "PG sessions idle/warm/end/after" "${DBROW[user]}" "${DBROW[order]}"

for svc in user order; do
    check "$svc-service answered 5xx" test "${E5[$svc]}" = 0
    check "$svc-service load saw socket errors or timeouts" test "${SOCK[$svc]}" = 0
    early=${S[early.$svc.rss]} end=${S[end.$svc.rss]}
    check "$svc-service RSS grew from $(mib "$early") to $(mib "$end") MiB" \
        test "$end" -le $((early + early * RSS_GROWTH_PCT / 100 + 16384))
    check "$svc-service fds grew from ${S[early.$svc.fds]} to ${S[end.$svc.fds]}" \
        test "${S[end.$svc.fds]}" -le $((S[early.$svc.fds] + 4))
    limit=$((S[early.$svc.db] > POOL ? S[early.$svc.db] : POOL))
    check "$svc-service PostgreSQL sessions grew from ${S[early.$svc.db]} to ${S[end.$svc.db]}" \
        test "${S[end.$svc.db]}" -le "$limit"
done
if ((${#FAIL[@]})); then
    printf 'verdict: FAIL\n'
    printf '  - %s\n' "${FAIL[@]}"
    exit 1
fi
printf 'verdict: PASS (0 5xx, no socket errors, flat RSS, fds and sessions)\n'
