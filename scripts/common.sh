# Sourced by the bench and soak scripts (bench/run.sh, bench/scale.sh,
# bench/tracing.sh, bench/cpu_split.sh, bench/profile.sh, scripts/soak.sh),
# right after they find ROOT.

# start_script TAG HELP_LINES ARGS...: the preamble every one of them shares:
# log and die (lines tagged TAG, on stderr), py (bench/bench.py), BENCH, the
# working directory ROOT, and MODE from the arguments (parse_mode).
start_script() {
    LOG_TAG=$1
    shift
    log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
    die() { log "ERROR: $*"; exit 1; }
    py() { python3 "$ROOT/bench/bench.py" "$@"; }
    BENCH=$ROOT/bench
    cd "$ROOT"
    parse_mode "$@"
}

# parse_mode HELP_LINES ARGS...: sets MODE to smoke (--smoke) or full; --help
# prints the calling script's header comment (its lines 2..HELP_LINES).
parse_mode() {
    local help_lines=$1 arg
    shift
    MODE=full
    for arg in "$@"; do
        case $arg in
            --smoke) MODE=smoke ;;
            -h | --help) sed -n "2,${help_lines}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument '$arg' (try --help)" ;;
        esac
    done
}

# build_dist_binaries ROOT SKIP builds the three services in the optimised `dist`
# profile, unless SKIP is 1, and sets USER_BIN, ORDER_BIN and AUDIT_BIN to the binaries.
build_dist_binaries() {
    local root=$1 skip=$2 target
    if [[ $skip != 1 ]]; then
        log "cargo build --profile dist -p user-service -p order-service -p audit-log-service"
        cargo build --profile dist --quiet -p user-service -p order-service -p audit-log-service
    fi
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$root/$target
    USER_BIN=$target/dist/user-service
    ORDER_BIN=$target/dist/order-service
    AUDIT_BIN=$target/dist/audit-log-service
    [[ -x $USER_BIN && -x $ORDER_BIN && -x $AUDIT_BIN ]] || die "dist binaries not found under $target/dist"
}

# make_run_dir NAME: a fresh working directory for one run in WORK, holding the
# run's signing key and secrets (setup_identity).
make_run_dir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    setup_identity "$WORK"
}

# launch_service LOG PORT TIMEOUT BINARY [VAR=value...]: spawns BINARY in WORK with
# only these variables (plus PATH and HOME), its output in LOG, and waits until
# http://127.0.0.1:PORT/health/ready answers (bench.py launch); prints "pid ms".
# Fails when the process exits first or is not ready within TIMEOUT seconds.
launch_service() {
    local log=$1 port=$2 timeout=$3 bin=$4
    shift 4
    env -i PATH="$PATH" HOME="${HOME:-/root}" "$@" python3 "$ROOT/bench/bench.py" launch \
        --log "$log" --cwd "$WORK" --url "http://127.0.0.1:$port/health/ready" --timeout "$timeout" -- "$bin"
}

# stop_processes PID...: asks each to stop (TERM); those already gone are skipped.
stop_processes() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
}

# random_hex: eight hex digits, to name one run's databases and streams.
random_hex() { od -An -N4 -tx4 /dev/urandom | tr -d ' \n'; }

# drop_databases NAME...: drops a run's databases, closing their sessions; quiet,
# as it runs on the way out.
drop_databases() {
    local db
    for db in "$@"; do
        psql -qX -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" postgres >/dev/null 2>&1 || true
    done
}

# setup_identity WORK: a signing key and client secrets for the services of one
# bench or soak run (no default secret exists), as VAR=value words in AUTH_ENV
# to pass to each service. Tokens live long enough for the whole run.
setup_identity() {
    local work=$1
    openssl genpkey -algorithm ed25519 -out "$work/jwt-signing-key.pem" 2>/dev/null ||
        die "openssl is required to make the run's signing key"
    AUTH_CLIENT_SECRET=$(openssl rand -hex 24)
    AUTH_ENV=("AUTH_JWT_PRIVATE_KEY_FILE=$work/jwt-signing-key.pem" "AUTH_CLIENT_SECRET=$AUTH_CLIENT_SECRET"
        "AUTH_SERVICE_CLIENT_SECRET=$(openssl rand -hex 24)" "AUTH_TOKEN_TTL_MINUTES=240")
}

# admin_token URL: the operator's token from the user-service at URL.
admin_token() {
    curl -fsS -X POST "$1/api/v1/auth/token" -H 'Content-Type: application/json' \
        -d "{\"client_id\":\"operator\",\"client_secret\":\"$AUTH_CLIENT_SECRET\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["access_token"])'
}
