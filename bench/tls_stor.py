#!/usr/bin/env python3
"""FTPS single-stream upload (`tls_stor`): the harness has `stor` (plain) and `tls_retr`, but no
FTPS upload. This adds it without touching the shared harness, by calling the harness's own
single-stream code: `bench.w_stream(target, opts, "stor", tls=True)`. So it is exactly the
harness's `stor` workload with the client options of its `tls_retr`:

  curl -sS --fail --user bench:bench --ftp-skip-pasv-ip --max-time 300 --connect-timeout 10
       --noproxy '*' --ssl-reqd --insecure -T $FTPBENCH_WORK/fixtures/blob-SIZE.bin
       ftp://127.0.0.1:PORT/upload-PID-I.bin

once per repeat (--repeats, default 3), the same fixture file for every server; MB/s of the
transfer phase (bytes / (curl total - curl pretransfer)) and of the whole run; server CPU from
the server's cpuacct cgroup (peers) or utime+stime+cutime+cstime over its /proc process tree
(--server-pid), before/after each repeat, as s/GiB; median over the repeats. The uploaded file
is checked for its size in the data dir and deleted after each repeat.

usage:
  tls_stor.py --out DIR --target 127.0.0.1:PORT --name ferry --server-pid PID --data-dir HOME [BENCH_OPTS]
  tls_stor.py --out DIR --peer vsftpd [--peer pyftpdlib ...] [BENCH_OPTS]

Peers are started with the harness's `peer.start(NAME, tls=True)` (same config as its tls_*
workloads, own cpuacct cgroup), fresh for this workload, and stopped afterwards.
BENCH_OPTS: the bench.py options run.sh passes everywhere; only --big-size, --repeats, --user
and --password matter here, the others are accepted and ignored. Writes DIR/<target>-run1.json
in bench.py's format ({"target", "workloads": {"tls_stor": {...}}, ...}) for collect.py.
"""
import argparse
import datetime
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # the harness folder is read-only


def harness_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.environ.get("FTPBENCH_HARNESS"), os.path.join(here, "..", "..", "shared", "bench"),
              "/work/shared/bench"):
        if d and os.path.isfile(os.path.join(d, "bench.py")):
            return os.path.abspath(d)
    raise SystemExit("tls_stor.py: shared harness not found (set FTPBENCH_HARNESS)")


sys.path.insert(0, harness_dir())
import bench  # noqa: E402  (the harness's bench.py)
import peer as peers  # noqa: E402  (the harness's peer.py)


def log(*a):
    print("[tls_stor]", *a, file=sys.stderr, flush=True)


def write(out_dir, r):
    r["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r["target"])
    with open(os.path.join(out_dir, f"{safe}-run1.json"), "w") as f:
        json.dump(r, f, indent=1)


def one(t, opts):
    try:
        return bench.w_stream(t, opts, "stor", tls=True)
    except Exception as e:  # noqa: BLE001 - keep the other servers going
        log(f"  {t.name}: tls_stor failed: {e!r}")
        return {"failure": repr(e)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--target")
    ap.add_argument("--name")
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--data-dir")
    ap.add_argument("--user", default="bench")
    ap.add_argument("--password", default="bench")
    ap.add_argument("--big-size", type=bench.parse_size, default=bench.parse_size("1GiB"))
    ap.add_argument("--repeats", type=int, default=3)
    opts, ignored = ap.parse_known_args()
    if not opts.peer and not opts.target:
        ap.error("give --target HOST:PORT or --peer NAME")
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "meta.json"), "w") as f:
        json.dump({"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   "host": bench.host_info(), "workload": "tls_stor", "client": "curl (bench.w_stream, tls)",
                   "params": {k: v for k, v in vars(opts).items() if k != "password"},
                   "ignored_args": ignored}, f, indent=1)

    if opts.target:
        host, _, port = opts.target.rpartition(":")
        host = host.strip("[]")
        if not bench.is_loopback(host):
            ap.error(f"{host} is not a loopback address")
        t = bench.Target(opts.name or opts.target, host, int(port), opts.user, opts.password,
                         data_dir=opts.data_dir, root_pid=opts.server_pid, tls=True)
        log(f"{t.name} ({opts.target}, pid {opts.server_pid}): tls_stor {opts.big_size} bytes x {opts.repeats}")
        r = {"target": t.name, "kind": "target", "address": opts.target, "run": 1, "workloads": {}}
        r["workloads"]["tls_stor"] = one(t, opts)
        write(opts.out, r)

    for name in opts.peer:
        r = {"target": name, "kind": "peer", "run": 1, "version": bench.peer_version(name), "workloads": {}}
        if not peers.installed(name):
            log(f"{name}: not installed, skipped")
            continue
        peers.stop(name)
        try:
            st = peers.start(name, tls=True)
        except Exception as e:  # noqa: BLE001
            log(f"{name}: start failed: {e}")
            r["workloads"]["start_failure_tls_stor"] = str(e)[-1500:]
            write(opts.out, r)
            continue
        try:
            t = bench.Target(name, "127.0.0.1", st["port"], peers.USER, peers.PASSWORD, data_dir=st["data"],
                             root_pid=st["pid"], cgroup=st.get("cgroup"), peer=name, tls=True)
            r["argv_tls_stor"] = st["argv"]
            time.sleep(0.5)  # as bench.py does after starting a peer
            log(f"{name} (pid {st['pid']}, port {st['port']}, tls=True): tls_stor {opts.big_size} bytes "
                f"x {opts.repeats}")
            r["workloads"]["tls_stor"] = one(t, opts)
        finally:
            peers.stop(name)
        write(opts.out, r)


if __name__ == "__main__":
    main()
