#!/usr/bin/env python3
"""Helpers for bench/run.sh (Python 3 standard library only).

run.sh does the process control; this file does what is awkward in bash:

  launch        start a service and time it to its first passing readiness probe
  free-port     print a free TCP port on 127.0.0.1
  seed-config   write a curl config that POSTs N unique users or orders
  get-json      GET a URL on 127.0.0.1 and print one field of the JSON answer
  set           set keys in a JSON file (created when missing)
  wrk-record    parse the BENCH_RESULT line of a wrk run into a run file
  pgbench-record  parse pgbench's summary into a run file
  report        median over runs, ratios, targets; write .json and .md
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

# ---------------------------------------------------------------------------
# Reference figures and targets (issue 6). The Go original (Gin + GORM) was
# measured on this machine class; see docs/BENCHMARKS.md.

GO_REFERENCE = {
    "get_user_rps": 10_700,
    "get_user_p99_ms": 11.0,
    "get_user_peak_rss_mib": 30.0,
    "pgbench_select_tps": 39_000,
}

# Scenario key -> (label, backend, services whose RSS is sampled)
SCENARIOS = [
    ("pg_get_user", "GET user by id", "PostgreSQL", ["user-service"]),
    ("pg_list_users", "LIST users (search term)", "PostgreSQL", ["user-service"]),
    ("pg_post_user", "POST user", "PostgreSQL", ["user-service"]),
    ("pg_get_order", "GET order by id (embeds user: 2 services)", "PostgreSQL",
     ["user-service", "order-service"]),
    ("pg_post_order", "POST order (user-service up)", "PostgreSQL",
     ["user-service", "order-service"]),
    ("pg_post_order_breaker_open", "POST order (user-service stopped, breaker open)",
     "PostgreSQL", ["order-service"]),
    ("pg_get_user_unauthenticated", "GET user by id, pre-identity build, no token",
     "PostgreSQL", ["user-service"]),
    ("floor_get_user", "GET user by id, floor server (bench/floor)", "PostgreSQL", ["floor"]),
    ("floor_post_user", "POST user, floor server", "PostgreSQL", ["floor"]),
    ("floor_get_order", "GET order by id, floor server (embeds user over HTTP)", "PostgreSQL", ["floor"]),
    ("pg_get_user_limiter_local", "GET user by id, in-process rate limiter on",
     "PostgreSQL", ["user-service"]),
    ("pg_get_user_limiter_redis", "GET user by id, Redis rate limiter on (REDIS_URL)",
     "PostgreSQL", ["user-service"]),
    ("pg_post_order_cache_off", "POST order, 100 users, user cache off (TTL=0)",
     "PostgreSQL", ["user-service", "order-service"]),
    ("pg_post_order_cache_warm", "POST order, 100 users, user cache warm",
     "PostgreSQL", ["user-service", "order-service"]),
    ("sqlite_get_user", "GET user by id", "SQLite", ["user-service"]),
    ("sqlite_post_user", "POST user", "SQLite", ["user-service"]),
]
PGBENCH = [
    ("pgbench_select", "select user by id (`-M prepared`)"),
    ("pgbench_insert", "insert user (`-M prepared`)"),
]
SERVICES = [
    ("user-service@postgres", "user-service", "PostgreSQL"),
    ("order-service@postgres", "order-service", "PostgreSQL"),
    ("audit-log-service@postgres", "audit-log-service", "PostgreSQL"),
    ("floor@postgres", "floor server (bench only)", "PostgreSQL"),
    ("user-service@sqlite", "user-service", "SQLite"),
]
RATIOS = [
    ("get_user_vs_pgbench_select", "GET user req/s ÷ pgbench select TPS",
     ("pg_get_user", "rps"), ("pgbench_select", "tps"), 0.6),
    ("post_user_vs_pgbench_insert", "POST user req/s ÷ pgbench insert TPS",
     ("pg_post_user", "rps"), ("pgbench_insert", "tps"), 0.6),
    ("post_order_breaker_open_vs_up", "POST order req/s: breaker open ÷ user-service up",
     ("pg_post_order_breaker_open", "rps"), ("pg_post_order", "rps"), 0.9),
    ("get_user_token_vs_unauthenticated",
     "GET user req/s with a token ÷ the pre-identity build without one",
     ("pg_get_user", "rps"), ("pg_get_user_unauthenticated", "rps"), 0.9),
    # The floor (issue 17): the same routes, statements and JSON with no plumbing.
    ("get_user_vs_floor", "GET user req/s ÷ the floor server's",
     ("pg_get_user", "rps"), ("floor_get_user", "rps"), 0.9),
    ("post_user_vs_floor", "POST user req/s ÷ the floor server's",
     ("pg_post_user", "rps"), ("floor_post_user", "rps"), 0.9),
    ("get_order_vs_floor", "GET order req/s ÷ the floor server's",
     ("pg_get_order", "rps"), ("floor_get_order", "rps"), None),
    # Lower is better: at most 1.25.
    ("get_user_p99_vs_floor", "GET user p99 ÷ the floor server's p99 (at most)",
     ("pg_get_user", "p99_ms"), ("floor_get_user", "p99_ms"), -1.25),
    ("post_order_cache_warm_vs_off", "POST order req/s: user cache warm ÷ cache off (TTL=0)",
     ("pg_post_order_cache_warm", "rps"), ("pg_post_order_cache_off", "rps"), 1.5),
    ("get_user_redis_vs_local_limiter", "GET user req/s: Redis rate limiter ÷ in-process limiter",
     ("pg_get_user_limiter_redis", "rps"), ("pg_get_user_limiter_local", "rps"), 0.8),
]


# ---------------------------------------------------------------------------
# small utilities

def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_path(data, dotted, value):
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def apply_assignments(data, assignments):
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"bench.py: expected key=value, got {item!r}")
        set_path(data, key, parse_value(value))


def http_status(host, port, path, timeout=0.5):
    """Status code of GET path, or None when nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
    except OSError:
        return None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# commands

