#!/usr/bin/env python3
"""Memory per idle chat client: Ferry's chat service next to real IRC servers from Debian
(ngIRCd, and InspIRCd when installed), measured in the same run by the same client code.

For each server and run, a fresh server process on a loopback port:

  1. start it; one warm-up client registers, joins #lobby and quits (so one-off costs of the
     first client, e.g. Ferry's first argon2id verification and its blocking thread, are not
     charged to the N idle clients); wait SETTLE s; measure PSS (sum of `Pss:` in
     /proc/PID/smaps_rollup) and RSS over the server's process tree ("before");
  2. open N clients (asyncio, at most --concurrency registering at once, --timeout s each):
     Ferry: `PASS bench:bench`, `NICK bench`, `USER bench 0 * :bench`, wait for 001 and the
     auto-join's 366 for #lobby (Ferry names them bench, bench2, ...);
     the IRC servers: `NICK benchI`, `USER bench 0 * :bench`, wait for 001, `JOIN #lobby`,
     wait for 366. Every client keeps reading (answers PING, drains the JOIN broadcasts);
  3. wait until no client has received anything for 1 s, then SETTLE s; measure again
     ("after"); per client = (after - before) / N;
  4. checks: one extra client joins #lobby (its NAMES reply must list N + 1 members) and sends
     one PRIVMSG to #lobby, which every one of the N clients must receive; all N must still be
     connected;
  5. SIGTERM the server (SIGKILL after 30 s) while the clients are still connected, then close
     them (closing them first makes each IRC server broadcast N QUITs to the rest, an O(N^2)
     storm of writes and log lines that has nothing to do with the measurement).

usage: bench/chat_idle.py [--clients 1000] [--runs 1] [--out DIR] [--servers ferry,ngircd,inspircd]
                          [--ferry-bin PATH] [--settle 2] [--concurrency 50] [--timeout 30]

Writes DIR/table.md (also printed), DIR/results.json (every measurement) and the servers' logs;
DIR defaults to bench/results/<timestamp>-chat-idle/. Needs ngircd (and optionally inspircd)
from Debian: `apt-get install -y ngircd inspircd`; neither is run as a service, each run starts
its own instance in the foreground with a config file written here.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HOST = "127.0.0.1"
ROOM = "#lobby"


def log(*a):
    print("[chat_idle]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def process_tree(pid):
    kids, out, todo = children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def memory(pid):
    """PSS and RSS in KiB summed over the process tree of pid, plus process and thread counts."""
    pss = rss = threads = 0
    procs = process_tree(pid)
    for p in procs:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Pss":
                    pss += int(v.split()[0])
                elif k == "Rss":
                    rss += int(v.split()[0])
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    threads += int(line.split()[1])
    return {"pss_kib": pss, "rss_kib": rss, "processes": len(procs), "threads": threads}


# --------------------------------------------------------------------------- IRC client


def parse(line: str):
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    trailing = None
    if " :" in line:
        line, trailing = line.split(" :", 1)
    parts = line.split()
    cmd, params = (parts[0].upper() if parts else ""), parts[1:]
    if trailing is not None:
        params.append(trailing)
    return prefix, cmd, params


class Client:
    """One IRC connection. After registration a reader task drains it and answers PINGs."""

    def __init__(self, state):
        self.state = state  # shared: last_rx, token, got_token count
        self.reader = self.writer = None
        self.nick = None
        self.alive = False
        self.saw_token = False
        self.task = None

    def send(self, *lines):
        self.writer.write("".join(line + "\r\n" for line in lines).encode())

    async def line(self):
        raw = await self.reader.readline()
        if not raw:
            raise ConnectionError("closed by server")
        self.state["last_rx"] = time.monotonic()
        s = raw.decode("utf-8", "replace").rstrip("\r\n")
        p, cmd, params = parse(s)
        if cmd == "PING":
            self.send("PONG :" + (params[-1] if params else ""))
        elif cmd == "ERROR":
            raise ConnectionError(s)
        return p, cmd, params

    async def until(self, pred, what):
        while True:
            m = await self.line()
            if m[1] in ("432", "433", "436", "451", "464", "465", "471", "473", "474", "475", "904"):
                raise ConnectionError(f"waiting for {what}: {m}")
            if pred(m):
                return m

    async def register(self, kind, index, timeout, join=True, collect_names=None):
        async def go():
            self.reader, self.writer = await asyncio.open_connection(HOST, self.state["port"])
            if kind == "ferry":
                self.send("PASS bench:bench", "NICK bench", "USER bench 0 * :bench")
            else:
                self.send(f"NICK bench{index}", "USER bench 0 * :bench")
            m = await self.until(lambda m: m[1] == "001", "001")
            self.nick = m[2][0]
            if not join:
                return
            if kind != "ferry":  # Ferry auto-joins #lobby
                self.send(f"JOIN {ROOM}")

            def names(m):
                if m[1] == "353" and collect_names is not None:
                    collect_names.extend(m[2][-1].split())
                return m[1] == "366" and m[2][1].lower() == ROOM

            await self.until(names, f"366 {ROOM}")

        await asyncio.wait_for(go(), timeout)
        self.alive = True

    def start_reading(self):
        self.task = asyncio.get_running_loop().create_task(self.read_loop())

    async def read_loop(self):
        try:
            while True:
                _, cmd, params = await self.line()
                tok = self.state.get("token")
                if tok and cmd == "PRIVMSG" and params and params[-1] == tok and not self.saw_token:
                    self.saw_token = True
                    self.state["got_token"] += 1
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            self.alive = False
        except asyncio.CancelledError:
            pass

    async def close(self, quit_msg=True):
        if self.task:
            self.task.cancel()
        if self.writer:
            try:
                if quit_msg:
                    self.send("QUIT :bye")
                self.writer.close()
            except Exception:
                pass


async def wait_quiet(state, quiet, limit):
    """Until no client received anything for `quiet` s (at most `limit` s)."""
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        if time.monotonic() - state["last_rx"] >= quiet:
            return True
        await asyncio.sleep(0.1)
    return False


async def measure_server(kind, port, proc, opts):
    pid = proc.pid
    state = {"port": port, "last_rx": time.monotonic(), "token": None, "got_token": 0}
    res = {"cold": memory(pid)}

    # warm-up client: registers, joins, quits
    w = Client(state)
    await w.register(kind, 0, opts.timeout)
    await w.close()
    await asyncio.sleep(0.5)
    await asyncio.sleep(opts.settle)
    res["before"] = memory(pid)
    log(f"{kind}: before {res['before']}")

    clients = [Client(state) for _ in range(opts.clients)]
    sem = asyncio.Semaphore(opts.concurrency)
    errors = []

    async def one(i, c):
        async with sem:
            try:
                await c.register(kind, i + 1, opts.timeout)
                c.start_reading()
            except Exception as e:  # noqa: BLE001 (counted and reported)
                errors.append(f"client {i + 1}: {type(e).__name__}: {e}")
                c.alive = False

    t0 = time.monotonic()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    res["connect_secs"] = round(time.monotonic() - t0, 2)
    res["connect_errors"] = len(errors)
    res["connect_error_samples"] = errors[:10]
    connected = sum(c.alive for c in clients)
    res["connected"] = connected
    log(f"{kind}: {connected}/{opts.clients} registered in {res['connect_secs']} s"
        + (f", {len(errors)} errors, e.g. {errors[0]}" if errors else ""))
    res["quiet"] = await wait_quiet(state, 1.0, 60)
    await asyncio.sleep(opts.settle)
    res["after"] = memory(pid)
    log(f"{kind}: after {res['after']}")
    n = max(connected, 1)
    res["pss_kib_per_client"] = round((res["after"]["pss_kib"] - res["before"]["pss_kib"]) / n, 2)
    res["rss_kib_per_client"] = round((res["after"]["rss_kib"] - res["before"]["rss_kib"]) / n, 2)

    # checks: an extra client sees N+1 members and its message reaches all N
    names = []
    x = Client(state)
    await x.register(kind, opts.clients + 1, opts.timeout, collect_names=names)
    res["lobby_members_seen_by_extra"] = len(names)
    token = "chat-idle-check-" + secrets.token_hex(6)
    state["token"] = token
    x.start_reading()
    x.send(f"PRIVMSG {ROOM} :{token}")
    t_end = time.monotonic() + 15
    while time.monotonic() < t_end and state["got_token"] < connected:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    res["message_received_by"] = state["got_token"]
    res["still_connected"] = sum(c.alive for c in clients)
    res["ok"] = (connected == opts.clients and res["still_connected"] == opts.clients
                 and res["message_received_by"] == opts.clients
                 and res["lobby_members_seen_by_extra"] == opts.clients + 1)
    log(f"{kind}: NAMES {len(names)} members, message received by {res['message_received_by']}, "
        f"still connected {res['still_connected']}, ok={res['ok']}")

    # Stop the server while the clients are still connected (the readers keep draining), then
    # close them: closing 1000 clients first makes the IRC servers broadcast 1000 QUITs to the
    # ones still open, an O(N^2) storm of writes (and of log lines) after the measurement.
    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, stop, proc)
    res["stop_secs"] = round(time.monotonic() - t0, 2)
    res["exit_code"] = proc.returncode
    for c in clients + [x]:
        await c.close(quit_msg=False)
    await asyncio.sleep(0.2)
    return res


# --------------------------------------------------------------------------- servers


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=30):
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {limit} s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_ferry(opts, work, logdir, tag):
    data = os.path.join(work, "ferry-data")
    subprocess.run([opts.ferry_bin, "user", "add", "bench", "--password-stdin", "--data-dir", data],
                   input=b"bench\n", check=True, stdout=subprocess.DEVNULL)
    out = open(os.path.join(logdir, f"{tag}.stdout"), "w+")
    err = open(os.path.join(logdir, f"{tag}.log"), "w")
    proc = subprocess.Popen(
        [opts.ferry_bin, "serve", "--data-dir", data, "--listen", f"{HOST}:0",
         "--chat-listen", f"{HOST}:0",
         "--set", "limits.max_sessions_per_ip=20000", "--set", "limits.max_sessions=20000",
         "--set", "limits.max_sessions_per_user=20000"],
        stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    t_end = time.monotonic() + 30
    while time.monotonic() < t_end:
        out.seek(0)
        m = re.search(r"^listening chat 127\.0\.0\.1:(\d+)$", out.read(), re.M)
        if m:
            port = int(m.group(1))
            wait_port(port, proc)
            return proc, port
        if proc.poll() is not None:
            raise RuntimeError(f"ferry exited with {proc.returncode}, see {err.name}")
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("ferry did not print 'listening chat'")


def start_ngircd(opts, work, logdir, tag):
    port = free_port()
    run = os.path.join(work, "run")  # ngircd started as root runs as "nobody": its pid file
    os.makedirs(run)
    os.chmod(work, 0o755)
    os.chmod(run, 0o777)
    conf = os.path.join(work, "ngircd.conf")
    os.makedirs(os.path.join(work, "conf.d"), exist_ok=True)
    motd = os.path.join(work, "motd")
    open(motd, "w").close()
    n = opts.clients + 100
    with open(conf, "w") as f:
        f.write(f"""[Global]
