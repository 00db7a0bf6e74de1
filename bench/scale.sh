#!/usr/bin/env bash
# Data at scale (issue 13): what lists, search and counts cost as the tables grow.
#
#   bash bench/scale.sh            10,000 and 1,000,000 users (and twice as many
#                                  orders) on PostgreSQL, 100,000 users on SQLite
#   bash bench/scale.sh --smoke    a few seconds at small sizes; exits non-zero on
#                                  any error or a service that does not start (CI)
#
# Settings (full mode; --smoke fixes sizes, duration and warm-up):
#   SCALE_SMALL=10000  SCALE_LARGE=1000000  SCALE_SQLITE=100000  (users; orders = 2x)
#   SCALE_DURATION=10 (seconds per scenario)  SCALE_WARMUP=2 (seconds)
#   BENCH_CONNECTIONS=32  BENCH_THREADS=2  BENCH_PGPORT=5432  BENCH_PGUSER=postgres
#   BENCH_SKIP_BUILD=1 (use the dist binaries already built)  BENCH_RESULTS_DIR=bench/results
#
# Rows are seeded with SQL (generate_series on PostgreSQL, one transaction of
# inserts on SQLite), not through the API; secondary indexes are dropped for the
# bulk load and rebuilt from their own definitions, then the tables are
# vacuumed and analyzed. Each size gets fresh databases and fresh services; the
# same scenarios run at every size, and bench/scale.py prints each figure at
# both sizes with the ratio large/small, and writes the EXPLAIN plans of every
# list query at the large size. docs/BENCHMARKS.md ("Data at scale") explains them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$ROOT/scripts/common.sh"
start_script scale 21 "$@"

THREADS=${BENCH_THREADS:-2} CONNECTIONS=${BENCH_CONNECTIONS:-32}
if [[ $MODE == smoke ]]; then
    SMALL=300 LARGE=3000 SQLITE=1000 DURATION=1 WARMUP=0
else
    SMALL=${SCALE_SMALL:-10000} LARGE=${SCALE_LARGE:-1000000} SQLITE=${SCALE_SQLITE:-100000}
    DURATION=${SCALE_DURATION:-10} WARMUP=${SCALE_WARMUP:-2}
fi
for v in SMALL LARGE SQLITE DURATION THREADS CONNECTIONS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "SCALE_WARMUP must be a whole number of seconds"
if ! command -v wrk >/dev/null 2>&1; then
    log "wrk not found: apt-get install -y wrk"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y wrk >&2 || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y wrk >&2; } ||
        die "wrk is required"
fi
for tool in wrk psql curl python3 cargo openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
python3 -c 'import sqlite3' 2>/dev/null || die "python3 with its sqlite3 module is required"

export PGHOST=127.0.0.1 PGPORT=${BENCH_PGPORT:-5432} PGUSER=${BENCH_PGUSER:-postgres}
PG_URL_BASE="postgres://$PGUSER@127.0.0.1:$PGPORT"
psql -qXAtc 'select 1' postgres >/dev/null || die "PostgreSQL is not answering on 127.0.0.1:$PGPORT"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR=${BENCH_RESULTS_DIR:-$BENCH/results}
OUT_BASE=$RESULTS_DIR/$STAMP-scale
[[ $MODE == smoke ]] && OUT_BASE=$RESULTS_DIR/$STAMP-scale-smoke

build_dist_binaries "$ROOT" "${BENCH_SKIP_BUILD:-0}"

make_run_dir scale
DB_PREFIX=scale_$(random_hex)
declare -A PIDS=() URLS=()
DBS=()

stop_service() { # key
    local pid=${PIDS[$1]:-} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    unset "PIDS[$1]"
}

