#!/usr/bin/env python3
"""Ferry's benchmark table: the harness's rows (shared/bench: bench.rows_for, cells as in its
summarize.py) plus our own rows, and three columns after the servers': `Ferry / best peer`,
`best peer` and `target`.

usage: table.py RESULT_DIR_OR_JSON... [--order ferry,vsftpd,...] [--ferry NAME]

Rows (metrics) x columns (servers); a cell is median [min-max] over runs (one value if all
runs agree), rows without any value are left out, as in summarize.py. Rows added here:

  * `STOR (no upload digest) ...` from the workload `stor_nohash` (the harness's `stor` run
    on a Ferry started with --set ftp.hash_uploads=false; collect.py relabels it). The peers
    have no such switch: their cells in these rows are their normal `stor` (footnote).
  * `FTPS STOR ...` from our `tls_stor` (bench/tls_stor.py), after the FTPS RETR rows.
  * client (and server) CPU % rows for the workloads where the harness table has none
    (login, small files, FTPS RETR/STOR/sessions), so a client-bound figure can be seen.
  * `chat idle N clients: ...` from bench/chat_idle.py (collect.py's `chat_idle`): Ferry vs
    ngIRCd and InspIRCd, which get columns of their own (empty in the FTP rows, as the FTP
    peers' cells are empty in the chat rows).
  * `failures`: workloads that raised, servers that did not start, failed single-stream repeats.
  * `other CPU %`: the largest other_cpu_pct (CPU used by anything but client and server) of
    the server's workloads in a run: how noisy the machine was.

Ratio column: median of Ferry's runs / the best peer's median, for every numeric row with a
direction: higher is better for MB/s, sessions/s, files/s and held counts, lower is better
for CPU s/GiB, ms, KiB and listen-queue overflows; CPU % rows (context: who was the
bottleneck) have none. "Best peer" = the best median among the other servers that have a value
in that row. The target column holds the issue's target for the row and whether Ferry's
median meets it: `≥1.5× ✓` (ratio target) or `≤0.30 ✗` (absolute target on Ferry's median).
"""
import argparse
import os
import re
import statistics
import sys

sys.dont_write_bytecode = True  # the harness folder is read-only


def harness_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.environ.get("FTPBENCH_HARNESS"), os.path.join(here, "..", "..", "shared", "bench"),
              "/work/shared/bench"):
        if d and os.path.isfile(os.path.join(d, "summarize.py")):
            return os.path.abspath(d)
    raise SystemExit("table.py: shared harness not found (set FTPBENCH_HARNESS)")


sys.path.insert(0, harness_dir())
import bench  # noqa: E402  (the harness's bench.py)
import summarize  # noqa: E402  (the harness's summarize.py)

g = bench.g
NOHASH = "STOR (no upload digest)"

# (regex on the row label, direction): first match wins; None = no better direction
DIRECTIONS = [
    (r"CPU %", None),
    (r"ok/attempted|done up/down|checks|failures|failed", None),
    (r"CPU s/GiB", "lo"),
    (r"MB/s|sessions/s|files (up|down)/s|logged in|held", "hi"),
    (r" ms$|KiB|overflows", "lo"),
]

# the targets: (regex on the label, kind, value); kind "ratio" = Ferry / best peer
# at least (higher is better) / at most (lower is better) value; "abs" = Ferry's median
TARGETS = [
    (r"^RETR 1 stream MB/s$", "ratio", 1.0),
    (r"^RETR server CPU s/GiB$", "abs", 0.30),
    (r"^" + re.escape(NOHASH) + r" MB/s", "ratio", 1.0),
    (r"^" + re.escape(NOHASH) + r" server CPU s/GiB", "abs", 0.30),
    (r"^login p50 ms$", "abs", 0.30),
    (r"^sessions/s$", "ratio", 1.5),
    (r"^session p99 ms$", "abs", 100.0),
    (r"^small files (up|down)/s$", "ratio", 1.5),
    (r"^idle 10000: logged in$", "abs", 10000),
    (r"^idle \d+: PSS KiB/conn$", "abs", 4.0),
    (r"^FTPS RETR MB/s$", "ratio", 1.3),
    (r"^FTPS RETR server CPU s/GiB$", "abs", 0.55),
    (r"^FTPS sessions/s$", "ratio", 2.0),
    (r"^chat idle \d+ clients: PSS KiB/client$", "abs", 2.4),
]


def direction(label):
    for rx, d in DIRECTIONS:
        if re.search(rx, label):
            return d
    return None


def target_of(label):
    for rx, kind, val in TARGETS:
        if re.search(rx, label):
            return kind, val
    return None


# ---------------------------------------------------------------- rows


def insert_after(rows, prefix, extra):
    at = [i for i, (label, _fn) in enumerate(rows) if label.startswith(prefix)]
    i = at[-1] + 1 if at else len(rows)
    rows[i:i] = extra