\tName = irc.bench.local
\tInfo = chat_idle benchmark
\tAdminInfo1 = chat_idle benchmark
\tAdminInfo2 = loopback
\tAdminEMail = bench@localhost
\tListen = {HOST}
\tPorts = {port}
\tMotdFile = {motd}
\tPidFile = {run}/ngircd.pid
[Limits]
\tMaxConnections = {n}
\tMaxConnectionsIP = {n}
\tMaxJoins = 10
\tMaxNickLength = 20
\tPingTimeout = 120
\tPongTimeout = 20
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
\tIncludeDir = {work}/conf.d
""")
    out = open(os.path.join(logdir, f"{tag}.log"), "w")
    proc = subprocess.Popen(["ngircd", "-n", "-f", conf], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_inspircd(opts, work, logdir, tag):
    port = free_port()
    conf = os.path.join(work, "inspircd.conf")
    n = opts.clients + 100
    with open(conf, "w") as f:
        f.write(f"""<server name="irc.bench.local" description="chat_idle benchmark" network="Bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="{HOST}" port="{port}" type="clients">
<connect allow="*" timeout="60" pingfreq="120" hardsendq="1048576" softsendq="8192"
         recvq="8192" threshold="{n}" localmax="{n}" globalmax="{n}" limit="{n}"
         maxconnwarn="no" resolvehostnames="no" useident="no">
