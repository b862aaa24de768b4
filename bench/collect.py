#!/usr/bin/env python3
"""Merge the per-invocation JSON of the shared harness (bench.py --out DIR), of bench/tls_stor.py
and of bench/chat_idle.py into one file per target and run, so that table.py (and the harness's
summarize.py) see one result per (target, run).

usage: collect.py OUT_DIR RUN [SRC_DIR...] [--relabel SRC_DIR OLD NEW ...] [--chat-idle DIR]
                  [--meta [TARGET:]KEY=VALUE ...]

Every SRC_DIR holds bench.py's `<target>-run1.json` files (each invocation is run with
--runs 1). Files of the same target from several SRC_DIRs (e.g. Ferry's main workloads and
its idle workloads, each measured on a freshly started server) are merged: their
`workloads` dicts are combined, the first file's other fields are kept. A workload key may
appear only once per target and run (an error otherwise), except `failure` (a workload raised:
the texts are joined).

--relabel SRC_DIR OLD NEW renames the workload OLD to NEW in that directory's files before
merging: run.sh runs the harness's `stor` on a Ferry started with ftp.hash_uploads=false and
relabels it `stor_nohash`, so it does not collide with the default (hashed) `stor`. If that
phase raised before producing OLD, its `failure` text becomes NEW = {"failure": text}, so the
row shows "–" for that server rather than some other figure.

--chat-idle DIR reads bench/chat_idle.py's DIR/results.json ({"meta", "versions", "results":
{server: [run, ...]}}) and adds, per server, the workload `chat_idle` (its first run: run.sh
calls chat_idle.py once per benchmark run): clients, pss/rss KiB per client, connected,
still_connected, message_received_by, ok, ... or {"failure": error}. `ferry` is merged into
Ferry's result; ngircd and inspircd get results of their own (kind "irc", version from the
chat results).

The result is written as OUT_DIR/<target>-run<RUN>.json with "run": RUN. --meta KEY=VALUE adds
a field to every written file, --meta TARGET:KEY=VALUE to that target's only (e.g. Ferry's
version and commit).
"""
import argparse
import glob
import json
import os

CHAT_KEYS = ("pss_kib_per_client", "rss_kib_per_client", "connected", "still_connected",
             "message_received_by", "lobby_members_seen_by_extra", "connect_secs", "connect_errors",
             "connect_error_samples", "quiet", "ok", "cold", "before", "after", "stop_secs", "exit_code")


def merge_into(merged, r, source, phase_workloads, out_dir, extra_phase=None):
    t = r["target"]
    if t not in merged:
        merged[t] = dict(r)
        merged[t]["workloads"] = {}
        merged[t]["phases"] = []
    m = merged[t]
    w = dict(phase_workloads)
    if "failure" in w and "failure" in m["workloads"]:
        m["workloads"]["failure"] = f"{m['workloads']['failure']}; {w.pop('failure')}"
    dup = set(m["workloads"]) & set(w)
    if dup:
        raise SystemExit(f"{source}: workloads {sorted(dup)} of {t} already collected")
    m["workloads"].update(w)
    ph = {"file": os.path.relpath(source, out_dir), "date": r.get("date"), "workloads": sorted(w)}
    ph.update(extra_phase or {})
    m["phases"].append(ph)


def chat_results(path):
    """bench/chat_idle.py's results.json -> {server: (result-ish dict, chat_idle workload)}."""
    j = json.load(open(path))
    out = {}
    clients = j.get("meta", {}).get("clients")
    for kind, runs in j.get("results", {}).items():
        if not runs:
            continue
        run = runs[0]
        if "error" in run:
            wl = {"failure": run["error"], "clients": clients}
        else:
            wl = {"clients": clients}
            wl.update({k: run[k] for k in CHAT_KEYS if k in run})
        if len(runs) > 1:
            wl["note"] = f"chat_idle.py had {len(runs)} runs; the first is used"
        version = j.get("versions", {}).get(kind) or run.get("version") or kind
        out[kind] = ({"target": kind, "kind": "target" if kind == "ferry" else "irc", "version": version,
                      "date": j.get("meta", {}).get("date")}, {"chat_idle": wl})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("run", type=int)
    ap.add_argument("src", nargs="*")
    ap.add_argument("--relabel", nargs=3, action="append", default=[], metavar=("SRC_DIR", "OLD", "NEW"))
    ap.add_argument("--chat-idle", metavar="DIR")
    ap.add_argument("--meta", action="append", default=[])
    a = ap.parse_intermixed_args()  # SRC_DIRs and --relabel/--chat-idle in any order
    meta_all, meta_for = {}, {}
    for m in a.meta:
        k, _, v = m.partition("=")
        tgt, colon, key = k.partition(":")
        if colon:
            meta_for.setdefault(tgt, {})[key] = v
        else:
            meta_all[k] = v
    relabel = {}
    for d, old, new in a.relabel:
        relabel.setdefault(os.path.realpath(d), []).append((old, new))
    merged = {}
    for d in a.src:
        files = sorted(glob.glob(os.path.join(d, "*-run*.json")))
        if not files:
            print(f"collect.py: warning: no result files in {d}")
        for f in files:
            r = json.load(open(f))
            if "workloads" not in r:
                continue
            w = dict(r["workloads"])
            for old, new in relabel.get(os.path.realpath(d), []):
                if old in w:
                    w[new] = w.pop(old)
                elif new not in w:
                    w[new] = {"failure": w.pop("failure", f"{old} missing from {os.path.basename(f)}")}
            merge_into(merged, r, f, w, a.out, {"idle_server_mem": r.get("idle_server_mem")})
    if a.chat_idle:
        path = os.path.join(a.chat_idle, "results.json")
        if os.path.exists(path):
            for kind, (r, w) in chat_results(path).items():
                merge_into(merged, r, path, w, a.out)
        else:
            print(f"collect.py: warning: {path} missing (chat_idle.py failed?)")
    for t, m in merged.items():
        m["run"] = a.run
        m.update(meta_all)
        m.update(meta_for.get(t, {}))
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in t)
        path = os.path.join(a.out, f"{safe}-run{a.run}.json")
        with open(path, "w") as fh:
            json.dump(m, fh, indent=1)
        print(path)


if __name__ == "__main__":
    main()