def has(results, key):
    return any(key in r["workloads"] for r in results)


def rows_for(results):
    rows = list(bench.rows_for(results))
    if has(results, "stor_nohash"):
        insert_after(rows, "STOR ", [
            (f"{NOHASH} MB/s ¹", lambda w: g(w, "stor_nohash", "MBps")),
            (f"{NOHASH} server CPU s/GiB ¹", lambda w: g(w, "stor_nohash", "server_cpu_s_per_GiB")),
            (f"{NOHASH} client CPU % ¹", lambda w: g(w, "stor_nohash", "client_cpu_pct")),
        ])
    if has(results, "login"):
        insert_after(rows, "login ", [("login client CPU %", lambda w: g(w, "login", "client_cpu_pct")),
                                      ("login server CPU %", lambda w: g(w, "login", "server_cpu_pct"))])
    if has(results, "smallfiles"):
        insert_after(rows, "small files ", [
            ("small files client CPU %", lambda w: g(w, "smallfiles", "client_cpu_pct")),
            ("small files server CPU %", lambda w: g(w, "smallfiles", "server_cpu_pct"))])
    if has(results, "tls_retr"):
        insert_after(rows, "FTPS RETR", [("FTPS RETR client CPU %", lambda w: g(w, "tls_retr", "client_cpu_pct"))])
    if has(results, "tls_stor"):
        insert_after(rows, "FTPS RETR", [
            ("FTPS STOR MB/s", lambda w: g(w, "tls_stor", "MBps")),
            ("FTPS STOR server CPU s/GiB", lambda w: g(w, "tls_stor", "server_cpu_s_per_GiB")),
            ("FTPS STOR client CPU %", lambda w: g(w, "tls_stor", "client_cpu_pct")),
        ])
    if has(results, "tls_sessions"):
        insert_after(rows, "FTPS session", [
            ("FTPS sessions client CPU %", lambda w: g(w, "tls_sessions", "client_cpu_pct")),
            ("FTPS sessions server CPU %", lambda w: g(w, "tls_sessions", "server_cpu_pct"))])
    chat_ns = sorted({r["workloads"]["chat_idle"].get("clients") or 0 for r in results
                      if isinstance(r["workloads"].get("chat_idle"), dict)})
    for n in chat_ns:
        def cw(w, n=n):
            v = w.get("chat_idle")
            return v if isinstance(v, dict) and (v.get("clients") or 0) == n else {}
        rows += [
            (f"chat idle {n} clients: held", lambda w, cw=cw: cw(w).get("still_connected")),
            (f"chat idle {n} clients: PSS KiB/client", lambda w, cw=cw: cw(w).get("pss_kib_per_client")),
            (f"chat idle {n} clients: RSS KiB/client", lambda w, cw=cw: cw(w).get("rss_kib_per_client")),
            (f"chat idle {n} clients: checks", lambda w, cw=cw: chat_checks(cw(w))),
        ]
    rows.append(("other CPU % (max over workloads) ²", other_cpu))
    rows.append(("failures", failures))
    return rows


def chat_checks(v):
    if not v:
        return None
    if "failure" in v:
        return "failed: " + str(v["failure"])[:60]
    if v.get("ok"):
        return "ok"
    return (f"FAILED (msg to {v.get('message_received_by')}/{v.get('clients')}, "
            f"{v.get('still_connected')} connected, {v.get('connect_errors')} connect errors)")


def other_cpu(w):
    vals = [v["other_cpu_pct"] for v in w.values() if isinstance(v, dict) and
            isinstance(v.get("other_cpu_pct"), (int, float))]
    return max(vals) if vals else None


def failures(w):
    out = []
    for k, v in sorted(w.items()):
        if k == "stor_nohash" and v is w.get("stor"):
            continue  # a peer's stand-in (view()): its stor, reported once
        if k.startswith("start_failure") or k == "failure":
            out.append(f"{k}: {str(v)[:60]}")
        elif isinstance(v, dict):
            if "failure" in v:
                out.append(f"{k}: {str(v['failure'])[:60]}")
            elif v.get("reps") and v.get("errors"):
                out.append(f"{k}: {v['errors']}/{len(v['reps'])} repeats failed")
    return "; ".join(out) or None


# ---------------------------------------------------------------- table


def view(r):
    """The workloads a row function sees. Peers have no upload-digest switch: their
    `stor_nohash` is their `stor`."""
    w = r["workloads"]
    if r.get("kind") == "peer" and "stor" in w and "stor_nohash" not in w:
        w = dict(w, stor_nohash=w["stor"])
    return w


def median(vals):
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else None


def fmt_ratio(x):
    return f"{x:.2f}×" if x < 100 else f"{x:,.0f}×"


