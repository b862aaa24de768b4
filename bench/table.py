#!/usr/bin/env python3
"""The harness's summarize.py plus the rows of our own `tls_stor` workload (bench/tls_stor.py).

usage: table.py RESULT_DIR_OR_JSON... [--order ferry,vsftpd,pyftpdlib]

Same arguments and output as shared/bench/summarize.py (rows: metrics, columns: targets; cell:
median [min-max] over runs); when any result has `tls_stor`, the rows `FTPS STOR MB/s` and
`FTPS STOR server CPU s/GiB` are added after the FTPS RETR rows (and `FTPS STOR failed repeats`
when a repeat failed: the MB/s and CPU cells are medians over the successful repeats only).
"""
import os
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

_harness_rows_for = bench.rows_for


def rows_for(results):
    rows = list(_harness_rows_for(results))
    if any("tls_stor" in r["workloads"] for r in results):
        extra = [
            ("FTPS STOR MB/s", lambda w: bench.g(w, "tls_stor", "MBps")),
            ("FTPS STOR server CPU s/GiB", lambda w: bench.g(w, "tls_stor", "server_cpu_s_per_GiB")),
        ]
        labels = [label for label, _fn in rows]
        after = [i for i, label in enumerate(labels) if label.startswith("FTPS RETR")]
        at = after[-1] + 1 if after else len(rows)
        if any(failed(r["workloads"]) for r in results):
            extra.append(("FTPS STOR failed repeats", failed))
        rows[at:at] = extra
    return rows


def failed(w):
    """Failed repeats of tls_stor ("3/3"), or the exception text if the workload did not run."""
    v = w.get("tls_stor")
    if not isinstance(v, dict):
        return None
    if "failure" in v:
        return v["failure"][:80]
    n = len(v.get("reps", []))
    return f"{v.get('errors', 0)}/{n}" if v.get("errors") else None


bench.rows_for = rows_for  # summarize.main() looks it up at call time

if __name__ == "__main__":
    summarize.main()