def cmd_launch(a):
    """Starts the command with stdout/stderr to the log, polls the readiness URL
    every ~5 ms and prints `<pid> <milliseconds from spawn to first 200>`. The
    service keeps running after this helper exits (run.sh stops it by pid)."""
    m = re.match(r"http://(127\.0\.0\.1|localhost):(\d+)(/.*)$", a.url)
    if not m:
        sys.exit("bench.py launch: the readiness URL must be http://127.0.0.1:<port>/<path>")
    host, port, path = "127.0.0.1", int(m.group(2)), m.group(3)
    log = open(a.log, "ab")
    started = time.monotonic()
    proc = subprocess.Popen(a.cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=a.cwd, start_new_session=True)
    deadline = started + a.timeout
    while True:
        status = http_status(host, port, path)
        now = time.monotonic()
        if status == 200:
            print(proc.pid, f"{(now - started) * 1000:.1f}")
            return 0
        if proc.poll() is not None:
            print(f"bench.py launch: {a.cmd[0]} exited with {proc.returncode} before it was ready",
                  file=sys.stderr)
            return 1
        if now > deadline:
            proc.kill()
            print(f"bench.py launch: {a.cmd[0]} not ready after {a.timeout} s", file=sys.stderr)
            return 1
        time.sleep(0.005)


def cmd_free_port(_a):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


SEED_WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron"]


