#!/usr/bin/env bash
# Instructions per authenticated GET /api/v1/users/{id} of the optimised user-service
# on PostgreSQL, counted by callgrind (repeatable on a shared machine, unlike timings).
#
#   bash bench/profile.sh [requests]     default 1000; needs valgrind, psql, python3, openssl
#   PROFILE_REQUEST=post bash bench/profile.sh [requests]
#                                        POST /api/v1/users instead, each with its event
#                                        relayed to NATS (BENCH_NATS, default 127.0.0.1:4222,
#                                        a stream of the run's own, deleted at the end)
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
REQUEST=${PROFILE_REQUEST:-get}
[[ $REQUEST == get || $REQUEST == post ]] || die "PROFILE_REQUEST is get or post"
NATS_SERVER=${BENCH_NATS:-127.0.0.1:4222}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
command -v valgrind >/dev/null || die "valgrind is required (apt-get install -y valgrind)"
(cd "$ROOT" && cargo build --profile "$PROFILE" -q -p user-service ${FEATURES:+--features "$FEATURES"})
WORK=$(mktemp -d)
DB=profile_$(random_hex)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
psql -qh 127.0.0.1 -U postgres -c "CREATE DATABASE $DB" >/dev/null
EVENTS=()
[[ $REQUEST == post ]] && EVENTS=("NATS_URL=nats://$NATS_SERVER" "NATS_STREAM=${DB^^}" "NATS_SUBJECT_PREFIX=$DB")
cleanup() {
    [[ -n ${VPID:-} ]] && kill "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null || true
    if [[ $REQUEST == post ]]; then
        python3 "$ROOT/bench/bench.py" nats-delete-stream "$NATS_SERVER" "${DB^^}" || log "could not delete stream ${DB^^}"
    fi
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    [[ -n ${CALLGRIND_OUT:-} && -f $WORK/callgrind.out.1 ]] && cp "$WORK/callgrind.out.1" "$CALLGRIND_OUT"
    rm -rf "$WORK"
}
trap cleanup EXIT
setup_identity "$WORK"
env USER_SERVICE_HOST=127.0.0.1 USER_SERVICE_PORT="$PORT" USER_SERVICE_RATE_LIMIT=0 USER_SERVICE_LOG_LEVEL=info \
    USER_SERVICE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" "${AUTH_ENV[@]}" ${EVENTS[@]+"${EVENTS[@]}"} \
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
# requests phase count: GETs of the seeded users, or POSTs of new ones (each
# phase its own emails). A POST's event is relayed in the background: the
# measured phase ends once the relay has caught up (its backlog is 0).
requests() {
    python3 - "$PORT" "$REQUEST" "$1" "$2" "$TOKEN" "$IDS" <<'PY'
import http.client, json, sys, time
port, kind, phase, n, token, ids = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6].split(",")
c = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
for i in range(n):
    if kind == "get":
        c.request("GET", f"/api/v1/users/{ids[i % len(ids)]}", headers=headers)
    else:
        body = json.dumps({"email": f"p{phase}{i}@example.com", "name": f"Profile {i}", "age": 30})
        c.request("POST", "/api/v1/users", body=body, headers=headers)
    r = c.getresponse(); r.read()
    assert r.status in (200, 201), r.status
if kind == "post":
    time.sleep(1.5)  # the backlog gauge is refreshed every second
    backlog = lambda: [l for l in c.getresponse().read().decode().splitlines() if l.startswith("user_service_outbox_backlog ")]
    for _ in range(600):
        c.request("GET", "/metrics"); lines = backlog()
        if lines and float(lines[0].split()[1]) == 0:
            break
        time.sleep(0.1)
    else:
        sys.exit("the outbox did not drain")
PY
}
requests warm 200
callgrind_control --zero "$VPID" >/dev/null
requests measured "$N"
callgrind_control --dump=measured "$VPID" >/dev/null
OUT=$WORK/callgrind.out.1
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "instructions per ${REQUEST^^} ($PROFILE): $((TOTAL / N)) ($TOTAL over $N requests)"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null |
    grep -E 'store::|tokio_postgres::client|deadpool|on_response|new_span|verif|jsonwebtoken|metrics::track|memcpy|malloc' |
    head -20 | cut -c1-160
