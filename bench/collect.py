#!/usr/bin/env python3
"""Merge the per-invocation JSON of the shared harness (bench.py --out DIR) into one file per
target and run, so that summarize.py sees one result per (target, run).

usage: collect.py OUT_DIR RUN SRC_DIR... [--meta KEY=VALUE ...]

Every SRC_DIR holds bench.py's `<target>-run1.json` files (each invocation is run with
--runs 1). Files of the same target from several SRC_DIRs (e.g. Ferry's main workloads and
its idle workloads, each measured on a freshly started server) are merged: their
`workloads` dicts are combined, the first file's other fields are kept. The result is
written as OUT_DIR/<target>-run<RUN>.json with "run": RUN. --meta adds fields to every
written file (e.g. the Ferry commit).
"""
import argparse
import glob
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("run", type=int)
    ap.add_argument("src", nargs="+")
    ap.add_argument("--meta", action="append", default=[])
    a = ap.parse_args()
    meta = dict(m.split("=", 1) for m in a.meta)
    merged = {}
    for d in a.src:
        for f in sorted(glob.glob(os.path.join(d, "*-run*.json"))):
            r = json.load(open(f))
            if "workloads" not in r:
                continue
            t = r["target"]
            if t not in merged:
                merged[t] = dict(r)
                merged[t]["workloads"] = {}
                merged[t]["phases"] = []
            m = merged[t]
            dup = set(m["workloads"]) & set(r["workloads"])
            if dup:
                raise SystemExit(f"{f}: workloads {sorted(dup)} of {t} already collected")
            m["workloads"].update(r["workloads"])
            m["phases"].append({"file": os.path.relpath(f, a.out), "date": r.get("date"),
                                "workloads": sorted(r["workloads"]),
                                "idle_server_mem": r.get("idle_server_mem")})
    for t, m in merged.items():
        m["run"] = a.run
        m.update(meta)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in t)
        path = os.path.join(a.out, f"{safe}-run{a.run}.json")
        with open(path, "w") as fh:
            json.dump(m, fh, indent=1)
        print(path)


if __name__ == "__main__":
    main()