def cmd_seed_config(a):
    """A curl config (-K) with one operation per create; `curl -Z` runs them in
    parallel over reused connections and prints one status code per line."""
    if not re.match(r"http://127\.0\.0\.1:\d+$", a.base):
        sys.exit("bench.py seed-config: base must be http://127.0.0.1:<port>")
    token = os.environ.get("BENCH_TOKEN", "")
    auth = f'header = "Authorization: Bearer {token}"\n' if token else ""
    ops = []
    for i in range(1, a.count + 1):
        if a.kind == "users":
            path = "/api/v1/users"
            body = {"email": f"seed-{i}@bench.test",
                    "name": f"Seed {SEED_WORDS[i % len(SEED_WORDS)]} {i}",
                    "age": 1 + i % 150}
        else:
            path = "/api/v1/orders"
            quantity = 1 + i % 5
            body = {"user_id": 1 + (i - 1) % a.users, "product_id": f"SKU-{i % 100}",
                    "quantity": quantity, "total_price": round(quantity * 9.99, 2)}
        data = json.dumps(body, separators=(",", ":")).replace("\\", "\\\\").replace('"', '\\"')
        ops.append(
            f'url = "{a.base}{path}"\n'
            'header = "Content-Type: application/json"\n'
            f'{auth}'
            f'data = "{data}"\n'
            'output = "/dev/null"\n'
            'silent\n'
            'max-time = 10\n'
            'write-out = "%{http_code}\\n"\n')
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("next\n".join(ops))


