#!/usr/bin/env bash
# Instructions per GET /api/v1/users/{id} of the optimised (dist profile) user-service on PostgreSQL,
# counted by callgrind (repeatable on a shared machine, unlike timings).
#
#   bash bench/profile.sh [requests]     default 1000; needs valgrind, psql, python3
#
# Starts the binary under callgrind on a fresh database (dropped at the end) with
# logs at info (discarded), seeds 20 users, warms up with 200 GETs, zeroes the
# counters, sends the measured GETs over one keep-alive connection, dumps, and
# prints the total per request and the heaviest inclusive functions.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-1000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install -y valgrind)" >&2; exit 1; }
(cd "$ROOT" && cargo build --profile dist -q -p user-service)
WORK=$(mktemp -d)
DB=profile_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql -qh 127.0.0.1 -U postgres -c "CREATE DATABASE $DB" >/dev/null
cleanup() {
    [[ -n ${VPID:-} ]] && kill "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null || true
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
USER_SERVICE_HOST=127.0.0.1 USER_SERVICE_PORT=$PORT USER_SERVICE_RATE_LIMIT=0 USER_SERVICE_LOG_LEVEL=info \
USER_SERVICE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$TARGET/dist/user-service" \
    >/dev/null 2>"$WORK/valgrind.log" &
VPID=$!
get_users() { # count
    python3 - "$PORT" "$1" <<'PY'
import http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("GET", f"/api/v1/users/{i % 20 + 1}"); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}
for _ in $(seq 1 200); do curl -sf "localhost:$PORT/health/ready" >/dev/null 2>&1 && break; sleep 0.5; done
for i in $(seq 1 20); do
    curl -sf -XPOST "localhost:$PORT/api/v1/users" -H 'content-type: application/json' \
        -d "{\"email\":\"profile$i@example.com\",\"name\":\"Profile $i\",\"age\":30}" >/dev/null
done
get_users 200
callgrind_control --zero "$VPID" >/dev/null
get_users "$N"
callgrind_control --dump=measured "$VPID" >/dev/null
OUT=$WORK/callgrind.out.1
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "instructions per GET: $((TOTAL / N)) ($TOTAL over $N requests)"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null |
    grep -E 'store::|tokio_postgres::client|deadpool|on_response|new_span|dispatcher::get_default|metrics::track|memcpy|malloc' |
    head -15 | cut -c1-160
