#!/usr/bin/env bash
# Validates the operations files against the real services, without a Docker engine:
#
#   monitoring/   promtool check config / check rules / test rules; a throwaway Prometheus
#                 scrapes the live services with the real config and rules and evaluates
#                 every dashboard query; every metric (and label) name used by the rules,
#                 the rule tests and the Grafana dashboard exists in live /metrics output;
#                 `promtool check metrics` on that output
#   services      started from the release binaries on free loopback ports and SQLite temp
#                 files (rate limit off); a few requests create the labelled series; the
#                 Dockerfiles' HEALTHCHECK command is run against them
#   compose       docker-compose.yml parses (`docker compose config`, or the standalone
#                 docker-compose) and has the databases, healthchecks, env and mounts;
#                 the OpenTelemetry Collector config parses and its pipelines are wired
#   Kubernetes    deploy/k8s/base rendered with kustomize (or each listed file when neither
#                 kubectl nor kustomize is installed) and validated against the Kubernetes
#                 schemas with kubernetes-validate --strict (schemas bundled, works offline),
#                 plus probes / security context / resources / selectors
#   env           .env.example, compose and the ConfigMaps name only variables the services
#                 read (found in their source), and .env.example lists all of them
#   Makefile      `make help` lists every target, `make -n <target>` works for each
#
# Installs what it needs when missing: promtool and prometheus (Debian package
# `prometheus`), docker-compose (Debian package, only when no `docker compose` plugin),
# curl; PyYAML and kubernetes-validate from PyPI into a virtualenv at
# ${XDG_CACHE_HOME:-$HOME/.cache}/ops-venv.
#
# Usage: bash scripts/validate-ops.sh         (from any directory; exits non-zero on failure)
# Environment:
#   CARGO_TARGET_DIR   honoured (the binaries are looked up where cargo puts them)
#   OPS_PROFILE        release (default) or debug: which build of the services to run
#   OPS_SKIP_BUILD=1   do not run cargo build; use the binaries already built
#   OPS_KEEP_WORK=1    keep the temporary directory (service logs, metrics, configs)
#   OPS_NO_KUSTOMIZE=1 validate the files listed in kustomization.yaml one by one even
#                      when kubectl/kustomize is installed
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd -P)"

OPS_PROFILE="${OPS_PROFILE:-release}"
case "$OPS_PROFILE" in release | debug) ;; *) echo "OPS_PROFILE must be release or debug" >&2; exit 2 ;; esac
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/ops-venv"
PY_REQUIREMENTS=("PyYAML==6.0.4" "kubernetes-validate==1.37.0")
K8S_VERSION="1.37.0"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/validate-ops.XXXXXX")"
RESULTS="$WORK/results"
: >"$RESULTS"
export OPS_RESULTS="$RESULTS"
PIDS=()

# ---------------------------------------------------------------------------------------
# reporting

