#!/usr/bin/env bash
# Instructions per authenticated GET /api/v1/users/{id} of the optimised user-service
# on PostgreSQL, counted by callgrind (repeatable on a shared machine, unlike timings).
#
#   bash bench/profile.sh [requests]     default 1000; needs valgrind, psql, python3, openssl
#
# PROFILE=release profiles the faster-to-build release profile instead of dist
# (compare only figures of the same profile); FEATURES adds cargo --features.
# Starts the binary under callgrind on a fresh database (dropped at the end)
# with logs at info (discarded) and the run's own signing key, gets the operator's token, seeds 20 users, warms up with
# 200 GETs, zeroes the counters, sends the measured GETs with the token over one
# keep-alive connection, dumps, and prints the total per request and the heaviest
# inclusive functions. The callgrind file is kept when CALLGRIND_OUT names a path.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "[profile] $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=../scripts/common.sh
source "$ROOT/scripts/common.sh"
N=${1:-1000}
PROFILE=${PROFILE:-dist}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
command -v valgrind >/dev/null || die "valgrind is required (apt-get install -y valgrind)"
(cd "$ROOT" && cargo build --profile "$PROFILE" -q -p user-service ${FEATURES:+--features "$FEATURES"})
WORK=$(mktemp -d)
DB=profile_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql -qh 127.0.0.1 -U postgres -c "CREATE DATABASE $DB" >/dev/null
cleanup() {
    [[ -n ${VPID:-} ]] && kill "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null || true
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    [[ -n ${CALLGRIND_OUT:-} && -f $WORK/callgrind.out.1 ]] && cp "$WORK/callgrind.out.1" "$CALLGRIND_OUT"
    rm -rf "$WORK"
}
trap cleanup EXIT
setup_identity "$WORK"
env USER_SERVICE_HOST=127.0.0.1 USER_SERVICE_PORT="$PORT" USER_SERVICE_RATE_LIMIT=0 USER_SERVICE_LOG_LEVEL=info \
    USER_SERVICE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" "${AUTH_ENV[@]}" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$TARGET/$PROFILE/user-service" \
    >/dev/null 2>"$WORK/valgrind.log" &
VPID=$!
for _ in $(seq 1 240); do curl -sf "localhost:$PORT/health/ready" >/dev/null 2>&1 && break; sleep 0.5; done
TOKEN=$(admin_token "http://127.0.0.1:$PORT") || die "no admin token"
for i in $(seq 1 20); do
    curl -sf -XPOST "localhost:$PORT/api/v1/users" -H 'content-type: application/json' \
        -H "Authorization: Bearer $TOKEN" \
        -d "{\"email\":\"profile$i@example.com\",\"name\":\"Profile $i\",\"age\":30}" >/dev/null
done
IDS=$(curl -sf "localhost:$PORT/api/v1/users?page_size=20" -H "Authorization: Bearer $TOKEN" |
    python3 -c 'import json, sys; print(",".join(str(u["id"]) for u in json.load(sys.stdin)["data"]))')
get_users() { # count
    python3 - "$PORT" "$1" "$TOKEN" "$IDS" <<'PY'
import http.client, sys
port, n, token, ids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
c = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": f"Bearer {token}"}
for i in range(n):
    c.request("GET", f"/api/v1/users/{ids[i % len(ids)]}", headers=headers); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}
get_users 200
callgrind_control --zero "$VPID" >/dev/null
get_users "$N"
callgrind_control --dump=measured "$VPID" >/dev/null
OUT=$WORK/callgrind.out.1
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "instructions per GET ($PROFILE): $((TOTAL / N)) ($TOTAL over $N requests)"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null |
    grep -E 'store::|tokio_postgres::client|deadpool|on_response|new_span|verif|jsonwebtoken|metrics::track|memcpy|malloc' |
    head -20 | cut -c1-160