def fmt_abs(v, label):
    s = f"{int(v):,}" if v == int(v) else f"{v:.2f}" if v < 1 else f"{v:g}"
    for unit in ("s/GiB", "ms", "KiB"):
        if re.search(r"\b" + re.escape(unit) + r"\b", label):
            return f"{s} {unit}"
    return s


def compare(label, ferry_vals, peer_vals):
    """-> (ratio cell, best peer cell, target cell)."""
    d = direction(label)
    f = median(ferry_vals)
    peers = {t: median(v) for t, v in peer_vals.items()}
    peers = {t: m for t, m in peers.items() if m is not None}
    ratio = best = None
    ratio_cell = best_cell = ""
    if d and peers:
        best = (max if d == "hi" else min)(peers, key=lambda t: peers[t])
        best_cell = best
        if f is None:
            ratio_cell = "–"
        elif peers[best] == 0:
            ratio_cell = "– (best 0)" if f else "= (both 0)"
        else:
            ratio = f / peers[best]
            ratio_cell = fmt_ratio(ratio)
    tgt = target_of(label)
    tcell = ""
    if tgt:
        kind, val = tgt
        sign = "≥" if d == "hi" else "≤"
        if kind == "ratio":
            text = f"{sign}{val:g}× best"
            ok = None if ratio is None else (ratio >= val if d == "hi" else ratio <= val)
        else:
            text = f"{sign}{fmt_abs(val, label)}"
            ok = None if f is None else (f >= val if d == "hi" else f <= val)
        tcell = text + (" ✓" if ok else " ✗" if ok is not None else " ? (no figure)")
    return ratio_cell, best_cell, tcell


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--order", default="ferry,vsftpd,pure-ftpd,proftpd,pyftpdlib,unftp")
    ap.add_argument("--ferry", default="ferry", help="the target the ratios are for")
    a = ap.parse_args()
    results = summarize.load(a.paths)
    if not results:
        raise SystemExit("table.py: no results")
    order = a.order.split(",") + [t for t in ("ngircd", "inspircd") if t not in a.order.split(",")]
    targets = sorted({r["target"] for r in results}, key=lambda t: (order.index(t) if t in order else 99, t))
    by = {t: [r for r in results if r["target"] == t] for t in targets}
    cols = [f"{t} (n={len(by[t])})" for t in targets]
    ferry_present = a.ferry in by
    extra = ["Ferry / best peer", "best peer", "target"] if ferry_present else []
    print("| metric | " + " | ".join(cols + extra) + " |")
    print("|---" * (len(cols) + 1) + ("|---|---|---|" if extra else "|"))
    shown = []
    for label, fn in rows_for(results):
        vals = {t: [fn(view(r)) for r in by[t]] for t in targets}
        cells = [summarize.cell(vals[t]) for t in targets]
        if all(c == "–" for c in cells):
            continue
        shown.append(label)
        line = f"| {label} | " + " | ".join(cells)
        if extra:
            peer_vals = {t: v for t, v in vals.items() if t != a.ferry}
            line += " | " + " | ".join(compare(label, vals[a.ferry], peer_vals))
        print(line + " |")
    print()
    if any(label.startswith(NOHASH) for label in shown):
        print("¹ Ferry started fresh with `--set ftp.hash_uploads=false` (no SHA-256 of uploads), running "
              "the harness's `stor`. The peers have no such switch (none of them hashes uploads in the harness's "
              "configs): their cells in these rows are their normal STOR run, the same figures as in the STOR rows.")
    if any(label.startswith("other CPU") for label in shown):
        print("² CPU used during a workload by anything but the client and the server (other builds, "
              "writeback, ...), of one core; large positive values mean the run was disturbed.")
    if extra:
        print("Ratio: median of Ferry's runs / the best peer's median (the best median among the other "
              "columns with a value in that row); higher is better for MB/s, sessions/s, files/s and "
              "held counts, lower for CPU s/GiB, ms, KiB and overflows (a ratio < 1 is then better); "
              "CPU % rows are context, no ratio. Target: the issue's target, against the ratio (`×`) "
              "or Ferry's median.")
    if any(k.startswith("idle_") and int(k.split("_")[1]) >= 6000 for r in results for k in r["workloads"]
           if k.split("_")[-1].isdigit()):
        print("Idle: the harness's peer configs cap connections at 10000 (Pure-FTPd effectively at 6000, "
              "half its 12000-port passive range), so a peer may be refused at its configured cap "
              "rather than for lack of memory; PSS/RSS per connection is over the connections held.")
    if any(r.get("kind") == "irc" for r in results):
        print("Chat idle: bench/chat_idle.py, once per run; the ngircd and inspircd columns are IRC "
              "servers, compared with Ferry's chat service only in the chat rows.")


if __name__ == "__main__":
    main()