<channels users="20" opers="60">
<options syntaxhints="no" announcets="yes" hostintopic="yes" pingwarning="15">
<security hideserver="" userstats="Pu" customversion="" maxtargets="20">
<performance quietbursts="yes" softlimit="{n}" somaxconn="1024" netbuffersize="10240"
             clonesonconnect="no">
""")
    out = open(os.path.join(logdir, f"{tag}.log"), "w")
    proc = subprocess.Popen(["inspircd", "--nofork", "--nopid", "--runasroot", "--config", conf],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


SERVERS = {"ferry": start_ferry, "ngircd": start_ngircd, "inspircd": start_inspircd}


def version(kind, opts):
    try:
        if kind == "ferry":
            v = subprocess.run([opts.ferry_bin, "--version"], capture_output=True, text=True).stdout
            commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty=+dirty"],
                                    capture_output=True, text=True).stdout.strip()
            return f"{v.strip()} ({commit})" if commit else v.strip()
        if kind == "ngircd":
            return subprocess.run(["ngircd", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0].split("-")[0]
        if kind == "inspircd":
            return subprocess.run(["inspircd", "--version"], capture_output=True,
                                  text=True).stdout.strip().split()[0]
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def run_one(kind, opts, logdir, tag):
    work = tempfile.mkdtemp(prefix=f"chat-idle-{kind}.", dir="/var/tmp")
    proc = None
    try:
        proc, port = SERVERS[kind](opts, work, logdir, tag)
        log(f"{kind}: pid {proc.pid} on {HOST}:{port}")
        res = asyncio.run(measure_server(kind, port, proc, opts))
        res["pid"], res["port"] = proc.pid, port
        return res
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
        for name in os.listdir(logdir):  # as run.sh does: gzip server logs over 1 MiB
            path = os.path.join(logdir, name)
            if name.startswith(tag + ".") and not name.endswith(".gz") \
                    and os.path.getsize(path) > 1 << 20:
                subprocess.run(["gzip", "-f", path], check=False)


# --------------------------------------------------------------------------- table


def cell(vals, fmt="{:.1f}"):
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(statistics.median(vals))} [{fmt.format(min(vals))}–{fmt.format(max(vals))}]"


def table(results, opts):
    rows = ["| server | clients | PSS KiB/client | RSS KiB/client | process count | "
            "PSS before → after (MiB) | checks |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for kind, runs in results.items():
        if not runs:
            continue
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows.append(f"| {kind} | {opts.clients} | – | – | – | – | failed: {runs[0]['error']} |")
            continue
        procs = sorted({r["after"]["processes"] for r in ok})
        before = statistics.median(r["before"]["pss_kib"] for r in ok) / 1024
        after = statistics.median(r["after"]["pss_kib"] for r in ok) / 1024
        good = sum(r["ok"] for r in ok)
        checks = ("ok" if good == len(runs) else f"{good}/{len(runs)} runs ok") + (
            f" (msg to {min(r['message_received_by'] for r in ok)}/{opts.clients}, "
            f"{min(r['still_connected'] for r in ok)} connected)")
        rows.append(
            f"| {ok[0]['version']} | {opts.clients} | {cell([r['pss_kib_per_client'] for r in ok])} | "
            f"{cell([r['rss_kib_per_client'] for r in ok])} | {'/'.join(map(str, procs))} | "
            f"{before:.1f} → {after:.1f} | {checks} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", help="output dir (default bench/results/<timestamp>-chat-idle)")
    ap.add_argument("--servers", default=None,
                    help="comma list of ferry,ngircd,inspircd (default: ferry and whichever of "
                         "ngircd, inspircd is installed)")
    ap.add_argument("--ferry-bin", default=os.path.join(REPO, "target", "release", "ferry"))
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before measuring")
    ap.add_argument("--concurrency", type=int, default=50, help="registrations in flight")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-client registration timeout")
    opts = ap.parse_args()

    if opts.servers:
        kinds = [k.strip() for k in opts.servers.split(",") if k.strip()]
        for k in kinds:
            if k not in SERVERS:
                ap.error(f"unknown server {k!r}")
    else:
        kinds = ["ferry"] + [k for k in ("ngircd", "inspircd") if shutil.which(k)]
    for k in kinds:
        exe = opts.ferry_bin if k == "ferry" else shutil.which(k)
        if not exe or not os.access(exe, os.X_OK):
            sys.exit(f"chat_idle.py: {k} not found ({exe or 'not on PATH'}); "
                     "ngircd/inspircd: apt-get install -y ngircd inspircd")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers too
    need = opts.clients + 100
    if hard < need:
        log(f"warning: RLIMIT_NOFILE hard limit {hard} < {need}")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = opts.out or os.path.join(HERE, "results", f"{stamp}-chat-idle")
    os.makedirs(out, exist_ok=True)
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(REPO)
                             else sys.argv[0]] + sys.argv[1:]),
        "clients": opts.clients, "runs": opts.runs, "settle_secs": opts.settle,
        "concurrency": opts.concurrency, "rlimit_nofile": [hard, hard],
        "ferry_bin": opts.ferry_bin, "cpus": os.cpu_count(), "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
    versions = {k: version(k, opts) for k in kinds}
    results = {k: [] for k in kinds}
    for run in range(1, opts.runs + 1):
        for k in kinds:
            log(f"run {run}/{opts.runs}: {k} ({versions[k]}), {opts.clients} clients")
            try:
                r = run_one(k, opts, logdir, f"{k}-run{run}")
            except Exception as e:  # noqa: BLE001 (reported in the table)
                log(f"{k}: FAILED: {type(e).__name__}: {e}")
                r = {"error": f"{type(e).__name__}: {e}"}
            r["version"], r["run"] = versions[k], run
            results[k].append(r)

    md = table(results, opts)
    notes = (f"\nSame machine ({os.cpu_count()} CPUs, Linux {os.uname().release}), same Python "
             f"asyncio client, a fresh server process per server and run; {opts.runs} run(s)"
             f"{', median [min–max]' if opts.runs > 1 else ''}. Per client = (after − before) / "
             f"clients, PSS and RSS summed over the server's process tree; before = after one "
             f"warm-up client registered, joined {ROOM} and quit, + {opts.settle:g} s; after = all "
             f"clients registered and in {ROOM}, 1 s without traffic, + {opts.settle:g} s.\n")
    text = md + "\n" + notes
    print(text)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"meta": meta, "versions": versions, "results": results}, f, indent=1)
    log(f"wrote {out}")
    bad = [k for k, runs in results.items() if any("error" in r or not r.get("ok") for r in runs)]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
