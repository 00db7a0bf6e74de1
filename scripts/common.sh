# Sourced by bench/run.sh and scripts/soak.sh (which define log and die).

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

# build_dist_binaries ROOT SKIP builds both services in the optimised `dist`
# profile, unless SKIP is 1, and sets USER_BIN and ORDER_BIN to the binaries.
build_dist_binaries() {
    local root=$1 skip=$2 target
    if [[ $skip != 1 ]]; then
        log "cargo build --profile dist -p user-service -p order-service"
        cargo build --profile dist --quiet -p user-service -p order-service
    fi
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$root/$target
    USER_BIN=$target/dist/user-service
    ORDER_BIN=$target/dist/order-service
    [[ -x $USER_BIN && -x $ORDER_BIN ]] || die "dist binaries not found under $target/dist"
}