section() { printf '\n== %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; echo "PASS" >>"$RESULTS"; }
fail() { printf 'FAIL  %s\n' "$*"; echo "FAIL" >>"$RESULTS"; }
note() { printf '      %s\n' "$*"; }
die() {
    printf 'FAIL  %s\n' "$*"
    echo "FAIL" >>"$RESULTS"
    exit 1
}
indent() { sed 's/^/      /'; }

# check NAME CMD...: runs CMD, PASS or FAIL with its output indented.
check() {
    local name="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        pass "$name"
    else
        fail "$name"
        printf '%s\n' "$out" | tail -n 40 | indent
    fi
}

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local passed failed
    passed=$(grep -c '^PASS' "$RESULTS" 2>/dev/null || true)
    failed=$(grep -c '^FAIL' "$RESULTS" 2>/dev/null || true)
    if [[ "$failed" != 0 || "$status" != 0 ]]; then
        for log in "$WORK"/*.log; do
            [[ -s "$log" ]] || continue
            printf '\n-- last lines of %s\n' "$(basename "$log")"
            tail -n 8 "$log" | cut -c1-400 | indent
        done
    fi
    if [[ "${OPS_KEEP_WORK:-}" == 1 ]]; then
        printf '\nwork directory kept: %s\n' "$WORK"
    else
        rm -rf "$WORK"
    fi
    printf '\nvalidation: %s passed, %s failed\n' "${passed:-0}" "${failed:-0}"
    if [[ "$status" == 0 && "$failed" != 0 ]]; then
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# tools

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || {
        echo "apt-get not available: install $* with your package manager" >&2
        return 1
    }
    local env=(env DEBIAN_FRONTEND=noninteractive)
    if ! as_root "${env[@]}" apt-get install -y --no-install-recommends "$@" >"$WORK/apt.log" 2>&1; then
        if [[ "$APT_UPDATED" == 0 ]]; then
            APT_UPDATED=1
            as_root apt-get update >>"$WORK/apt.log" 2>&1 || true
        fi
        as_root "${env[@]}" apt-get install -y --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1 || {
            tail -n 20 "$WORK/apt.log" >&2
            return 1
        }
    fi
}

section "tools"
if ! command -v curl >/dev/null 2>&1; then
    apt_install curl ca-certificates || die "curl is required (apt-get install curl)"
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    note "installing promtool + prometheus (Debian package 'prometheus')"
    apt_install prometheus || die "promtool is required: apt-get install prometheus"
fi
pass "promtool: $(promtool --version 2>&1 | head -n 1)"

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    note "no 'docker compose' plugin: installing the standalone docker-compose (Debian package)"
    apt_install docker-compose || die "docker compose is required to check docker-compose.yml: apt-get install docker-compose"
    COMPOSE=(docker-compose)
fi
pass "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version 2>/dev/null | head -n 1))"

PY="$VENV/bin/python"
if ! "$PY" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
    note "creating $VENV (${PY_REQUIREMENTS[*]} from PyPI)"
    if ! python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
        apt_install python3-venv >/dev/null 2>&1 || true
        python3 -m venv "$VENV" >>"$WORK/venv.log" 2>&1 || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" >>"$WORK/venv.log" 2>&1 ||
        die "pip install ${PY_REQUIREMENTS[*]} failed (see $WORK/venv.log)"
fi
pass "python venv: $("$PY" -c 'import yaml, importlib.metadata as m; print("PyYAML", yaml.__version__, "kubernetes-validate", m.version("kubernetes-validate"))')"

KUSTOMIZE=()
if [[ "${OPS_NO_KUSTOMIZE:-}" == 1 ]]; then
    : # forced per-file fallback (tests the path taken on machines without kubectl/kustomize)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build)
fi

# ---------------------------------------------------------------------------------------
# the Python half (YAML/JSON/PromQL-name checks), written out once

CHECKS="$WORK/ops_checks.py"
cat >"$CHECKS" <<'PYTHON'
import json, os, re, sys, time, tomllib, urllib.parse, urllib.request
from pathlib import Path

import yaml

RESULTS = os.environ.get("OPS_RESULTS")
FAILED = False


def report(ok, msg, details=()):
    global FAILED
    print(("PASS  " if ok else "FAIL  ") + msg)
    for d in details:
        print("      " + d)
    if RESULTS:
        with open(RESULTS, "a") as f:
            f.write("PASS\n" if ok else "FAIL\n")
    if not ok:
        FAILED = True


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---- the variables the services read, from their source ---------------------------
CALL = re.compile(
    r"\b(\w+)\s*\.\s*(?:raw|parse_or|seconds_or|fractional_seconds_or|millis_or|choice_or|invalid)"
    r"\(\s*\"([A-Z][A-Z0-9_]*)\"")
ENV_NEW = re.compile(r"let\s+(\w+)\s*=\s*Env::new\(\s*(\"[A-Z_]*\"|[A-Z_]+)\s*,")
# the same variables under another prefix: env.with_prefix("CIRCUIT_BREAKER")
WITH_PREFIX = re.compile(r"let\s+(\w+)\s*=\s*\w+\.with_prefix\(\s*(\"[A-Z_]*\")\s*\)")
CONST = re.compile(r"const\s+([A-Z_]+)\s*:\s*&str\s*=\s*\"([A-Z_]+)\"")
# helper functions taking the Env first: parse_networks(env, "TRUSTED_PROXIES")
HELPER = re.compile(r"\(\s*&?(\w*env)\s*,\s*\"([A-Z][A-Z0-9_]*)\"")
DIRECT = re.compile(r"env::var(?:_os)?\(\s*\"([A-Z][A-Z0-9_]*)\"")
# AUTH_* names are passed around as literals (client_credentials(env, "AUTH_CLIENT_ID", ...)).
AUTH_LITERAL = re.compile(r"\"(AUTH_[A-Z0-9_]+)\"")
SERVICE_PREFIX = {"user-service": "USER_SERVICE", "order-service": "ORDER_SERVICE",
                  "audit-log-service": "AUDIT_LOG_SERVICE"}
# Settings every service shares, read without a prefix: identity and the event bus.
SHARED_PREFIXES = ("AUTH_", "NATS_", "EVENTS_")


def service_variables(root):
    root = Path(root)
    names = set()
    files = list((root / "crates/platform/src").rglob("*.rs"))
    files += list((root / "src").rglob("*.rs"))
    for svc in SERVICE_PREFIX:
        files += list((root / "services" / svc / "src").rglob("*.rs"))
    for path in files:
        if path.name == "testing.rs" or "testing" in path.parts:
            continue
        text = path.read_text().split("#[cfg(test)]")[0]
        consts = dict(CONST.findall(text))
        receivers = {}
        for recv, arg in ENV_NEW.findall(text) + WITH_PREFIX.findall(text):
            receivers[recv] = arg.strip('"') if arg.startswith('"') else consts.get(arg)
        rel = path.relative_to(root).parts
        default = ([SERVICE_PREFIX[rel[1]]] if rel[0] == "services"
                   else list(SERVICE_PREFIX.values()))
        for recv, suffix in CALL.findall(text) + HELPER.findall(text):
            if recv == "self":
                continue
            # The shared identity and event settings are never prefixed (every service reads them).
            if suffix.startswith(SHARED_PREFIXES):
                names.add(suffix)
                continue
            prefixes = [receivers[recv]] if receivers.get(recv) is not None else default
            # An empty prefix (Env::new("", ...)) reads the bare name: LOG_FORMAT.
            names.update(f"{p}_{suffix}" if p else suffix for p in prefixes)
        names.update(DIRECT.findall(text))
        names.update(AUTH_LITERAL.findall(text))
        if "from_default_env" in text or "RUST_LOG" in text:
            names.add("RUST_LOG")
    return names


def cmd_env(root):
    """.env.example lists every variable the services read and nothing unknown."""
    known = service_variables(root)
    ok = len(known) > 20
    report(ok, f"found {len(known)} variables read by the services in their source",
           [] if ok else ["too few: the source scan (scripts/validate-ops.sh) needs updating"])
    text = Path(root, ".env.example").read_text()
    listed = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))
    missing = sorted(known - listed)
    report(not missing, ".env.example lists every variable the services read",
           [f"missing: {', '.join(missing)}"] if missing else [])
    compose_text = Path(root, "docker-compose.yml").read_text()
    compose_only = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    unknown = sorted(listed - known - compose_only)
    report(not unknown, ".env.example names only variables the services (or compose) read",
           [f"unknown: {', '.join(unknown)}"] if unknown else [])


# ---- metrics exposition ------------------------------------------------------------
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def parse_exposition(paths):
    series = {}   # sample name -> set of label names
    types = {}    # family -> type
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.startswith("# TYPE "):
                _, _, fam, typ = line.split(None, 3)
                types[fam] = typ
                continue
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if m:
                series.setdefault(m.group(1), set()).update(LABEL.findall(m.group(3) or ""))
    return series, types


CONTRACT = {
    "user_service": {},
    "order_service": {"circuit_breaker_state": "gauge", "user_client_requests_total": "counter",
                      "order_verifications_total": "counter"},
    "audit_log_service": {"events_stored_total": "counter", "events_duplicate_total": "counter",
                          "consumer_lag": "gauge"},
}
COMMON = {"requests_total": "counter", "request_duration_seconds": "histogram",
          "errors_total": "counter", "requests_in_flight": "gauge",
          "rate_limited_total": "counter", "rate_limiter_clients": "gauge"}


def cmd_metrics_contract(user_metrics, order_metrics, audit_metrics):
    for prefix, path in (("user_service", user_metrics), ("order_service", order_metrics),
                         ("audit_log_service", audit_metrics)):
        _, types = parse_exposition([path])
        expected = {f"{prefix}_{k}": v for k, v in {**COMMON, **CONTRACT[prefix]}.items()}
        bad = [f"{name} ({typ})" for name, typ in sorted(expected.items()) if types.get(name) != typ]
        report(not bad, f"{prefix.replace('_', '-')} exports the contract's {len(expected)} metric families",
               [f"missing or wrong type: {', '.join(bad)}"] if bad else [])


# ---- PromQL expressions in rules, rule tests and the dashboard ------------------------
IDENT = re.compile(r"(?<![A-Za-z0-9_:])((?:user|order|audit_log)_service_[A-Za-z0-9_:]*)")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])((?:user|order|audit_log)_service_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "${__rate_interval}": "5m", "${__interval}": "1m"}


def grafana_expr(expr):
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    return expr


def dashboard_targets(root):
    dash = json.loads(Path(root, "monitoring/grafana/dashboards/microservices.json").read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"dashboard panel {p.get('id')} '{p.get('title')}' {t.get('refId')}",
                                grafana_expr(t["expr"])))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    return out


def rule_exprs(root):
    out = []
    for doc in load_yaml_all(Path(root, "monitoring/alerts.yml")):
        for g in doc.get("groups", []):
            for r in g.get("rules", []):
                out.append((f"rule {r.get('alert') or r.get('record')}", r["expr"]))
    return out


def test_series(root):
    out = []
    for doc in load_yaml_all(Path(root, "monitoring/alerts.test.yml")):
        for i, t in enumerate(doc.get("tests", [])):
            for s in t.get("input_series", []):
                out.append((f"rule test {i + 1} series", s["series"]))
    return out


def cmd_metric_refs(root, *metric_files):
    series, types = parse_exposition(metric_files)
    histograms = {f for f, t in types.items() if t == "histogram"}
    sources = [("monitoring/alerts.yml", rule_exprs(root)),
               ("monitoring/alerts.test.yml", test_series(root)),
               ("grafana dashboard", dashboard_targets(root))]
    total_names = set()
    for label, exprs in sources:
        problems, names = [], set()
        for where, expr in exprs:
            expr = QUOTED.sub('""', expr)  # label values are not names
            idents = IDENT.findall(expr)
            names.update(idents)
            for ident in idents:
                if ident in series:
                    continue
                if ident in histograms:
                    problems.append(f"{where}: {ident} is a histogram; use {ident}_bucket/_sum/_count")
                else:
                    problems.append(f"{where}: {ident} is not in the live /metrics output")
            used_labels = set()
            for ident, body in SELECTOR.findall(expr):
                if ident not in series:
                    continue
                for lab in MATCHER.findall(body):
                    if lab not in series[ident] | TARGET_LABELS | {"__name__"}:
                        problems.append(f"{where}: {ident} has no label '{lab}' "
                                        f"(live: {', '.join(sorted(series[ident])) or 'none'})")
            for ident in idents:
                used_labels |= series.get(ident, set())
            for group in GROUPING.findall(expr):
                for lab in filter(None, (x.strip() for x in group.split(","))):
                    if idents and lab not in used_labels | TARGET_LABELS:
                        problems.append(f"{where}: groups by '{lab}', which none of "
                                        f"{', '.join(sorted(set(idents)))} carries")
        if not names and label != "monitoring/alerts.test.yml":
            problems.append("no user_service_/order_service_/audit_log_service_ metric referenced at all")
        total_names |= names
        report(not problems, f"{label}: {len(names)} metric names ({len(exprs)} expressions) exist in live /metrics",
               problems)
    return total_names


def cmd_dashboard(root, rules_out):
    """Dashboard JSON structure, datasource wiring; writes its queries as recording rules
    so that promtool can check their PromQL syntax."""
    path = Path(root, "monitoring/grafana/dashboards/microservices.json")
    try:
        dash = json.loads(path.read_text())
    except ValueError as e:
        report(False, f"{path.name} is valid JSON", [str(e)])
        return
    report(True, f"{path.name} is valid JSON")
    ds_docs = load_yaml_all(Path(root, "monitoring/grafana/provisioning/datasources/prometheus.yml"))
    ds_uids = {d.get("uid") for doc in ds_docs for d in doc.get("datasources", [])}
    problems, ids, count = [], set(), 0

    def walk(panels):
        nonlocal count
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                problems.append(f"duplicate panel id {pid}")
            ids.add(pid)
            gp = p.get("gridPos", {})
            if not all(k in gp for k in ("h", "w", "x", "y")) or gp.get("x", 0) + gp.get("w", 0) > 24:
                problems.append(f"panel {pid} '{p.get('title')}': bad gridPos {gp}")
            if p.get("type") != "row":
                count += 1
                if not p.get("title"):
                    problems.append(f"panel {pid}: no title")
                if (p.get("datasource") or {}).get("uid") not in ds_uids:
                    problems.append(f"panel {pid}: datasource {p.get('datasource')} is not a provisioned uid {sorted(ds_uids)}")
                if not p.get("targets"):
                    problems.append(f"panel {pid} '{p.get('title')}': no queries")
                for t in p.get("targets", []):
                    if (t.get("datasource") or {}).get("uid") not in ds_uids:
                        problems.append(f"panel {pid} target {t.get('refId')}: datasource not provisioned")
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dash:
            problems.append(f"missing top-level '{key}'")
    report(not problems, f"dashboard '{dash.get('title')}': {count} panels, datasource uid {sorted(ds_uids)} provisioned",
           problems)
    # the provider must point at where compose mounts the dashboards
    prov = load_yaml_all(Path(root, "monitoring/grafana/provisioning/dashboards/dashboards.yml"))
    paths = {p.get("options", {}).get("path") for doc in prov for p in doc.get("providers", [])}
    compose = yaml.safe_load(Path(root, "docker-compose.yml").read_text())
    mounts = [v.split(":") for v in compose["services"]["grafana"].get("volumes", []) if isinstance(v, str)]
    dash_mount = {m[1] for m in mounts if len(m) >= 2 and m[0].rstrip("/").endswith("monitoring/grafana/dashboards")}
    report(bool(paths & dash_mount), "grafana dashboard provider path matches the compose mount",
           [] if paths & dash_mount else [f"provider paths {paths}, compose mounts {dash_mount}"])
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr}
             for i, (_, expr) in enumerate(dashboard_targets(root))]
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def cmd_prom_config(root, out, user_addr, order_addr, audit_addr, prom_addr):
    """The real monitoring/prometheus.yml, pointed at the live services, scraping every second."""
    cfg = yaml.safe_load(Path(root, "monitoring/prometheus.yml").read_text())
    cfg.setdefault("global", {}).update({"scrape_interval": "1s", "evaluation_interval": "1s",
                                         "scrape_timeout": "1s"})
    cfg["rule_files"] = [str(Path(root, "monitoring", f)) for f in cfg.get("rule_files", [])]
    cfg.pop("alerting", None)
    addrs = {"user-service": user_addr, "order-service": order_addr, "audit-log-service": audit_addr,
             "prometheus": prom_addr}
    jobs = set()
    for sc in cfg.get("scrape_configs", []):
        jobs.add(sc["job_name"])
        for st in sc.get("static_configs", []):
            st["targets"] = [addrs[sc["job_name"]]]
    missing = set(SERVICE_PREFIX) - jobs
    report(not missing, "monitoring/prometheus.yml scrapes every service (jobs user-service, order-service, "
           "audit-log-service)",
           [f"missing jobs: {missing}"] if missing else [])
    Path(out).write_text(yaml.safe_dump(cfg))


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def cmd_prom_live(root, base):
    deadline = time.time() + 30
    up = {}
    while time.time() < deadline:
        try:
            jobs = "|".join(SERVICE_PREFIX)
            res = http_json(f"{base}/api/v1/query?query=" + urllib.parse.quote(f'up{{job=~"{jobs}"}}'))
            up = {r["metric"]["job"]: r["value"][1] for r in res["data"]["result"]}
            if all(up.get(job) == "1" for job in SERVICE_PREFIX):
                break
        except OSError:
            pass
        time.sleep(0.5)
    ok = all(up.get(job) == "1" for job in SERVICE_PREFIX)
    report(ok, "prometheus scrapes every live service with monitoring/prometheus.yml (up == 1)",
           [] if ok else [f"up: {up}"])
    time.sleep(4)  # a few scrapes, so that rate() has samples
    problems, empty, count = [], [], 0
    for where, expr in dashboard_targets(root):
        expr = expr.replace("[5m]", "[1m]")
        count += 1
        try:
            res = http_json(f"{base}/api/v1/query?query=" + urllib.parse.quote(expr))
            if res.get("status") != "success":
                problems.append(f"{where}: {res}")
            elif not res["data"]["result"]:
                empty.append(where)
        except Exception as e:  # noqa: BLE001
            detail = e.read().decode()[:300] if hasattr(e, "read") else str(e)
            problems.append(f"{where}: {detail}")
    report(not problems, f"prometheus evaluates all {count} dashboard queries against live data "
           f"({count - len(empty)} with data)", problems)
    for w in empty:
        print(f"      no data yet (needs that kind of traffic): {w}")
    time.sleep(1)
    rules = http_json(f"{base}/api/v1/rules")["data"]["groups"]
    bad = [f"{r['name']}: {r.get('lastError')}" for g in rules for r in g["rules"] if r.get("health") != "ok"]
    n = sum(len(g["rules"]) for g in rules)
    report(n > 0 and not bad, f"prometheus loads and evaluates all {n} alerting rules without errors", bad)
    firing = [f'{a["labels"]["alertname"]} ({a["state"]})'
              for a in http_json(f"{base}/api/v1/alerts")["data"]["alerts"]]
    report(not firing, "no alert is pending or firing for the healthy live services", firing)


# ---- docker-compose.yml ------------------------------------------------------------------
def cmd_compose(root):
    root = Path(root)
    known = service_variables(root)
    c = yaml.safe_load((root / "docker-compose.yml").read_text())
    s = c.get("services", {})
    problems = []
    wanted = ("user-db", "order-db", "audit-db", "nats", "user-service", "order-service", "audit-log-service",
              "prometheus", "grafana")
    for name in wanted:
        if name not in s:
            problems.append(f"service '{name}' missing")
    report(not problems, f"compose has {', '.join(wanted)}", problems)
    if problems:
        return
    top_volumes = set((c.get("volumes") or {}).keys())
    for db, dbname in (("user-db", "userdb"), ("order-db", "orderdb"), ("audit-db", "auditdb")):
        d, p = s[db], []
        if not str(d.get("image", "")).startswith("postgres:16"):
            p.append(f"image {d.get('image')} (want postgres:16)")
        if not d.get("healthcheck", {}).get("test"):
            p.append("no healthcheck")
        vols = [v for v in d.get("volumes", []) if isinstance(v, str)]
        if not any(v.split(":")[0] in top_volumes and v.split(":")[1] == "/var/lib/postgresql/data" for v in vols):
            p.append("no named volume on /var/lib/postgresql/data")
        if dbname not in str(d.get("environment", {}).get("POSTGRES_DB", "")):
            p.append(f"POSTGRES_DB is not {dbname}")
        report(not p, f"compose {db}: postgres:16, healthcheck, named volume, database {dbname}", p)
    n, p = s["nats"], []
    if not str(n.get("image", "")).startswith("nats:2."):
        p.append(f"image {n.get('image')} (want nats:2.x)")
    command = n.get("command", [])
    command = command.split() if isinstance(command, str) else command
    store = command[command.index("-sd") + 1] if "-sd" in command[:-1] else None
    if "-js" not in command or store is None:
        p.append(f"command {command} does not enable JetStream with a store directory (-js -sd DIR)")
    vols = [v.split(":") for v in n.get("volumes", []) if isinstance(v, str)]
    if not any(v[0] in top_volumes and v[1:2] == [store] for v in vols):
        p.append(f"the JetStream store directory {store} is not on a named volume")
    report(not p, "compose nats: JetStream with its store on a named volume", p)
    for svc, db, prefix in (("user-service", "user-db", "USER_SERVICE"), ("order-service", "order-db", "ORDER_SERVICE"),
                            ("audit-log-service", "audit-db", "AUDIT_LOG_SERVICE")):
        d, p = s[svc], []
        build = d.get("build", {})
        dockerfile = root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            p.append(f"dockerfile {dockerfile} missing")
        dep = d.get("depends_on", {})
        if not isinstance(dep, dict) or dep.get(db, {}).get("condition") != "service_healthy":
            p.append(f"depends_on {db} is not condition: service_healthy")
        env = d.get("environment", {})
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        if env.get(f"{prefix}_DB_HOST") != db:
            p.append(f"{prefix}_DB_HOST is not {db}")
        if env.get("NATS_URL") != "nats://nats:4222":
            p.append("NATS_URL is not nats://nats:4222")
        unknown = sorted(set(env) - known)
        if unknown:
            p.append(f"variables the services do not read: {', '.join(unknown)}")
        report(not p, f"compose {svc}: built from {dockerfile.relative_to(root)}, waits for healthy {db}, NATS_URL, "
               f"{len(env)} contract variables", p)
    p = []
    for name, d in s.items():
        for v in d.get("volumes", []):
            if isinstance(v, str) and v.startswith((".", "/")):
                src = (root / v.split(":")[0]).resolve()
                if not src.exists():
                    p.append(f"{name}: bind mount source {v.split(':')[0]} does not exist")
    report(not p, "compose bind mounts (prometheus config and rules, grafana provisioning) exist", p)


# ---- Dockerfiles -------------------------------------------------------------------------
def dockerfile_instructions(path):
    text = Path(path).read_text()
    lines, cur = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        if raw.lstrip().startswith("#"):
            continue  # comment inside a continuation
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]


def cmd_dockerfiles(root):
    root = Path(root)
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    members = cargo.get("workspace", {}).get("members", [])
    ignore = [l.strip().rstrip("/") for l in (root / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    for svc, port in (("user-service", "8081"), ("order-service", "8082"), ("audit-log-service", "8083")):
        path = root / "Dockerfile"
        ins = dockerfile_instructions(path)
        p = []
        args = (compose.get(svc, {}).get("build") or {}).get("args") or {}
        if args.get("SERVICE") != svc or str(args.get("PORT")) != port:
            p.append(f"compose builds {svc} without SERVICE={svc} and PORT={port}")
        if not (root / "services" / svc / "Cargo.toml").is_file():
            p.append(f"SERVICE={svc} names no workspace member")
        froms = [a for i, a in ins if i == "FROM"]
        if len(froms) < 2:
            p.append("not multi-stage")
        runs = " ".join(a for i, a in ins if i == "RUN")
        if 'cargo build --profile dist --locked -p "${SERVICE}"' not in runs:
            p.append("no 'cargo build --profile dist --locked -p \"${SERVICE}\"'")
        copies = [a for i, a in ins if i == "COPY"]
        for m in members:
            if not any(c.split()[0] == f"{m}/Cargo.toml" for c in copies):
                p.append(f"dependency layer does not copy {m}/Cargo.toml (cargo needs every member)")
        if not any(c.split()[0] == "Cargo.lock" or "Cargo.lock" in c.split()[:-1] for c in copies):
            p.append("Cargo.lock not copied (--locked)")
        for c in copies:
            if c.startswith("--from"):
                continue
            for src in c.split()[:-1]:
                src = src.replace("${SERVICE}", svc)
                if not (root / src).exists():
                    p.append(f"COPY source {src} does not exist")
                if any(src == ig or src.startswith(ig + "/") for ig in ignore):
                    p.append(f"COPY source {src} is excluded by .dockerignore")
        last = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
        final = ins[last:]
        users = [a for k, a in final if k == "USER"]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            p.append("final stage does not switch to a non-root USER")
        if not any(k == "HEALTHCHECK" for k, _ in final):
            p.append("no HEALTHCHECK")
        if not any(k == "EXPOSE" and a == "${PORT}" for k, a in final):
            p.append("does not EXPOSE ${PORT}")
        if not any(k == "WORKDIR" and a == "/app" for k, a in final):
            p.append("WORKDIR is not /app")
        report(not p, f"Dockerfile for {svc}: multi-stage, cached dependency layer, --locked dist build, "
               f"non-root runtime with HEALTHCHECK", p)


def cmd_healthcheck_cmd(dockerfile):
    """Prints the HEALTHCHECK's bash script (exec form: CMD ["bash", "-c", SCRIPT])."""
    for k, a in dockerfile_instructions(dockerfile):
        if k == "HEALTHCHECK":
            arr = json.loads(a[a.index("CMD") + 3:].strip())
            assert arr[:2] == ["bash", "-c"], arr
            print(arr[2])
            return
    raise SystemExit("no HEALTHCHECK")


# ---- Kubernetes ----------------------------------------------------------------------
def cmd_k8s_files(base):
    k = yaml.safe_load(Path(base, "kustomization.yaml").read_text())
    for r in k.get("resources", []):
        print(Path(base, r))


def cmd_k8s_policy(*files):
    known = service_variables(os.environ["OPS_ROOT"])
    docs = [d for f in files for d in load_yaml_all(f)]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    report(set(SERVICE_PREFIX) <= set(deployments),
           f"kubernetes objects: {', '.join(f'{len(v)} {k}' for k, v in sorted(by_kind.items()))}")
    for name, d in sorted(deployments.items()):
        p = []
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if (c.get("livenessProbe", {}).get("httpGet", {}).get("path")) != "/health/live":
                p.append(f"{c['name']}: liveness probe is not GET /health/live")
            if (c.get("readinessProbe", {}).get("httpGet", {}).get("path")) != "/health/ready":
                p.append(f"{c['name']}: readiness probe is not GET /health/ready")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        p.append(f"{c['name']}: no {kind}.{r}")
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                p.append(f"{c['name']}: runAsNonRoot not set")
            if not sc.get("readOnlyRootFilesystem"):
                p.append(f"{c['name']}: readOnlyRootFilesystem not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{c['name']}: allowPrivilegeEscalation not false")
            env_names = set()
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or ef.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in ef else "Secret"
                obj = by_kind.get(kind, {}).get(ref["name"])
                if obj is None:
                    p.append(f"{c['name']}: envFrom {kind} {ref['name']} is not in the manifests")
                else:
                    env_names |= set((obj.get("data") or {}) | (obj.get("stringData") or {}))
            env_names |= {e["name"] for e in c.get("env", [])}
            unknown = sorted(env_names - known)
            if unknown:
                p.append(f"{c['name']}: variables the services do not read: {', '.join(unknown)}")
        svcs = [s for s in by_kind.get("Service", {}).values()
                if s["spec"].get("selector") and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        if not svcs:
            p.append("no Service selects its pods")
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
                if h["spec"]["scaleTargetRef"]["name"] == name and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
        if not hpas:
            p.append("no HorizontalPodAutoscaler targets it")
        pdbs = [b for b in by_kind.get("PodDisruptionBudget", {}).values()
                if all(labels.get(k) == v for k, v in b["spec"]["selector"].get("matchLabels", {}).items())]
        if not pdbs:
            p.append("no PodDisruptionBudget selects its pods")
        report(not p, f"deployment/{name}: probes /health/live + /health/ready, requests/limits, non-root, "
               f"read-only root fs; Service, HPA, PDB and env sources present", p)


# ---- bacon.toml ---------------------------------------------------------------------------
def cmd_bacon(root):
    cfg = tomllib.loads(Path(root, "bacon.toml").read_text())
    jobs = cfg.get("jobs", {})
    p = []
    for svc in SERVICE_PREFIX:
        j = jobs.get(svc)
        if not j:
            p.append(f"no [jobs.{svc}]")
            continue
        if j.get("command", [])[:2] != ["cargo", "run"] or svc not in j.get("command", []):
            p.append(f"[jobs.{svc}] does not run 'cargo run -p {svc}'")
        if j.get("on_change_strategy") != "kill_then_restart" or j.get("background") is not False:
            p.append(f"[jobs.{svc}] is not a restartable long-running job")
        if f"bacon --headless {svc}" not in Path(root, "Makefile").read_text():
            p.append(f"Makefile dev target does not run 'bacon --headless {svc}'")
    report(not p, f"bacon.toml: hot-reload jobs {', '.join(SERVICE_PREFIX)} (used by make dev-*)", p)


def cmd_otel_collector(root):
    """The collector config parses and wires up: each pipeline names defined components,
    OTLP/HTTP is received on 4318 where the services send, the exporter and Grafana's
    Jaeger data source reach compose services. (No otelcol binary is packaged for
    Debian or PyPI, so this is a structure check, not `otelcol validate`.)"""
    root = Path(root)
    path = root / "monitoring/otel-collector.yml"
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        report(False, f"{path.relative_to(root)} parses", [str(e)])
        return
    p = []
    kinds = ("receivers", "processors", "exporters", "extensions")
    defined = {k: set((cfg.get(k) or {}).keys()) for k in kinds}
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if "traces" not in pipelines:
        p.append("no traces pipeline")
    for name, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind) or []:
                if comp not in defined[kind]:
                    p.append(f"pipeline {name}: {kind[:-1]} {comp} is not defined")
        if not pipe.get("receivers") or not pipe.get("exporters"):
            p.append(f"pipeline {name}: needs receivers and exporters")
    for ext in service.get("extensions") or []:
        if ext not in defined["extensions"]:
            p.append(f"extension {ext} is not defined")
    http = (((cfg.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http") or {}
    if not str(http.get("endpoint", "")).endswith(":4318"):
        p.append("the otlp receiver does not take OTLP/HTTP on :4318")
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    col = compose.get("otel-collector") or {}
    if not any(str(v).startswith("./monitoring/otel-collector.yml:") for v in col.get("volumes", [])):
        p.append("compose otel-collector does not mount monitoring/otel-collector.yml")
    for svc in SERVICE_PREFIX:
        env = (compose.get(svc) or {}).get("environment") or {}
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://otel-collector:4318":
            p.append(f"compose {svc}: OTEL_EXPORTER_OTLP_ENDPOINT is not http://otel-collector:4318")
    for name, exp in (cfg.get("exporters") or {}).items():
        host = str((exp or {}).get("endpoint", "")).split("://")[-1].split(":")[0]
        if host and host not in compose:
            p.append(f"exporter {name} sends to {host}, not a compose service")
    ds = load_yaml_all(root / "monitoring/grafana/provisioning/datasources/jaeger.yml")
    urls = [d.get("url", "") for doc in ds for d in doc.get("datasources", []) if d.get("type") == "jaeger"]
    if not urls or any(urllib.parse.urlparse(u).hostname not in compose for u in urls):
        p.append(f"Grafana's Jaeger data source {urls} does not reach a compose service")
    report(not p, "otel-collector config parses; pipelines, receiver, exporter and Grafana's Jaeger "
           "data source are wired to the compose services", p)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    globals()["cmd_" + cmd.replace("-", "_")](*args)
    sys.exit(1 if FAILED else 0)
PYTHON
export OPS_ROOT="$ROOT"
pycheck() { "$PY" "$CHECKS" "$@"; }

# ---------------------------------------------------------------------------------------
section "static checks: Makefile, bacon.toml, Dockerfiles, .env.example"

MAKE_TARGETS=(help build run run-user run-order run-audit dev-user dev-order dev-audit test test-user test-order test-audit lint
    format vet deps install-tools docker-up docker-down docker-clean clean validate-ops api-test)
help_out="$(make --no-print-directory help 2>&1)" || true
missing=()
for t in "${MAKE_TARGETS[@]}"; do
    grep -Eq "^  $t +[^ ]" <<<"$help_out" || missing+=("$t")
done
if [[ ${#missing[@]} == 0 ]]; then
    pass "make help lists all ${#MAKE_TARGETS[@]} targets"
else
    fail "make help does not list: ${missing[*]}"
fi
bad=()
for t in "${MAKE_TARGETS[@]}"; do
    make --no-print-directory -n "$t" >/dev/null 2>"$WORK/make-n.err" || bad+=("$t")
done
if [[ ${#bad[@]} == 0 ]]; then
    pass "make -n works for every target"
else
    fail "make -n fails for: ${bad[*]}"
    indent <"$WORK/make-n.err"
fi
if [[ "$(make --no-print-directory -n test)" == 'cargo test --workspace' ]]; then
    pass "make test runs exactly 'cargo test --workspace'"
else
    fail "make test does not run exactly 'cargo test --workspace': $(make --no-print-directory -n test | tr '\n' ';')"
fi
pycheck bacon "$ROOT" || true
pycheck dockerfiles "$ROOT" || true
pycheck env "$ROOT" || true

# ---------------------------------------------------------------------------------------
section "monitoring: promtool"
check "promtool check config monitoring/prometheus.yml" promtool check config monitoring/prometheus.yml
check "promtool check rules monitoring/alerts.yml" promtool check rules monitoring/alerts.yml
check "promtool test rules monitoring/alerts.test.yml (each alert fires / stays quiet as specified)" \
    promtool test rules monitoring/alerts.test.yml
pycheck dashboard "$ROOT" "$WORK/dashboard-rules.yml" || true
if [[ -s "$WORK/dashboard-rules.yml" ]]; then
    check "dashboard queries are valid PromQL (promtool check rules)" promtool check rules "$WORK/dashboard-rules.yml"
fi

# ---------------------------------------------------------------------------------------
section "compose"
# Compose refuses to start without client secrets and a signing key (no default
# secret exists); the check supplies throwaway ones, as `make secrets` would.
openssl genpkey -algorithm ed25519 -out "$WORK/jwt-signing-key.pem" 2>/dev/null
: >"$WORK/empty.env"
check "${COMPOSE[*]} config (docker-compose.yml parses and validates)" \
    env -u COMPOSE_FILE AUTH_CLIENT_SECRET="$(openssl rand -hex 24)" \
    AUTH_SERVICE_CLIENT_SECRET="$(openssl rand -hex 24)" \
    AUTH_JWT_PRIVATE_KEY_HOST_FILE="$WORK/jwt-signing-key.pem" \
    "${COMPOSE[@]}" --env-file "$WORK/empty.env" -f docker-compose.yml config -q
check "${COMPOSE[*]} config refuses to run without the client secrets" \
    bash -c '! env -u COMPOSE_FILE -u AUTH_CLIENT_SECRET -u AUTH_SERVICE_CLIENT_SECRET "${@:2}" --env-file "$1" -f docker-compose.yml config -q 2>/dev/null' _ "$WORK/empty.env" "${COMPOSE[@]}"
pycheck compose "$ROOT" || true
pycheck otel-collector "$ROOT" || true

# ---------------------------------------------------------------------------------------
section "kubernetes"
K8S_BASE=deploy/k8s/base
K8S_FILES=()
if [[ ${#KUSTOMIZE[@]} -gt 0 ]]; then
    if "${KUSTOMIZE[@]}" "$K8S_BASE" >"$WORK/k8s-rendered.yaml" 2>"$WORK/kustomize.err"; then
        pass "${KUSTOMIZE[*]} $K8S_BASE renders ($(grep -c '^kind:' "$WORK/k8s-rendered.yaml") objects)"
        K8S_FILES=("$WORK/k8s-rendered.yaml")
    else
        fail "${KUSTOMIZE[*]} $K8S_BASE"
        indent <"$WORK/kustomize.err"
    fi
else
    note "no kubectl/kustomize (or OPS_NO_KUSTOMIZE=1): validating each file listed in $K8S_BASE/kustomization.yaml"
    mapfile -t K8S_FILES < <(pycheck k8s-files "$K8S_BASE")
    missing=()
    for f in "${K8S_FILES[@]}"; do [[ -f "$f" ]] || missing+=("$f"); done
    if [[ ${#missing[@]} == 0 && ${#K8S_FILES[@]} -gt 0 ]]; then
        pass "kustomization.yaml lists ${#K8S_FILES[@]} existing files"
    else
        fail "kustomization.yaml lists missing files: ${missing[*]}"
    fi
fi
if [[ ${#K8S_FILES[@]} -gt 0 ]]; then
    check "kubernetes-validate --strict (Kubernetes $K8S_VERSION schemas)" \
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${K8S_FILES[@]}"
    pycheck k8s-policy "${K8S_FILES[@]}" || true
fi

# ---------------------------------------------------------------------------------------
section "services: build and start"

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
    die "cargo metadata failed"
if [[ "$OPS_PROFILE" == release ]]; then
    BUILD=(cargo build --release -p user-service -p order-service -p audit-log-service)
else
    BUILD=(cargo build -p user-service -p order-service -p audit-log-service)
fi
BIN_DIR="$TARGET_DIR/$OPS_PROFILE"
if [[ "${OPS_SKIP_BUILD:-}" == 1 ]]; then
    note "OPS_SKIP_BUILD=1: using the binaries in $BIN_DIR as they are"
else
    note "${BUILD[*]} (a no-op when they are up to date)"
    "${BUILD[@]}" >"$WORK/build.log" 2>&1 || {
        tail -n 30 "$WORK/build.log" | indent
        die "${BUILD[*]} failed"
    }
fi
for bin in user-service order-service audit-log-service; do
    [[ -x "$BIN_DIR/$bin" ]] || die "$BIN_DIR/$bin not found (build it: ${BUILD[*]})"
done
pass "binaries: $BIN_DIR/{user-service,order-service,audit-log-service}"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
USER_PORT=$(free_port)
ORDER_PORT=$(free_port)
AUDIT_PORT=$(free_port)
PROM_PORT=$(free_port)
while [[ "$ORDER_PORT" == "$USER_PORT" ]]; do ORDER_PORT=$(free_port); done
while [[ "$AUDIT_PORT" == "$USER_PORT" || "$AUDIT_PORT" == "$ORDER_PORT" ]]; do AUDIT_PORT=$(free_port); done
while [[ "$PROM_PORT" == "$USER_PORT" || "$PROM_PORT" == "$ORDER_PORT" || "$PROM_PORT" == "$AUDIT_PORT" ]]; do
    PROM_PORT=$(free_port)
done
USER_URL="http://127.0.0.1:$USER_PORT"
ORDER_URL="http://127.0.0.1:$ORDER_PORT"
AUDIT_URL="http://127.0.0.1:$AUDIT_PORT"

# Each service runs in its own directory holding a copy of .env.example as .env (so the
# example is proven to load); the variables set here win over it.
mkdir -p "$WORK/user" "$WORK/order" "$WORK/audit"
cp .env.example "$WORK/user/.env"
cp .env.example "$WORK/order/.env"
cp .env.example "$WORK/audit/.env"

# start_service NAME DIR PREFIX PORT [VAR=value...]: the binary NAME in $WORK/DIR (with
# its .env) on PORT, on its own SQLite file there, the rate limiter off; $! is its pid.
start_service() {
    local name=$1 dir=$2 prefix=$3 port=$4
    shift 4
    (cd "$WORK/$dir" && exec env \
        "${prefix}_HOST=127.0.0.1" "${prefix}_PORT=$port" \
        "${prefix}_DATABASE_URL=sqlite:$WORK/$dir/$name.db" \
        "${prefix}_RATE_LIMIT=0" "$@" \
        "$BIN_DIR/$name") >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}
start_order() {
    start_service order-service order ORDER_SERVICE "$ORDER_PORT" \
        ORDER_SERVICE_USER_SERVICE_URL="$USER_URL" ORDER_SERVICE_USER_SERVICE_TIMEOUT_MS=1000 \
        ORDER_SERVICE_VERIFY_INTERVAL=1 CIRCUIT_BREAKER_TIMEOUT=1
    ORDER_PID=$!
}
# Without NATS_URL (not set here, commented out in .env.example) it consumes nothing:
# what is checked is its API, metrics and probes.
start_audit() {
    start_service audit-log-service audit AUDIT_LOG_SERVICE "$AUDIT_PORT" \
        AUDIT_LOG_SERVICE_USER_SERVICE_URL="$USER_URL"
    AUDIT_PID=$!
}
start_user() {
    start_service user-service user USER_SERVICE "$USER_PORT"
    USER_PID=$!
}
wait_live() { # NAME URL PID
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "$2/health/live" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# One identity for every service, as a deployment sets it (each runs on its own
# SQLite file in its own directory, so generated secrets would not be shared).
openssl genpkey -algorithm ed25519 -out "$WORK/live-signing-key.pem" 2>/dev/null || die "openssl genpkey failed"
export AUTH_JWT_PRIVATE_KEY_FILE="$WORK/live-signing-key.pem"
AUTH_CLIENT_SECRET="$(openssl rand -hex 24)"
AUTH_SERVICE_CLIENT_SECRET="$(openssl rand -hex 24)"
export AUTH_CLIENT_SECRET AUTH_SERVICE_CLIENT_SECRET
TOKEN=

http() { # METHOD URL [JSON] -> prints "STATUS BODY" (with the admin token once there is one)
    local body auth=()
    [[ -n "$TOKEN" ]] && auth=(-H "Authorization: Bearer $TOKEN")
    if [[ $# -ge 3 ]]; then
        body=$(curl -sS -o "$WORK/http.out" -w '%{http_code}' -X "$1" "${auth[@]}" -H 'Content-Type: application/json' -d "$3" "$2") || true
    else
        body=$(curl -sS -o "$WORK/http.out" -w '%{http_code}' -X "$1" "${auth[@]}" "$2") || true
    fi
    printf '%s %s' "$body" "$(cat "$WORK/http.out" 2>/dev/null)"
}
expect() { # NAME WANT_STATUS METHOD URL [JSON]
    local name="$1" want="$2" got
    shift 2
    got="$(http "$@")"
    if [[ "${got%% *}" == "$want" ]]; then
        pass "$name -> $want"
    else
        fail "$name: expected $want, got ${got:0:300}"
    fi
}

start_user
wait_live user-service "$USER_URL" "$USER_PID" || die "user-service did not start (see user-service.log)"
pass "user-service serves on $USER_URL (SQLite, .env.example loaded)"
start_order
wait_live order-service "$ORDER_URL" "$ORDER_PID" || die "order-service did not start (see order-service.log)"
pass "order-service serves on $ORDER_URL (SQLite, .env.example loaded)"
start_audit
wait_live audit-log-service "$AUDIT_URL" "$AUDIT_PID" || die "audit-log-service did not start (see audit-log-service.log)"
pass "audit-log-service serves on $AUDIT_URL (SQLite, .env.example loaded)"

expect "GET /api/v1/users without a token" 401 GET "$USER_URL/api/v1/users"
token_answer="$(http POST "$USER_URL/api/v1/auth/token" "{\"client_id\":\"operator\",\"client_secret\":\"$AUTH_CLIENT_SECRET\"}")"
TOKEN="$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1].split(" ", 1)[1])["data"]["access_token"])' "$token_answer" 2>/dev/null || true)"
[[ -n "$TOKEN" ]] && pass "POST /api/v1/auth/token (operator) -> an admin token" ||
    fail "POST /api/v1/auth/token: ${token_answer:0:300}"

created="$(http POST "$USER_URL/api/v1/users" '{"email":"ops-check@example.com","name":"Ops Check","age":30}')"
if [[ "${created%% *}" == 201 ]]; then
    pass "POST /api/v1/users -> 201"
else
    fail "POST /api/v1/users: expected 201, got ${created:0:300}"
fi
USER_ID="$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1].split(" ", 1)[1])["data"]["id"])' "$created" 2>/dev/null || echo 1)"
expect "POST /api/v1/orders for user $USER_ID (user-service found)" 201 \
    POST "$ORDER_URL/api/v1/orders" "{\"user_id\":$USER_ID,\"product_id\":\"OPS-2\",\"quantity\":2,\"total_price\":19.98}"
expect "GET /api/v1/users/987654321 (missing)" 404 GET "$USER_URL/api/v1/users/987654321"
expect "GET /api/v1/audit-logs (admin, verified with user-service's JWKS)" 200 GET "$AUDIT_URL/api/v1/audit-logs"
expect "GET /api/v1/audit-logs/<unknown event id>" 404 GET "$AUDIT_URL/api/v1/audit-logs/0190a5e4-0000-7000-8000-000000000000"
expect "POST /api/v1/audit-logs (append-only: no write route)" 405 POST "$AUDIT_URL/api/v1/audit-logs" '{}'
saved_token="$TOKEN"
TOKEN=
expect "GET /api/v1/audit-logs without a token" 401 GET "$AUDIT_URL/api/v1/audit-logs"
TOKEN="$saved_token"
expect "GET /api/v1/orders/987654321 (missing)" 404 GET "$ORDER_URL/api/v1/orders/987654321"

# user-service away: order-service still verifies tokens with the keys it has, takes
# the order unverified, and the background verifier settles it once user-service is
# back (this is what moves order_service_order_verifications_total). The lookups that
# fail meanwhile may open the circuit breaker; order-service runs with a 1 s breaker
# timeout so that it closes again soon after user-service returns, not 30 s later
# while Prometheus is watching for pending alerts.
kill "$USER_PID" 2>/dev/null
for _ in $(seq 1 100); do kill -0 "$USER_PID" 2>/dev/null || break; sleep 0.1; done
expect "POST /api/v1/orders while user-service is down (accepted unverified)" 201 \
    POST "$ORDER_URL/api/v1/orders" "{\"user_id\":$USER_ID,\"product_id\":\"OPS-1\",\"quantity\":1,\"total_price\":9.99}"
start_user
wait_live user-service "$USER_URL" "$USER_PID" || die "user-service did not start again (see user-service.log)"
pass "user-service serves again on $USER_URL"

expect "GET user-service /health" 200 GET "$USER_URL/health"
expect "GET order-service /health" 200 GET "$ORDER_URL/health"
expect "GET user-service /health/ready" 200 GET "$USER_URL/health/ready"
expect "GET order-service /health/ready" 200 GET "$ORDER_URL/health/ready"
expect "GET audit-log-service /health" 200 GET "$AUDIT_URL/health"
expect "GET audit-log-service /health/ready" 200 GET "$AUDIT_URL/health/ready"

# The Dockerfiles' HEALTHCHECK command, run as the container would (port from the env).
for svc in user-service order-service audit-log-service; do
    script="$(pycheck healthcheck-cmd Dockerfile)" || { fail "$svc HEALTHCHECK command not found"; continue; }
    case "$svc" in
        user-service) port=$USER_PORT; var=USER_SERVICE_PORT ;;
        order-service) port=$ORDER_PORT; var=ORDER_SERVICE_PORT ;;
        *) port=$AUDIT_PORT; var=AUDIT_LOG_SERVICE_PORT ;;
    esac
    # As the image sets them: APP_SERVICE, and APP_PORT as the fallback port.
    image_env=(APP_SERVICE="$svc" APP_PORT="$PROM_PORT")
    if env "${image_env[@]}" "$var=$port" timeout 5 bash -c "$script" 2>/dev/null &&
        env APP_SERVICE="$svc" APP_PORT="$port" timeout 5 bash -c "$script" 2>/dev/null; then
        if env "${image_env[@]}" "$var=$PROM_PORT" timeout 5 bash -c "$script" 2>/dev/null; then
            fail "Dockerfile HEALTHCHECK ($svc) also passes against a closed port"
        else
            pass "Dockerfile HEALTHCHECK ($svc) passes against the live service (and fails on a closed port)"
        fi
    else
        fail "Dockerfile HEALTHCHECK ($svc) fails against the live service"
    fi
done

# Wait for the verifier to settle the first order (all three result series appear).
for _ in $(seq 1 50); do
    curl -fsS "$ORDER_URL/metrics" 2>/dev/null | grep -q '^order_service_order_verifications_total' && break
    sleep 0.2
done

# ---------------------------------------------------------------------------------------
section "live metrics"
curl -fsS "$USER_URL/metrics" >"$WORK/user-service.metrics" || die "GET $USER_URL/metrics failed"
curl -fsS "$ORDER_URL/metrics" >"$WORK/order-service.metrics" || die "GET $ORDER_URL/metrics failed"
curl -fsS "$AUDIT_URL/metrics" >"$WORK/audit-log-service.metrics" || die "GET $AUDIT_URL/metrics failed"
for svc in user-service order-service audit-log-service; do
    check "promtool check metrics ($svc /metrics)" bash -c "promtool check metrics <'$WORK/$svc.metrics'"
done
pycheck metrics-contract "$WORK/user-service.metrics" "$WORK/order-service.metrics" "$WORK/audit-log-service.metrics" || true
pycheck metric-refs "$ROOT" "$WORK/user-service.metrics" "$WORK/order-service.metrics" "$WORK/audit-log-service.metrics" || true

# ---------------------------------------------------------------------------------------
section "live prometheus (monitoring/prometheus.yml + alerts.yml against the services)"
pycheck prom-config "$ROOT" "$WORK/prometheus.yml" \
    "127.0.0.1:$USER_PORT" "127.0.0.1:$ORDER_PORT" "127.0.0.1:$AUDIT_PORT" "127.0.0.1:$PROM_PORT" || true
check "promtool check config (live copy)" promtool check config "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM_PID=$!
ready=0
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready" 2>/dev/null; then ready=1; break; fi
    kill -0 "$PROM_PID" 2>/dev/null || break
    sleep 0.2
done
if [[ "$ready" == 1 ]]; then
    pass "prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}') ready on 127.0.0.1:$PROM_PORT"
    pycheck prom-live "$ROOT" "http://127.0.0.1:$PROM_PORT" || true
else
    fail "prometheus did not become ready (see prometheus.log)"
fi

# ---------------------------------------------------------------------------------------
section "shutdown"
for pid in "$USER_PID" "$ORDER_PID" "$AUDIT_PID"; do kill -TERM "$pid" 2>/dev/null || true; done
for name in user-service order-service audit-log-service; do
    case "$name" in
        user-service) pid=$USER_PID ;;
        order-service) pid=$ORDER_PID ;;
        *) pid=$AUDIT_PID ;;
    esac
    status=0
    wait "$pid" || status=$?
    if [[ "$status" == 0 ]]; then
        pass "$name stops gracefully on SIGTERM (exit 0)"
    else
        fail "$name exited $status on SIGTERM"
    fi
done
# (prometheus and anything left are stopped by the EXIT trap)