cleanup() {
    local rc=$? key db
    for key in "${!PIDS[@]}"; do stop_service "$key"; done
    for db in "${DBS[@]}"; do
        psql -qX -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" postgres >/dev/null 2>&1 || true
    done
    if ((rc != 0)); then
        for f in "$WORK"/*.log; do [[ -e $f ]] && { log "---- $(basename "$f")"; tail -n 10 "$f" >&2; }; done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_service key binary PREFIX database-url [VAR=value...]
start_service() {
    local key=$1 bin=$2 prefix=$3 url=$4 port out
    shift 4
    port=$(py free-port)
    out=$(launch_service "$WORK/$key.log" "$port" 600 "$bin" "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" \
        "${prefix}_DATABASE_URL=$url" "${prefix}_RATE_LIMIT=0" "${prefix}_LOG_LEVEL=warn" \
        "${prefix}_SHUTDOWN_TIMEOUT=5" "${AUTH_ENV[@]}" "$@") ||
        die "$key failed to start (log below)"
    PIDS[$key]=${out%% *}
    URLS[$key]=http://127.0.0.1:$port
}

# pg_bulk database table insert-sql: drops the table's secondary indexes, runs
# the insert, rebuilds the indexes from their saved definitions, vacuums and
# analyzes. The indexes are the migrations' own, whatever they are.
pg_bulk() {
    local db=$1 table=$2 insert=$3
    psql -qX -v ON_ERROR_STOP=1 "$db" >/dev/null <<SQL
SET maintenance_work_mem = '256MB';
CREATE TEMP TABLE saved AS
    SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
    FROM pg_index i WHERE i.indrelid = '$table'::regclass AND NOT i.indisprimary;
SELECT format('DROP INDEX %s', name) FROM saved \gexec
$insert;
SELECT def FROM saved \gexec
SELECT setval(pg_get_serial_sequence('$table', 'id'), (SELECT max(id) FROM $table));
SQL
    psql -qX -v ON_ERROR_STOP=1 -c "VACUUM ANALYZE $table" "$db" >/dev/null
}

WORDS="ARRAY['amber','birch','cedar','delta','ember','fjord','grove','heron']"
# Each user's name ends in a token of 8 letters from g..v, the hex digits of
# (i * 2654435761) mod 2^32 shifted (a bijection, so tokens are unique): a term
# made of rare trigrams, as a surname fragment is. bench/lua/scale.lua and
# bench/scale.py compute the same token.
TOKEN="translate(lpad(to_hex((i::bigint * 2654435761) % 4294967296), 8, '0'), '0123456789abcdef', 'ghijklmnopqrstuv')"
seed_users_pg() { # database count
    pg_bulk "$1" users "INSERT INTO users (id, email, name, age, active, created_at, updated_at, role)
        SELECT i, 'seed' || i || '@scale.test', 'Seed ' || ($WORDS)[1 + i % 8] || ' ' || $TOKEN, 18 + i % 60, TRUE,
               timestamptz '2026-01-01' + i * interval '10 ms', timestamptz '2026-01-01' + i * interval '10 ms', 'user'
        FROM generate_series(1, $2) AS i"
}

seed_orders_pg() { # database users: two orders per user (7919 is prime, so i -> user is 2:1)
    pg_bulk "$1" orders "INSERT INTO orders (id, user_id, product_id, quantity, total_price_cents, status,
               user_verified, created_at, updated_at)
        SELECT i, 1 + (i::bigint * 7919) % $2, 'SKU-' || (i % 1000), 1 + i % 5, 100 + i % 10000,
               (ARRAY['pending','confirmed','shipped','delivered','cancelled'])[1 + i % 5], TRUE,
               timestamptz '2026-01-01' + i * interval '5 ms', timestamptz '2026-01-01' + i * interval '5 ms'
        FROM generate_series(1, 2 * $2) AS i"
}

# cursors base-url count: the next_cursor of numbered pages at 25, 50, 75 and 90 %
# of the user table (one slow OFFSET each, before the measurement).
deep_cursors() {
    local base=$1 n=$2 pct page
    for pct in 25 50 75 90; do
        page=$((n * pct / 100 / 10))
        ((page >= 1)) || page=1
        curl -fsS -H "Authorization: Bearer $BENCH_TOKEN" "$base/api/v1/users?page_size=10&page=$page" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["meta"]["next_cursor"])'
    done
}

# run_wrk label base-url script args...: warm-up, then the measured run; the
# wrk output goes to $WORK/<label>.out, with the load average in front.
run_wrk() {
    local label=$1 url=$2 script=$BENCH/lua/$3
    shift 3
    if ((WARMUP > 0)); then
        timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s \
            -s "$script" "$url" -- "$@" w >/dev/null 2>&1 || log "$label: warm-up wrk exited non-zero"
    fi
    {
        echo "LOADAVG $(cut -d' ' -f1 /proc/loadavg)"
        timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
            -s "$script" "$url" -- "$@" m 2>&1 || log "$label: wrk exited non-zero"
    } >"$WORK/$label.out"
    python3 "$BENCH/scale.py" line "$WORK/$label.out" "$label" >&2
}

# scenarios tag users-url orders-url(or -) count: the scenarios of one size.
scenarios() {
    local tag=$1 users=$2 orders=$3 n=$4 cursors
    mapfile -t cursors < <(deep_cursors "$users" "$n")
    run_wrk "$tag.get_user" "$users" get_by_id.lua "$n" /api/v1/users/
    run_wrk "$tag.list_page1" "$users" scale.lua list "$n"
    run_wrk "$tag.search_selective" "$users" scale.lua selective "$n"
    run_wrk "$tag.search_broad" "$users" scale.lua broad "$n"
    run_wrk "$tag.deep_cursor" "$users" scale.lua deep "$n" "${cursors[@]}"
    [[ $orders == - ]] || run_wrk "$tag.orders_of_user" "$orders" scale.lua orders "$n"
    run_wrk "$tag.post_user" "$users" post_user.lua "$tag"
}

# postgres_size tag count [explain]: fresh databases and services, seeded, measured.
postgres_size() {
    local tag=$1 n=$2 udb=${DB_PREFIX}_$1_users odb=${DB_PREFIX}_$1_orders start
    for db in "$udb" "$odb"; do
        psql -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" postgres >/dev/null
        DBS+=("$db")
    done
    start_service "users.$tag" "$USER_BIN" USER_SERVICE "$PG_URL_BASE/$udb"
    start_service "orders.$tag" "$ORDER_BIN" ORDER_SERVICE "$PG_URL_BASE/$odb" \
        "ORDER_SERVICE_USER_SERVICE_URL=${URLS[users.$tag]}"
    start=$SECONDS
    seed_users_pg "$udb" "$n"
    seed_orders_pg "$odb" "$n"
    log "$tag: seeded $n users and $((2 * n)) orders on PostgreSQL in $((SECONDS - start)) s"
    echo "SEED $tag $n $((SECONDS - start))" >>"$WORK/facts"
    BENCH_TOKEN=$(admin_token "${URLS[users.$tag]}") || die "no admin token"
    export BENCH_TOKEN
    scenarios "$tag" "${URLS[users.$tag]}" "${URLS[orders.$tag]}" "$n"
    [[ ${3:-} == explain ]] && explain "$udb" "$odb" "$n" >"$WORK/explain.txt"
    stop_service "orders.$tag"
    stop_service "users.$tag"
    for db in "$udb" "$odb"; do psql -qX -c "DROP DATABASE \"$db\" WITH (FORCE)" postgres >/dev/null; done
    DBS=()
}

# explain users-db orders-db count: the plan of every list query as the
# services send it (values inlined, which is how the search statements are
# planned: per value), with the time each took.
explain() {
    local udb=$1 odb=$2 n=$3 cols="id, email, name, age, active, created_at, updated_at, deleted_at, role, created_by, updated_by"
    local deep live="deleted_at IS NULL" order="ORDER BY created_at DESC, id DESC"
    deep=$(psql -qXAt -c "SELECT format('(%L::timestamptz, %s)', created_at, id) FROM users WHERE $live $order OFFSET $((n * 9 / 10)) LIMIT 1" "$udb")
    local user=$((n / 2)) token
    token=$(psql -qXAt -c "SELECT $TOKEN FROM (SELECT $user AS i) AS t" "$udb")
    local -a queries=(
        "users: page 1|$udb|SELECT $cols FROM users WHERE $live $order LIMIT 11 OFFSET 0"
        "users: count of page 1 (bounded)|$udb|SELECT COUNT(*) AS total FROM (SELECT 1 FROM users WHERE $live LIMIT 1001) AS bounded"
        "users: selective search ($token, one user's name token)|$udb|SELECT $cols FROM users WHERE $live AND (LOWER(name) LIKE '%$token%' ESCAPE '\\' OR LOWER(email) LIKE '%$token%' ESCAPE '\\') $order LIMIT 11 OFFSET 0"
        "users: count of the selective search|$udb|SELECT COUNT(*) AS total FROM (SELECT 1 FROM users WHERE $live AND (LOWER(name) LIKE '%$token%' ESCAPE '\\' OR LOWER(email) LIKE '%$token%' ESCAPE '\\') LIMIT 1001) AS bounded"
        "users: a selective term whose trigrams are all common (seed$user@)|$udb|SELECT $cols FROM users WHERE $live AND (LOWER(name) LIKE '%seed$user@%' ESCAPE '\\' OR LOWER(email) LIKE '%seed$user@%' ESCAPE '\\') $order LIMIT 11 OFFSET 0"
        "users: broad search (cedar)|$udb|SELECT $cols FROM users WHERE $live AND (LOWER(name) LIKE '%cedar%' ESCAPE '\\' OR LOWER(email) LIKE '%cedar%' ESCAPE '\\') $order LIMIT 11 OFFSET 0"
        "users: count of the broad search|$udb|SELECT COUNT(*) AS total FROM (SELECT 1 FROM users WHERE $live AND (LOWER(name) LIKE '%cedar%' ESCAPE '\\' OR LOWER(email) LIKE '%cedar%' ESCAPE '\\') LIMIT 1001) AS bounded"
        "users: short search (ab), no trigram|$udb|SELECT $cols FROM users WHERE $live AND (LOWER(name) LIKE '%ab%' ESCAPE '\\' OR LOWER(email) LIKE '%ab%' ESCAPE '\\') $order LIMIT 11 OFFSET 0"
        "users: deep page by cursor (90 %)|$udb|SELECT $cols FROM users WHERE $live AND (created_at, id) < $deep $order LIMIT 11"
        "users: the same page by number (OFFSET), for comparison|$udb|SELECT $cols FROM users WHERE $live $order LIMIT 11 OFFSET $((n * 9 / 10))"
        "orders: one user's|$odb|SELECT * FROM orders WHERE deleted_at IS NULL AND user_id = $user $order LIMIT 11 OFFSET 0"
        "orders: by status (cancelled)|$odb|SELECT * FROM orders WHERE deleted_at IS NULL AND status = 'cancelled' $order LIMIT 11 OFFSET 0"
        "orders: by product (SKU-42)|$odb|SELECT * FROM orders WHERE deleted_at IS NULL AND product_id = 'SKU-42' $order LIMIT 11 OFFSET 0"
        "orders: page 1|$odb|SELECT * FROM orders WHERE deleted_at IS NULL $order LIMIT 11 OFFSET 0"
    )
    local q title db sql
    for q in "${queries[@]}"; do
        IFS='|' read -r title db sql <<<"$q"
        printf '### %s\n\n```sql\n%s\n```\n\n```\n' "$title" "$sql"
        psql -qXAt -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $sql" "$db"
        printf '```\n\n'
    done
}

# sqlite_size tag count: a fresh file, migrated by the service, seeded with
# Python's sqlite3 while the service is stopped, then measured.
sqlite_size() {
    local tag=$1 n=$2 file=$WORK/users-$1.db start
    start_service "users.$tag" "$USER_BIN" USER_SERVICE "sqlite:$file"
    stop_service "users.$tag"
    start=$SECONDS
    python3 "$BENCH/scale.py" seed-sqlite "$file" "$n"
    log "$tag: seeded $n users on SQLite in $((SECONDS - start)) s"
    echo "SEED $tag $n $((SECONDS - start))" >>"$WORK/facts"
    start_service "users.$tag" "$USER_BIN" USER_SERVICE "sqlite:$file"
    BENCH_TOKEN=$(admin_token "${URLS[users.$tag]}") || die "no admin token"
    export BENCH_TOKEN
    scenarios "$tag" "${URLS[users.$tag]}" - "$n"
    stop_service "users.$tag"
}

log "$MODE mode: PostgreSQL at $SMALL and $LARGE users, SQLite at $SQLITE; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s (warm-up ${WARMUP}s); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "LOAD_START $(cut -d' ' -f1-3 /proc/loadavg)" >"$WORK/facts"
postgres_size small "$SMALL"
postgres_size large "$LARGE" explain
sqlite_size sqlite "$SQLITE"
echo "LOAD_END $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/facts"

mkdir -p "$RESULTS_DIR"
python3 "$BENCH/scale.py" report "$WORK" "$OUT_BASE" "$MODE" "$SMALL" "$LARGE" "$SQLITE" \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
log "results: ${OUT_BASE#"$ROOT"/}.md and .json"
