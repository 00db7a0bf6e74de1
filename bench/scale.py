#!/usr/bin/env python3
"""Helpers of bench/scale.sh: parse wrk output, seed a SQLite file, and report.

    scale.py line FILE LABEL             one summary line of a wrk run
    scale.py seed-sqlite FILE COUNT      users 1..COUNT, as the PostgreSQL seed makes them
    scale.py report WORK OUT_BASE MODE SMALL LARGE SQLITE THREADS CONNECTIONS DURATION COMMIT
"""

import datetime
import json
import os
import platform
import re
import sqlite3
import sys

WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron"]

SCENARIOS = [
    ("get_user", "GET user"),
    ("list_page1", "LIST users, page 1"),
    ("search_selective", "LIST, selective search (1 match)"),
    ("search_broad", "LIST, broad search (1 in 8)"),
    ("deep_cursor", "LIST, deep page by cursor"),
    ("orders_of_user", "LIST orders of one user"),
    ("post_user", "POST user"),
]

# Ratio large/small each scenario must reach (issue 13), and the absolute floor.
RATIO_TARGETS = {"list_page1": 0.7, "search_selective": 0.5, "deep_cursor": 0.7,
                 "orders_of_user": 0.7, "post_user": 0.8}
ABSOLUTE_TARGET = ("search_selective", 2000.0)


def parse(path):
    """The BENCH_RESULT record of a wrk output file, with req/s and the load average."""
    text = open(path, encoding="utf-8", errors="replace").read()
    m = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.M)
    if not m:
        return None
    rec = json.loads(m.group(1))
    rec["rps"] = rec["requests"] / (rec["duration_us"] / 1e6) if rec["duration_us"] else 0.0
    rec["errors_total"] = sum(rec["errors"].values())
    load = re.search(r"^LOADAVG (\S+)", text, re.M)
    rec["loadavg_1m"] = float(load.group(1)) if load else None
    return rec


def cmd_line(path, label):
    rec = parse(path)
    if rec is None:
        print(f"{label}: no result (see {path})")
        return 1
    lat = rec["latency_us"]
    print(f"{label}: {rec['rps']:.0f} req/s, p50 {lat['p50'] / 1000:.2f} ms, "
          f"p99 {lat['p99'] / 1000:.2f} ms, errors {rec['errors_total']}, load {rec['loadavg_1m']}")
    return 0


def token(i):
    """The 8-letter name token of user i (see TOKEN in bench/scale.sh)."""
    return format((i * 2654435761) % 2**32, "08x").translate(str.maketrans("0123456789abcdef", "ghijklmnopqrstuv"))


def timestamp(i, step_ms):
    """What sqlx writes for a chrono DateTime<Utc> (RFC 3339, AutoSi, +00:00)."""
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(milliseconds=i * step_ms)
    micros = at.microsecond
    if micros == 0:
        frac = ""
    elif micros % 1000 == 0:
        frac = f".{micros // 1000:03d}"
    else:
        frac = f".{micros:06d}"
    return at.strftime("%Y-%m-%dT%H:%M:%S") + frac + "+00:00"