def cmd_get_json(a):
    if not re.match(r"http://127\.0\.0\.1:\d+/", a.url):
        sys.exit("bench.py get-json: only http://127.0.0.1 URLs")
    request = urllib.request.Request(a.url)
    if os.environ.get("BENCH_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['BENCH_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            data = json.load(r)
    except Exception as e:  # noqa: BLE001 - report anything as "unknown"
        print(f"bench.py get-json: {a.url}: {e}", file=sys.stderr)
        print("unknown")
        return 0
    for key in a.field.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    print("unknown" if data is None else data)
    return 0


def metric_value(base, name):
    """The value of one unlabelled series on base's /metrics, or None."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
    return None


def cmd_drain_events(a):
    """Waits until every event the services wrote is in the audit log: each
    outbox empty, the audit consumer without lag, and as many events stored as
    published. Prints `published stored milliseconds`; exits 1 on timeout."""
    for url in (*a.publisher, a.audit):
        if not re.match(r"http://127\.0\.0\.1:\d+$", url):
            sys.exit("bench.py drain-events: only http://127.0.0.1:PORT base URLs")
    start = time.monotonic()
    published = stored = None
    while time.monotonic() - start < a.timeout:
        try:
            backlog = published = 0
            for base in a.publisher:
                name = service_metric_prefix(base)
                backlog += metric_value(base, f"{name}_outbox_backlog") or 0
                published += metric_value(base, f"{name}_outbox_published_total") or 0
            lag = metric_value(a.audit, "audit_log_service_consumer_lag") or 0
            stored = metric_value(a.audit, "audit_log_service_events_stored_total") or 0
            if backlog == 0 and lag == 0 and stored >= published:
                print(int(published), int(stored), int((time.monotonic() - start) * 1000))
                return 0
        except OSError:
            pass
        time.sleep(0.2)
    print(f"bench.py drain-events: not drained after {a.timeout} s "
          f"(published {published}, stored {stored})", file=sys.stderr)
    return 1


def service_metric_prefix(base):
    """user_service or order_service: the name in /health's answer."""
    with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
        return json.load(r)["service"].replace("-", "_")


def cmd_nats_delete_stream(a):
    """Deletes one JetStream stream through the JetStream API subject (the
    bench's own streams; no NATS client library needed for one request)."""
    host, port = a.server.rsplit(":", 1)
    inbox = f"_INBOX.bench{os.getpid()}"
    with socket.create_connection((host, int(port)), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(f'CONNECT {{"verbose":false,"pedantic":false}}\r\nSUB {inbox} 1\r\n'
                  f"PUB $JS.API.STREAM.DELETE.{a.stream} {inbox} 0\r\n\r\n".encode())
        while True:
            line = f.readline()
            if not line:
                return 1
            if line.startswith(b"MSG"):
                size = int(line.split()[-1])
                reply = f.read(size + 2)[:size]
                return 0 if b'"success":true' in reply else 1
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                print(line.decode().strip(), file=sys.stderr)
                return 1


def cmd_set(a):
    data = load(a.file)
    apply_assignments(data, a.assignments)
    save(a.file, data)


def cmd_wrk_record(a):
    data = load(a.file)
    record = {"tool": "wrk", "failed": False}
    line = None
    try:
        with open(a.log, encoding="utf-8", errors="replace") as f:
            for text in f:
                if text.startswith("BENCH_RESULT "):
                    line = text[len("BENCH_RESULT "):]
    except FileNotFoundError:
        pass
    if line is None:
        record.update(failed=True, errors=1, note="wrk printed no BENCH_RESULT line")
    else:
        r = json.loads(line)
        seconds = r["duration_us"] / 1e6
        lat = r["latency_us"]
        errors = sum(r["errors"].values())
        record.update(
            requests=r["requests"],
            seconds=round(seconds, 3),
            rps=round(r["requests"] / seconds, 1) if seconds else 0.0,
            p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000, p99_ms=lat["p99"] / 1000,
            p999_ms=lat["p999"] / 1000, max_ms=lat["max"] / 1000,
            mean_ms=round(lat["mean"] / 1000, 3),
            errors=errors, errors_detail=r["errors"])
    apply_assignments(record, a.assignments)
    data.setdefault("scenarios", {})[a.scenario] = record
    save(a.file, data)
    if record["failed"]:
        print(f"  {a.scenario:<28} FAILED: {record['note']}")
    else:
        print(f"  {a.scenario:<28} {record['rps']:>9,.0f} req/s  p50 {record['p50_ms']:7.2f} ms  "
              f"p99 {record['p99_ms']:7.2f} ms  max {record['max_ms']:8.2f} ms  errors {record['errors']}")


def cmd_pgbench_record(a):
    data = load(a.file)
    with open(a.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    record = {"tool": "pgbench", "exit_code": a.rc}

    def grab(pattern, cast=float):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else None

    record["tps"] = grab(r"^tps = ([\d.]+) \(without initial connection time\)")
    record["latency_avg_ms"] = grab(r"^latency average = ([\d.]+) ms")
    record["transactions"] = grab(r"^number of transactions actually processed: (\d+)", int)
    failed = grab(r"^number of failed transactions: (\d+)", int) or 0
    record["failed_transactions"] = failed
    broken = a.rc != 0 or record["tps"] is None
    record["failed"] = broken
    record["errors"] = failed + (1 if broken else 0)
    apply_assignments(record, a.assignments)
    data.setdefault("scenarios", {})[a.scenario] = record
    save(a.file, data)
    if broken:
        print(f"  {a.scenario:<28} FAILED (pgbench exit code {a.rc})")
    else:
        print(f"  {a.scenario:<28} {record['tps']:>9,.0f} TPS    avg {record['latency_avg_ms']:7.2f} ms  "
              f"failed transactions {failed}")


# ---------------------------------------------------------------------------
# report

def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(value, digits=1, thousands=False):
    if value is None:
        return "–"
    if thousands:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def mib(kib):
    return None if kib is None else kib / 1024


def yes(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


def cmd_report(a):
    if a.from_json:  # re-render an earlier result (e.g. after a change to this file)
        earlier = load(a.from_json)
        runs = earlier["raw_runs"]
        machine = dict(earlier["machine"], settings=earlier["settings"])
    else:
        runs = [load(p) for p in a.runs]
        machine = load(a.machine)
    settings = machine.get("settings", {})

    # --- medians per scenario
    scen = {}
    for key, _label, _backend, services in SCENARIOS + [(k, l, "PostgreSQL", []) for k, l in PGBENCH]:
        recs = [r.get("scenarios", {}).get(key) for r in runs]
        recs = [x for x in recs if x]
        if not recs:
            continue
        m = {"runs": len(recs), "errors_total": sum(x.get("errors", 0) for x in recs)}
        for field in ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
                      "tps", "latency_avg_ms", "requests", "transactions"):
            v = med([x.get(field) for x in recs])
            if v is not None:
                m[field] = v
        peaks = {}
        for svc in services:
            v = med([x.get("peak_rss_kib", {}).get(svc) for x in recs])
            if v is not None:
                peaks[svc] = v
        if peaks:
            m["peak_rss_kib"] = peaks
        m["per_run"] = recs
        scen[key] = m

    # --- services
    svcs = {}
    for key, _name, _backend in SERVICES:
        recs = [r.get("services", {}).get(key) for r in runs]
        recs = [x for x in recs if x]
        if not recs:
            continue
        svcs[key] = {f: med([x.get(f) for x in recs])
                     for f in ("start_to_ready_ms", "idle_rss_kib", "peak_rss_kib")}
        svcs[key]["per_run"] = recs

    # --- ratios, computed within each run, then the median
    ratios = {}
    for key, label, (na, fa), (da, fb), target in RATIOS:
        per_run = []
        for r in runs:
            s = r.get("scenarios", {})
            num, den = s.get(na, {}).get(fa), s.get(da, {}).get(fb)
            per_run.append(round(num / den, 3) if num and den else None)
        value = med(per_run)
        # A negative target is an upper bound (lower is better); None: reported only.
        if value is None or target is None:
            met = None
        else:
            met = value <= -target if target < 0 else value >= target
        ratios[key] = {"label": label, "median": value, "per_run": per_run, "target": target,
                       "met": met}

    # --- targets
    total_errors = sum(m["errors_total"] for m in scen.values())
    idle = {k: mib(v["idle_rss_kib"]) for k, v in svcs.items() if v.get("idle_rss_kib")}
    peak = {k: mib(v["peak_rss_kib"]) for k, v in svcs.items() if v.get("peak_rss_kib")}
    sqlite_ready = svcs.get("user-service@sqlite", {}).get("start_to_ready_ms")
    gu = scen.get("pg_get_user", {})
    gu_rps, gu_p99 = gu.get("rps"), gu.get("p99_ms")
    gu_rss = mib(gu.get("peak_rss_kib", {}).get("user-service"))
    targets = [
        ("GET user ≥ 0.6× pgbench select", fmt(ratios["get_user_vs_pgbench_select"]["median"], 2) + "×",
         ratios["get_user_vs_pgbench_select"]["met"]),
        ("POST user ≥ 0.6× pgbench insert", fmt(ratios["post_user_vs_pgbench_insert"]["median"], 2) + "×",
         ratios["post_user_vs_pgbench_insert"]["met"]),
        ("POST user with events flowing ≥ 0.44× pgbench insert (0.85 of the pre-events 0.52)",
         fmt(ratios["post_user_vs_pgbench_insert"]["median"], 2) + "×",
         None if ratios["post_user_vs_pgbench_insert"]["median"] is None
         else ratios["post_user_vs_pgbench_insert"]["median"] >= 0.44),
        ("GET user with a token ≥ 0.9× the pre-identity build",
         fmt(ratios["get_user_token_vs_unauthenticated"]["median"], 2) + "×",
         ratios["get_user_token_vs_unauthenticated"]["met"]),
        ("GET user ≥ 0.9× the floor server (issue 17)", fmt(ratios["get_user_vs_floor"]["median"], 2) + "×",
         ratios["get_user_vs_floor"]["met"]),
        ("POST user ≥ 0.9× the floor server (issue 17)", fmt(ratios["post_user_vs_floor"]["median"], 2) + "×",
         ratios["post_user_vs_floor"]["met"]),
        ("GET user p99 ≤ 1.25× the floor's p99 (issue 17)",
         fmt(ratios["get_user_p99_vs_floor"]["median"], 2) + "×", ratios["get_user_p99_vs_floor"]["met"]),
        ("0 errors (all scenarios, all runs)", str(total_errors), total_errors == 0),
        ("POST order breaker-open ≥ 0.9× user-service-up",
         fmt(ratios["post_order_breaker_open_vs_up"]["median"], 2) + "×",
         ratios["post_order_breaker_open_vs_up"]["met"]),
        ("POST order, user cache warm ≥ 1.5× cache off",
         fmt(ratios["post_order_cache_warm_vs_off"]["median"], 2) + "×",
         ratios["post_order_cache_warm_vs_off"]["met"]),
        ("GET user, Redis rate limiter ≥ 0.8× in-process limiter",
         fmt(ratios["get_user_redis_vs_local_limiter"]["median"], 2) + "×",
         ratios["get_user_redis_vs_local_limiter"]["met"]),
        ("idle RSS < 20 MiB (each service)",
         ", ".join(f"{k} {v:.1f} MiB" for k, v in idle.items()) or "–",
         all(v < 20 for v in idle.values()) if idle else None),
        ("peak RSS < 64 MiB (each service, whole run)",
         ", ".join(f"{k} {v:.1f} MiB" for k, v in peak.items()) or "–",
         all(v < 64 for v in peak.values()) if peak else None),
        ("start-to-ready < 200 ms on SQLite", fmt(sqlite_ready) + " ms" if sqlite_ready else "–",
         None if sqlite_ready is None else sqlite_ready < 200),
        ("≥ 2× Go GET user throughput (≥ 21,400 req/s)",
         f"{fmt(gu_rps, thousands=True)} req/s = {fmt(gu_rps / GO_REFERENCE['get_user_rps'] if gu_rps else None, 2)}×",
         None if gu_rps is None else gu_rps >= 2 * GO_REFERENCE["get_user_rps"]),
        ("≤ ½ Go GET user p99 (≤ 5.5 ms)", f"{fmt(gu_p99, 2)} ms",
         None if gu_p99 is None else gu_p99 <= GO_REFERENCE["get_user_p99_ms"] / 2),
        ("≤ ⅓ Go peak RSS under GET user (≤ 10 MiB)", f"{fmt(gu_rss)} MiB",
         None if gu_rss is None else gu_rss <= GO_REFERENCE["get_user_peak_rss_mib"] / 3),
    ]

    result = {
        "generated_utc": a.stamp,
        "mode": a.mode,
        "runs": len(runs),
        "settings": settings,
        "machine": {k: v for k, v in machine.items() if k != "settings"},
        "scenarios": scen,
        "services": svcs,
        "ratios": ratios,
        "events": [r.get("events") for r in runs],
        "targets": [{"target": t, "measured": v, "met": ok} for t, v, ok in targets],
        "go_reference": GO_REFERENCE,
        "total_errors": total_errors,
        "raw_runs": runs,
    }
    with open(a.out_base + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    md = render_md(result, targets)
    with open(a.out_base + ".md", "w", encoding="utf-8") as f:
        f.write(md)
    print(md)
    return 3 if total_errors else 0


def render_md(res, targets):
    s, m = res["settings"], res["machine"]
    n = res["runs"]
    out = []
    w = out.append
    w(f"# Benchmark results {res['generated_utc']} ({res['mode']})\n")
    w(f"Median of {n} run{'s' if n != 1 else ''}. wrk `-t{s.get('threads')} -c{s.get('connections')} "
      f"-d{s.get('duration_s')}s` after a {s.get('warmup_s')} s warm-up; pgbench `-M prepared "
      f"-c {s.get('connections')} -j {s.get('threads')} -T {s.get('duration_s')}` on the same "
      f"database; {s.get('seed_users')} users and {s.get('seed_orders')} orders seeded through the API; "
      "rate limiter off, logs at info to a file, default pools (PostgreSQL 20 connections, "
      f"SQLite 8), CIRCUIT_BREAKER_INTERVAL={s.get('circuit_breaker_interval_s')} s and "
      f"CIRCUIT_BREAKER_TIMEOUT={s.get('circuit_breaker_timeout_s')} s. Latency in ms; RSS in MiB "
      "(peak = VmHWM, reset before each scenario).\n")

    w("## Scenarios\n")
    w("| Scenario | Backend | req/s | p50 | p99 | max | errors | peak RSS user-service | peak RSS order-service |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for key, label, backend, _svcs in SCENARIOS:
        x = res["scenarios"].get(key)
        if not x:
            continue
        pk = x.get("peak_rss_kib", {})
        w(f"| {label} | {backend} | {fmt(x.get('rps'), thousands=True)} | {fmt(x.get('p50_ms'), 2)} | "
          f"{fmt(x.get('p99_ms'), 2)} | {fmt(x.get('max_ms'), 2)} | {x['errors_total']} | "
          f"{fmt(mib(pk.get('user-service')))} | {fmt(mib(pk.get('order-service')))} |")
    w("")
    w("Errors: non-2xx answers (wrk counts status ≥ 400) plus socket errors (connect, read, write, "
      "timeout), summed over all runs.\n")

    w("## pgbench on the service's database\n")
    w("| Query | TPS | avg latency | failed transactions |")
    w("|---|--:|--:|--:|")
    for key, label in PGBENCH:
        x = res["scenarios"].get(key)
        if x:
            w(f"| {label} | {fmt(x.get('tps'), thousands=True)} | {fmt(x.get('latency_avg_ms'), 2)} | "
              f"{x['errors_total']} |")
    w("")

    w("## Services\n")
    w("| Service | Backend | start-to-ready ms | idle RSS | peak RSS (whole run) |")
    w("|---|---|--:|--:|--:|")
    for key, name, backend in SERVICES:
        x = res["services"].get(key)
        if x:
            w(f"| {name} | {backend} | {fmt(x.get('start_to_ready_ms'))} | "
              f"{fmt(mib(x.get('idle_rss_kib')))} | {fmt(mib(x.get('peak_rss_kib')))} |")
    w("")
    w("Start-to-ready: from spawning the process to the first 200 from `/health/ready` "
      "(polled every 5 ms), on a fresh database (migrations included).\n")

    events = [e for e in res.get("events", []) if e]
    if events:
        w("## Events\n")
        w("Every PostgreSQL scenario ran with the services publishing their events through the "
          "transactional outbox to NATS JetStream (a stream of the run's own) and audit-log-service "
          "consuming them; after the last order scenario the run waited for the audit log to hold "
          "every published event.\n")
        w("| Run | published | in the audit log | drained after the last scenario |")
        w("|--:|--:|--:|--:|")
        for i, e in enumerate(events, 1):
            w(f"| {i} | {e.get('published'):,} | {e.get('stored'):,} | {e.get('drain_ms')} ms |")
        w("")

    w("## Ratios (computed within each run; median)\n")
    w("| Ratio | median | per run | target | |")
    w("|---|--:|---|--:|---|")
    for r in res["ratios"].values():
        per = ", ".join(fmt(v, 3) for v in r["per_run"])
        target = "–" if r["target"] is None else (
            f"≤ {-r['target']}" if r["target"] < 0 else f"≥ {r['target']}")
        verdict = "reported" if r["target"] is None else yes(r["met"])
        w(f"| {r['label']} | {fmt(r['median'], 3)} | {per} | {target} | {verdict} |")
    w("")

    sc = res["scenarios"]
    gu = sc.get("pg_get_user", {})
    sel = sc.get("pgbench_select", {})
    g = res["go_reference"]
    w("## Against the Go original (reference figures, same machine class)\n")
    w("| Figure | ours | Go (Gin + GORM) | ours ÷ Go |")
    w("|---|--:|--:|--:|")

    def row(label, ours, go, digits=1, thousands=False):
        ratio = ours / go if ours and go else None
        w(f"| {label} | {fmt(ours, digits, thousands)} | {fmt(go, digits, thousands)} | {fmt(ratio, 2)} |")

    row("GET user req/s", gu.get("rps"), g["get_user_rps"], thousands=True)
    row("GET user p99 ms", gu.get("p99_ms"), g["get_user_p99_ms"], 2)
    row("GET user peak RSS MiB", mib(gu.get("peak_rss_kib", {}).get("user-service")),
        g["get_user_peak_rss_mib"])
    row("pgbench select TPS", sel.get("tps"), g["pgbench_select_tps"], thousands=True)
    ours_norm = res["ratios"]["get_user_vs_pgbench_select"]["median"]
    row("GET user ÷ pgbench select", ours_norm, g["get_user_rps"] / g["pgbench_select_tps"], 3)
    w("")

    w("## Targets\n")
    w("| Target | measured | |")
    w("|---|---|---|")
    for t, v, ok in targets:
        w(f"| {t} | {v} | {yes(ok)} |")
    w("")

    w("## Machine\n")
    for label, key in (("CPUs (nproc)", "nproc"), ("CPU", "cpu_model"), ("Memory", "memory"),
                       ("Kernel", "kernel"), ("PostgreSQL", "postgres_version"),
                       ("PostgreSQL settings", "postgres_settings"),
                       ("wrk", "wrk_version"), ("pgbench", "pgbench_version"),
                       ("rustc", "rustc_version"), ("Git commit", "git_commit"),
                       ("Load average before / after", "loadavg")):
        if m.get(key) not in (None, ""):
            w(f"- {label}: {m[key]}")
    w("")

    notes = []
    for i, r in enumerate(res["raw_runs"], 1):
        s2 = r.get("scenarios", {})
        bo = s2.get("pg_post_order_breaker_open", {})
        up = s2.get("pg_post_order", {})
        if "pgbench_sslmode" in r:
            tls = "TLS" if r.get("service_db_tls") else "plain TCP (no TLS)"
            notes.append(f"run {i}: user-service's pool connects over {tls}; "
                         f"pgbench ran with PGSSLMODE={r['pgbench_sslmode']} to match")
        notes.append(f"run {i}: load average at start {r.get('loadavg_start', '?')}, at end "
                     f"{r.get('loadavg_end', '?')} (includes the benchmark's own load); breaker during POST order (up) "
                     f"{up.get('breaker_before', '?')} → {up.get('breaker_after', '?')}, "
                     f"during POST order (user-service stopped) {bo.get('breaker_before', '?')} → "
                     f"{bo.get('breaker_after', '?')}")
    if notes:
        w("## Run notes\n")
        for note in notes:
            w(f"- {note}")
        w("")
    return "\n".join(out)


# ---------------------------------------------------------------------------

def add_positional_command(sub, name, func, *args):
    """A subcommand whose arguments are all plain positionals."""
    s = sub.add_parser(name)
    for arg in args:
        s.add_argument(arg)
    s.set_defaults(func=func)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("launch")
    s.add_argument("--log", required=True)
    s.add_argument("--cwd", required=True)
    s.add_argument("--url", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("cmd", nargs="+")
    s.set_defaults(func=cmd_launch)

    add_positional_command(sub, "free-port", cmd_free_port)

    s = sub.add_parser("seed-config")
    s.add_argument("--kind", choices=["users", "orders"], required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--users", type=int, default=1)
    s.add_argument("--base", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_seed_config)

    add_positional_command(sub, "get-json", cmd_get_json, "url", "field")

    s = sub.add_parser("drain-events")
    s.add_argument("--audit", required=True)
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("publisher", nargs="+")
    s.set_defaults(func=cmd_drain_events)

    add_positional_command(sub, "nats-delete-stream", cmd_nats_delete_stream, "server", "stream")

    s = sub.add_parser("set")
    s.add_argument("file")
    s.add_argument("assignments", nargs="*")
    s.set_defaults(func=cmd_set)

    # wrk-record FILE SCENARIO LOG [k=v ...]; pgbench-record FILE SCENARIO LOG RC [k=v ...]
    for name, func, extra in (("wrk-record", cmd_wrk_record, ()),
                              ("pgbench-record", cmd_pgbench_record, (("rc", int),))):
        s = sub.add_parser(name)
        for arg in ("file", "scenario", "log"):
            s.add_argument(arg)
        for arg, kind in extra:
            s.add_argument(arg, type=kind)
        s.add_argument("assignments", nargs="*")
        s.set_defaults(func=func)

    s = sub.add_parser("report")
    s.add_argument("--mode", required=True)
    s.add_argument("--stamp", required=True)
    s.add_argument("--machine")
    s.add_argument("--out-base", required=True)
    s.add_argument("--from-json", help="re-render the runs of an earlier result file")
    s.add_argument("runs", nargs="*")
    s.set_defaults(func=cmd_report)

    a = p.parse_args()
    if a.command == "report" and not a.from_json and not (a.machine and a.runs):
        p.error("report needs --machine and run files, or --from-json")
    sys.exit(a.func(a) or 0)


if __name__ == "__main__":
    main()
