#!/usr/bin/env bash
# Contract fuzzing: validates the OpenAPI documents, then runs Schemathesis with
# every check, positive and negative data, a fixed seed and a bounded number of
# examples per operation against each service on the embedded SQLite backend:
# user-service alone, then order-service with a user-service behind it, then
# audit-log-service (a user-service behind it for the keys, a few entries in its
# log). Every run sends an admin token; a second pass sends every operation without a token
# and expects 401 from each protected one and no 401 from the public ones.
# Exits non-zero on any failure. Loopback only.
#
#   bash scripts/api-test.sh              # or: make api-test
#   API_TEST_EXAMPLES=300 API_TEST_SEED=7 bash scripts/api-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
EXAMPLES="${API_TEST_EXAMPLES:-100}"
SEED="${API_TEST_SEED:-20261124}"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/schemathesis-venv"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# Captured first: `grep -q` would close the pipe early and pipefail would count it.
installed="$("$VENV/bin/schemathesis" --version 2>/dev/null || true) $("$VENV/bin/pip" show openapi-spec-validator 2>/dev/null || true)"
if [[ "$installed" != *"version $SCHEMATHESIS_VERSION"* || "$installed" != *"Version: $SPEC_VALIDATOR_VERSION"* ]]; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
fi

echo "== building the services"
cargo build --quiet -p user-service -p order-service -p audit-log-service
BIN="$TARGET_DIR/debug"

echo "== the committed specs are valid OpenAPI 3.1"
"$VENV/bin/openapi-spec-validator" docs/openapi/user-service.json docs/openapi/order-service.json \
    docs/openapi/audit-log-service.json

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() {
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "service on port $1 did not become ready" >&2
    return 1
}

# One identity for every service of this run, as a PostgreSQL deployment sets it.
openssl genpkey -algorithm ed25519 -out "$WORK/jwt-signing-key.pem" 2>/dev/null
export AUTH_JWT_PRIVATE_KEY_FILE="$WORK/jwt-signing-key.pem"
AUTH_CLIENT_SECRET="$(openssl rand -hex 24)"
AUTH_SERVICE_CLIENT_SECRET="$(openssl rand -hex 24)"
export AUTH_CLIENT_SECRET AUTH_SERVICE_CLIENT_SECRET
# Longer than a fuzzing run; failed logins are fuzzed too, so lift their throttle.
export AUTH_TOKEN_TTL_MINUTES=120 AUTH_LOGIN_MAX_FAILURES=1000000

start_service() { # binary, variable prefix, port, database file, more VAR=value...
    local name=$1 prefix=$2 port=$3 database=$4
    shift 4
    env "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" "${prefix}_RATE_LIMIT=0" \
        "${prefix}_LOG_LEVEL=warn" "${prefix}_DATABASE_URL=sqlite:$database" "$@" \
        "$BIN/$name" >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$port"
}

admin_token() { # user-service port
    curl -fsS -X POST "http://127.0.0.1:$1/api/v1/auth/token" -H 'Content-Type: application/json' \
        -d "{\"client_id\":\"operator\",\"client_secret\":\"$AUTH_CLIENT_SECRET\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["access_token"])'
}

fuzz() { # name, port, token
    echo "== schemathesis: $1 as admin ($EXAMPLES examples per operation, seed $SEED)"
    "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$2/openapi.json" \
        --header "Authorization: Bearer $3" \
        --checks all --mode all --seed "$SEED" --max-examples "$EXAMPLES" \
        --request-timeout 10 --no-color
    echo "== without a token: $1 answers 401 on every protected operation, and only there"
    python3 scripts/anonymous-check.py "http://127.0.0.1:$2"
}

USERS_PORT="$(free_port)"
start_service user-service USER_SERVICE "$USERS_PORT" "$WORK/users-fuzz.db"
fuzz user-service "$USERS_PORT" "$(admin_token "$USERS_PORT")"

# order-service, with a fresh user-service holding one active user (id 1), so
# that generated orders for user 1 reach the core logic instead of a 404.
BACKING_PORT="$(free_port)"
start_service user-service USER_SERVICE "$BACKING_PORT" "$WORK/users-backing.db"
TOKEN="$(admin_token "$BACKING_PORT")"
curl -fsS -X POST "http://127.0.0.1:$BACKING_PORT/api/v1/users" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $TOKEN" \
    -d '{"email":"fuzz@example.com","name":"Fuzz Customer","age":30}' >/dev/null
ORDERS_PORT="$(free_port)"
start_service order-service ORDER_SERVICE "$ORDERS_PORT" "$WORK/orders.db" \
    "ORDER_SERVICE_USER_SERVICE_URL=http://127.0.0.1:$BACKING_PORT"
fuzz order-service "$ORDERS_PORT" "$TOKEN"

# audit-log-service, verifying tokens with the backing user-service's keys. Without
# NATS_URL it consumes nothing, so a few entries are written straight into its
# table (as its consumer would) for the list to answer with.
AUDIT_PORT="$(free_port)"
start_service audit-log-service AUDIT_LOG_SERVICE "$AUDIT_PORT" "$WORK/audit.db" \
    "AUDIT_LOG_SERVICE_USER_SERVICE_URL=http://127.0.0.1:$BACKING_PORT"
python3 - "$WORK/audit.db" <<'PYTHON'
import json, sqlite3, sys, uuid

rows = [
    ("user.created", "anonymous", [], "user", "1", {"id": 1, "email": "fuzz@example.com"}),
    ("auth.token_issued", "operator", ["admin"], "auth", "operator", {"client_id": "operator"}),
    ("order.created", "1", ["user"], "order", "1", {"id": 1, "status": "pending"}),
    ("order.status_changed", "system", [], "order", "1", {"from": "pending", "to": "cancelled"}),
    ("user.deleted", "operator", ["admin"], "user", "1", None),
]
with sqlite3.connect(sys.argv[1]) as db:
    for i, (action, sub, roles, kind, rid, payload) in enumerate(rows):
        at = f"2026-12-04T10:00:0{i}.12345{i}+00:00"
        db.execute(
            "INSERT INTO audit_logs (id, action, actor_sub, actor_roles, resource_type, resource_id,"
            " request_id, occurred_at, payload, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(uuid.uuid4()), action, sub, json.dumps(roles), kind, rid, f"req-{i}" if i % 2 else None,
             at, json.dumps(payload), at),
        )
PYTHON
fuzz audit-log-service "$AUDIT_PORT" "$TOKEN"

if grep -q "panicked" "$WORK"/*.log; then
    echo "a service panicked during fuzzing:" >&2
    grep -h "panicked" "$WORK"/*.log >&2
    exit 1
fi
echo "== contract fuzzing passed"
