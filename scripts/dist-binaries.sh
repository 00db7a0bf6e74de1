# Sourced by bench/run.sh and scripts/soak.sh (which define log and die):
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