def cmd_seed_sqlite(path, count):
    db = sqlite3.connect(path)
    rows = ((i, f"seed{i}@scale.test", f"Seed {WORDS[i % 8]} {token(i)}", 18 + i % 60,
             timestamp(i, 10), timestamp(i, 10)) for i in range(1, count + 1))
    with db:
        db.executemany("INSERT INTO users (id, email, name, age, active, created_at, updated_at, role) "
                       "VALUES (?, ?, ?, ?, 1, ?, ?, 'user')", rows)
    db.execute("ANALYZE")
    db.close()
    return 0


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def cmd_report(work, out_base, mode, small, large, sqlite_n, threads, connections, duration, commit):
    results = {}
    for name in sorted(os.listdir(work)):
        if name.endswith(".out"):
            results[name[:-4]] = parse(os.path.join(work, name))
    facts = open(os.path.join(work, "facts")).read()
    seeds = {m.group(1): int(m.group(3)) for m in re.finditer(r"^SEED (\S+) (\d+) (\d+)$", facts, re.M)}
    load_start = re.search(r"^LOAD_START (.*)$", facts, re.M).group(1)
    load_end = re.search(r"^LOAD_END (.*)$", facts, re.M).group(1)
    explain_path = os.path.join(work, "explain.txt")
    explain = open(explain_path).read() if os.path.exists(explain_path) else ""

    def get(tag, key):
        return results.get(f"{tag}.{key}")

    lines = [f"# Data at scale ({mode} run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Commit {commit}; {os.cpu_count()} CPUs ({platform.machine()}); wrk -t{threads} -c{connections} "
             f"-d{duration}s per scenario; load average {load_start} at the start, {load_end} at the end.",
             f"Seeding (SQL, indexes rebuilt, VACUUM ANALYZE): {fmt(int(small))} users in {seeds.get('small')} s, "
             f"{fmt(int(large))} users and {fmt(2 * int(large))} orders in {seeds.get('large')} s; "
             f"SQLite {fmt(int(sqlite_n))} users in {seeds.get('sqlite')} s.", "",
             f"## PostgreSQL: {fmt(int(small))} vs {fmt(int(large))} users", "",
             f"| scenario | req/s at {fmt(int(small))} | req/s at {fmt(int(large))} | ratio | target | "
             f"p50 / p99 ms at {fmt(int(large))} | load (1 min) |",
             "|---|---:|---:|---:|---|---:|---:|"]
    failures, errors = [], []
    summary = {}
    for key, title in SCENARIOS:
        s, l = get("small", key), get("large", key)
        for tag, rec in (("small", s), ("large", l)):
            if rec is None:
                errors.append(f"{tag}.{key}: no result")
            elif rec["errors_total"]:
                errors.append(f"{tag}.{key}: {rec['errors']}")
        ratio = l["rps"] / s["rps"] if s and l and s["rps"] else None
        target = RATIO_TARGETS.get(key)
        verdict = ""
        if target is not None:
            met = ratio is not None and ratio >= target
            verdict = f">= {target} {'met' if met else 'NOT met'}"
            if not met:
                failures.append(f"{key} ratio {fmt(ratio, 2)} < {target}")
        if key == ABSOLUTE_TARGET[0]:
            met = l is not None and l["rps"] >= ABSOLUTE_TARGET[1]
            verdict += f"; >= {ABSOLUTE_TARGET[1]:,.0f} req/s {'met' if met else 'NOT met'}"
            if not met:
                failures.append(f"{key} at {large}: {fmt(l and l['rps'])} req/s")
        lat = f"{l['latency_us']['p50'] / 1000:.2f} / {l['latency_us']['p99'] / 1000:.2f}" if l else "n/a"
        loads = f"{s and s['loadavg_1m']} / {l and l['loadavg_1m']}"
        lines.append(f"| {title} | {fmt(s and s['rps'])} | {fmt(l and l['rps'])} | {fmt(ratio, 2)} | "
                     f"{verdict} | {lat} | {loads} |")
        summary[key] = {"small_rps": s and s["rps"], "large_rps": l and l["rps"], "ratio": ratio,
                        "small": s, "large": l}
    lines += ["", f"## SQLite: {fmt(int(sqlite_n))} users", "",
              "| scenario | req/s | p50 / p99 ms | load (1 min) |", "|---|---:|---:|---:|"]
    for key, title in SCENARIOS:
        rec = get("sqlite", key)
        if key == "orders_of_user":
            continue
        if rec is None:
            errors.append(f"sqlite.{key}: no result")
            continue
        if rec["errors_total"]:
            errors.append(f"sqlite.{key}: {rec['errors']}")
        lat = rec["latency_us"]
        lines.append(f"| {title} | {fmt(rec['rps'])} | {lat['p50'] / 1000:.2f} / {lat['p99'] / 1000:.2f} | "
                     f"{rec['loadavg_1m']} |")
        summary[f"sqlite.{key}"] = rec
    lines += ["", "## Targets", ""]
    lines += [f"- NOT met: {f}" for f in failures] or ["- every target met"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    if explain:
        lines += ["", f"## Plans at {fmt(int(large))} users / {fmt(2 * int(large))} orders", "", explain]
    text = "\n".join(lines) + "\n"
    with open(out_base + ".md", "w") as f:
        f.write(text)
    with open(out_base + ".json", "w") as f:
        json.dump({"mode": mode, "commit": commit, "sizes": {"small": int(small), "large": int(large),
                   "sqlite": int(sqlite_n)}, "seed_seconds": seeds, "load_start": load_start,
                   "load_end": load_end, "scenarios": summary, "targets_not_met": failures,
                   "errors": errors}, f, indent=2)
    print(text.split("\n## Plans")[0])
    return 3 if errors else 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "line":
        return cmd_line(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "seed-sqlite":
        return cmd_seed_sqlite(argv[1], int(argv[2]))
    if len(argv) == 11 and argv[0] == "report":
        return cmd_report(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
