"""The chat service against bad input and bad clients: over-long lines, garbage bytes, unknown
commands, commands before registration, wrong passwords, a client that never reads, a client
killed mid-session, and 1,000 idle registered clients."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest

from ferry_e2e import (
    HOST,
    IrcConn,
    lines_where,
    parse_irc,
    proc_rss_kib,
    rst_close,
    sasl_plain,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def chat(make_ferry):
    f = make_ferry("chatbad")
    users = {n: f.add_user(n) for n in ("alice", "bob", "carol")}
    s = f.serve("limits.failed_login_delay_ms=50")
    s.wait_chat()
    yield SimpleNamespace(ferry=f, server=s, **users)
    s.stop(timeout=15)


def still_serving(chat, closing, user):
    """A fresh client can still register and talk."""
    c = closing(chat.server.irc())
    c.register(user)
    c.send("PING :alive")
    assert c.expect("PONG").text == "alive"
    assert chat.server.running()


# --------------------------------------------------------------------------- lines


def test_overlong_line_gets_417_and_connection_kept(chat, closing, uniq):
    a = closing(chat.server.irc())
    a.register(chat.alice)
    b = closing(chat.server.irc())
    b.register(chat.bob)
    mark_b = b.mark()
    long_text = "x" * 600
    a.send(f"PRIVMSG #lobby :{uniq} {long_text}")
    r = a.wait_for(lambda m: m.command.isdigit() or m.command == "ERROR", what="417")
    assert r.command == "417", r
    # kept: the connection still works, and the next line is read whole
    a.send(f"PRIVMSG #lobby :after {uniq}")
    a.sync()
    got = b.wait_for(lambda m: m.command == "PRIVMSG" and m.text == f"after {uniq}", what="the next message")
    assert got.nick == a.nick
    b.sync()
    assert not [m for m in b.since(mark_b) if long_text[:100] in m.text], "the over-long line was delivered"
    # a line just under the limit is fine (512 with CR LF)
    line = f"PRIVMSG #lobby :{uniq} "
    line += "y" * (510 - len(line))
    assert len(line) == 510
    a.send(line)
    got = b.wait_for(lambda m: m.command == "PRIVMSG" and m.text.startswith(uniq + " y"), what="510-byte line")
    assert got.text.endswith("y")
    assert not lines_where(a.sync(), "417")


def test_huge_line_without_newline_then_more(chat, closing, uniq):
    a = closing(chat.server.irc())
    a.register(chat.alice)
    a.sendraw(b"PRIVMSG #lobby :" + b"z" * 100_000)
    a.sendraw(b"\r\n")
    r = a.wait_for(lambda m: m.command.isdigit() or m.command == "ERROR", what="417")
    assert r.command == "417", r
    a.send("PING :still-here")
    assert a.expect("PONG").text == "still-here"
    got = a.sync()
    assert len(lines_where(a.log, "417")) >= 1, got


def test_overlong_line_before_registration(chat, closing):
    c = closing(chat.server.irc())
    c.send("NICK " + "n" * 1000)
    r = c.wait_for(lambda m: m.command.isdigit() or m.command == "ERROR", what="417")
    assert r.command == "417", r
    c.register(chat.carol)


@pytest.mark.parametrize("registered", [False, True], ids=["unregistered", "registered"])
def test_garbage_bytes(chat, closing, registered):
    c = closing(chat.server.irc())
    if registered:
        c.register(chat.carol)
    garbage = [
        b"\x00\x01\x02\x03\r\n",
        b"\xff\xfe\xfd garbage \x80\x81\r\n",
        b":\r\n",
        b":prefix-only\r\n",
        b"   \r\n",
        b"\r\n\r\n\n\n",
        b"@\r\n",
        b"@a=b\r\n",
        b"@a=b :p\r\n",
        b"PRIVMSG\r\n",
        b"PRIVMSG #lobby :\xc3\x28 invalid utf-8\r\n",
        b"JOIN \xff\xff\r\n",
        b"\x1b[31mred\x1b[0m\r\n",
        b"CAP\r\n",
        b"AUTHENTICATE\r\n",
        b"AUTHENTICATE PLAIN\r\nAUTHENTICATE !!!not-base64!!!\r\n",
        b"MODE\r\nWHO\r\nWHOIS\r\nTOPIC\r\nNAMES\r\nPART\r\nKICK\r\n",
        os.urandom(300).replace(b"\n", b"N") + b"\n",
    ]
    for g in garbage:
        c.sendraw(g)
    c.send("PING :after-garbage")
    p = c.wait_for(lambda m: m.command == "PONG" or m.command == "ERROR", timeout=15, what="PONG")
    assert p.command == "PONG" and p.text == "after-garbage", f"connection dropped after garbage:\n{c.recent()}"
    if not registered:
        c.register(chat.carol)
    still_serving(chat, closing, chat.bob)


def test_unknown_command_421(chat, closing):
    c = closing(chat.server.irc())
    c.register(chat.alice)
    c.send("FROBNICATE now please")
    r = c.expect("421")
    assert r.param(1).upper() == "FROBNICATE", r
    c.send("frobnicate")
    assert c.expect("421").command == "421"
    c.send("PING :ok")
    assert c.expect("PONG").text == "ok"


@pytest.mark.parametrize("line", ["JOIN #lobby", "PRIVMSG #lobby :hi", "WHO #lobby", "NAMES #lobby",
                                  "MODE #lobby", "TOPIC #lobby", "AWAY :x", "LIST", "FROBNICATE"])
def test_commands_before_registration_get_451(chat, closing, line):
    c = closing(chat.server.irc())
    c.send(line)
    r = c.wait_for(lambda m: m.command.isdigit() or m.command == "ERROR", what="451")
    assert r.command == "451", r
    # registration still works afterwards
    c.register(chat.bob)


def test_wrong_password_sasl_904_pass_464(chat, closing):
    c = closing(chat.server.irc())
    c.send("CAP LS 302")
    c.expect("CAP")
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send(f"AUTHENTICATE {sasl_plain('alice', 'definitely-wrong')}")
    assert c.wait_for(lambda m: m.command in ("903", "904"), what="904").command == "904"
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE " + sasl_plain("no-such-account", "x"))
    assert c.wait_for(lambda m: m.command in ("903", "904"), what="904").command == "904"
    # a malformed payload
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send("AUTHENTICATE bm90LXBsYWlu")  # "not-plain": no NULs
    assert c.wait_for(lambda m: m.command in ("903", "904"), what="904").command == "904"
    # unknown mechanism
    c.send("AUTHENTICATE SCRAM-SHA-256")
    assert c.wait_for(lambda m: m.command in ("908", "904", "AUTHENTICATE")).command in ("908", "904")

    p = closing(chat.server.irc())
    p.send("PASS alice:definitely-wrong")
    p.send("NICK alice")
    p.send("USER alice 0 * :A")
    assert p.wait_for(lambda m: m.command in ("001", "464"), what="464").command == "464"
    assert p.closed(10)
    assert lines_where(p.log, "ERROR")
    still_serving(chat, closing, chat.alice)


# --------------------------------------------------------------------------- bad clients


BATCH = 32


def test_client_that_never_reads_is_dropped_others_unaffected(make_ferry, closing, uniq):
    f = make_ferry("chatsendq")
    alice, bob, carol = f.add_user("alice"), f.add_user("bob"), f.add_user("carol")
    s = f.serve("chat.send_queue=64", "chat.history_lines=0")
    port = s.wait_chat()

    # the slow one: a small receive buffer, registers, then never reads again
    slow = closing(IrcConn(HOST, port, rcvbuf=4096))
    raw = slow.sock
    slow.register(carol)

    observer = closing(s.irc())
    observer.register(bob)
    flooder = closing(s.irc())
    flooder.register(alice)
    observer.start_reader()
    start = observer.mark()

    line = "f" * 400
    sent = 0
    t0 = time.monotonic()
    dropped = None
    seen = start  # the observer's log is scanned from here on
    while time.monotonic() - t0 < 60 and sent < 60_000:
        # Batches smaller than the queue, each read by the observer before the next: the
        # observer (a Python thread on a busy machine) is a client that keeps up, never one
        # more than a batch behind; the slow one falls behind without limit.
        batch = "".join(f"PRIVMSG #lobby :{sent + i} {line}\r\n" for i in range(BATCH))
        flooder.sendraw(batch.encode())
        sent += BATCH
        last = str(sent - 1)
        observer.poll_for(lambda m: m.command == "PRIVMSG" and m.text.split(" ", 1)[0] == last, 30,
                          f"line {last}", seen)
        upto = len(observer.log)
        dropped = next((m for m in observer.log[seen:upto] if m.command == "QUIT" and m.nick == slow.nick),
                       None)
        seen = upto
        if dropped:
            break
    flood_secs = time.monotonic() - t0
    assert dropped is not None, f"the reader that never reads was not dropped after {sent} lines ({flood_secs:.1f}s)"
    assert "SendQ exceeded" in dropped.text, dropped
    # others unaffected: the observer gets every line, in order, once; the flooder was not stalled
    flooder.send(f"PRIVMSG #lobby :end {uniq}")
    flooder.sync()
    observer.poll_for(lambda m: m.command == "PRIVMSG" and m.text == f"end {uniq}", 30, "the last line",
                      start)
    observer.stop_reader()
    got = [m for m in observer.log[start:] if m.command == "PRIVMSG" and m.nick == flooder.nick]
    numbers = [int(m.text.split(" ", 1)[0]) for m in got[:-1]]
    assert numbers == list(range(sent)), f"observer got {len(numbers)} of {sent} lines"
    quits = [m for m in observer.log[start:] if m.command == "QUIT" and m.nick == slow.nick]
    assert len(quits) == 1, quits
    # the slow client's socket is closed by the server
    raw.settimeout(10)
    eof = False
    try:
        while raw.recv(1 << 20):
            pass
        eof = True
    except (ConnectionResetError, BrokenPipeError):
        eof = True
    except socket.timeout:
        pass
    assert eof, "the dropped client's connection was not closed"
    s.stop()
    print(f"slow reader dropped after {sent} lines of ~420 bytes, {flood_secs:.2f}s")


KILLED_CLIENT = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=15)
    s.sendall(("PASS %s:%s\\r\\nNICK x\\r\\nUSER x 0 * :x\\r\\nJOIN %s\\r\\nPING :joined\\r\\n"
               % (sys.argv[2], sys.argv[3], sys.argv[4])).encode())
    buf = b""
    while b"PONG" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit(3)
        buf += d
    nick = [l.split()[2] for l in buf.decode().split("\\r\\n") if " 001 " in l][0]
    print(nick, flush=True)
    time.sleep(120)
""")


def test_client_killed_mid_session_quit_broadcast_once(chat, closing, uniq):
    room = "#k" + uniq[-20:].replace("-", "")
    watchers = []
    for u in (chat.alice, chat.bob):
        w = closing(chat.server.irc())
        w.register(u)
        w.send(f"JOIN {room}")
        w.expect("366")
        watchers.append(w)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, str(chat.server.wait_chat()), "carol",
                             chat.carol.password, room], stdout=subprocess.PIPE, text=True)
    try:
        nick = proc.stdout.readline().strip()
        assert re.fullmatch(r"carol\d*", nick), nick
        for w in watchers:
            w.wait_for(lambda m: m.command == "JOIN" and m.nick == nick and m.param(0).lower() == room.lower(),
                       what="the client's JOIN")
        marks = [w.mark() for w in watchers]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    for w, mark in zip(watchers, marks):
        q = w.wait_for(lambda m: m.command == "QUIT" and m.nick == nick, timeout=15, what="the killed client's QUIT")
        assert "Connection closed" in q.text, q
    time.sleep(0.3)
    for w, mark in zip(watchers, marks):
        w.sync()
        quits = [m for m in w.since(mark) if m.command == "QUIT" and m.nick == nick]
        assert len(quits) == 1, quits
    # the nick is free at once
    if nick == "carol":
        c = closing(chat.server.irc())
        c.register(chat.carol)
        assert c.nick == "carol", c.nick
    watchers[0].send(f"ISON {nick}")
    on = watchers[0].expect("303").text.split()
    assert on.count(nick) == (1 if nick == "carol" else 0), on


def test_client_reset_mid_session_quit_broadcast_once(chat, closing, uniq):
    w = closing(chat.server.irc())
    w.register(chat.alice)
    c = chat.server.irc()
    c.register(chat.bob)
    w.wait_for(lambda m: m.command == "JOIN" and m.nick == c.nick, what="JOIN")
    mark = w.mark()
    rst_close(c.sock)
    q = w.wait_for(lambda m: m.command == "QUIT" and m.nick == c.nick, timeout=15, what="QUIT after RST")
    assert q.text, q
    time.sleep(0.3)
    w.sync()
    assert len([m for m in w.since(mark) if m.command == "QUIT" and m.nick == c.nick]) == 1
    w.send(f"ISON {c.nick}")
    assert c.nick not in w.expect("303").text.split()


# --------------------------------------------------------------------------- many clients


IDLE_CLIENTS = 1000


@pytest.mark.timeout(300)
def test_thousand_idle_registered_clients(make_ferry, closing, uniq):
    f = make_ferry("chat1000")
    accounts = [f.add_user(f"idle{i}") for i in range(4)]
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve(f"limits.max_sessions_per_ip={IDLE_CLIENTS + 100}",
                f"limits.max_sessions_per_user={IDLE_CLIENTS + 100}",
                f"limits.max_sessions={IDLE_CLIENTS + 100}")
    port = s.wait_chat()
    rss_before = proc_rss_kib(s.proc.pid)

    sel = selectors.DefaultSelector()
    clients: dict[socket.socket, SimpleNamespace] = {}
    t0 = time.monotonic()
    try:
        for i in range(IDLE_CLIENTS):
            u = accounts[i % len(accounts)]
            sock = socket.create_connection((HOST, port), timeout=15)
            sock.sendall(f"PASS {u.name}:{u.password}\r\nNICK {u.name}\r\nUSER {u.name} 0 * :idle\r\n".encode())
            sock.setblocking(False)
            st = SimpleNamespace(buf=b"", seen=b"", welcomed=False, joined=False, nick=None, closed=False)
            clients[sock] = st
            sel.register(sock, selectors.EVENT_READ, st)
            if i % 50 == 49:
                _pump(sel, 0)

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(c.joined for c in clients.values()):
            _pump(sel, 0.2)
        connect_secs = time.monotonic() - t0
        closed = sum(1 for c in clients.values() if c.closed)
        welcomed = sum(1 for c in clients.values() if c.welcomed)
        joined = sum(1 for c in clients.values() if c.joined)
        assert closed == 0 and welcomed == IDLE_CLIENTS and joined == IDLE_CLIENTS, \
            f"of {IDLE_CLIENTS}: {welcomed} got 001, {joined} joined, {closed} closed"
        nicks = {c.nick for c in clients.values()}
        assert len(nicks) == IDLE_CLIENTS, "two connections share a nick"

        # idle: they only read (and answer PING) from here on, in the background
        stop = threading.Event()

        def keep_reading():
            while not stop.is_set():
                _pump(sel, 0.1)

        reader = threading.Thread(target=keep_reading, daemon=True)
        reader.start()
        time.sleep(1)
        rss_after = proc_rss_kib(s.proc.pid)

        a = closing(s.irc(timeout=30))
        a.register(alice, timeout=60)
        b = closing(s.irc(timeout=30))
        b.register(bob, timeout=60)
        t1 = time.monotonic()
        a.send(f"PRIVMSG #lobby :to the crowd {uniq}")
        got = b.wait_for(lambda m: m.command == "PRIVMSG" and uniq in m.text, timeout=10, what="the message")
        latency = time.monotonic() - t1
        assert got.nick == a.nick
        assert latency < 5, latency
        b.send("LUSERS")
        users = b.expect("251")
        assert str(IDLE_CLIENTS + 2) in users.text, users
        # every idle client got it too
        wait_until(lambda: sum(1 for c in clients.values() if uniq.encode() in c.seen) == IDLE_CLIENTS,
                   60, 0.1, "the message at every idle client")
        stop.set()
        reader.join(10)
        assert not any(c.closed for c in clients.values()), "an idle client was disconnected"
        per_client = (rss_after - rss_before) / IDLE_CLIENTS
        print(f"{IDLE_CLIENTS} idle chat clients: registered in {connect_secs:.1f}s; ferry RSS "
              f"{rss_before} KiB -> {rss_after} KiB ({per_client:.1f} KiB per client); "
              f"message latency {latency * 1000:.0f} ms")
    finally:
        for sock in list(clients):
            try:
                sel.unregister(sock)
            except Exception:  # noqa: BLE001
                pass
            sock.close()
        sel.close()
    s.stop()


def _pump(sel: selectors.BaseSelector, timeout: float):
    """Read all that is there on the idle clients' sockets; note 001 and the end of the
    auto-join, answer PING, keep the last bytes seen (`seen`) for checks.

    One thread plays a thousand clients, each of which gets a JOIN line for every later
    one: only the few lines that matter are parsed, so that this reader keeps up with the
    server as a thousand real clients would."""
    for key, _ in sel.select(timeout):
        sock, st = key.fileobj, key.data
        chunks = []
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                st.closed = True
                sel.unregister(sock)
                break
            chunks.append(data)
        if not chunks:
            continue
        data = b"".join(chunks)
        st.seen = (st.seen + data)[-4096:]
        st.buf += data
        cut = st.buf.rfind(b"\n") + 1
        done, st.buf = st.buf[:cut], st.buf[cut:]
        if b" 001 " not in done and b" 366 " not in done and b"PING" not in done:
            continue
        for raw in done.split(b"\n"):
            if b" 001 " not in raw and b" 366 " not in raw and b"PING" not in raw:
                continue
            m = parse_irc(raw.rstrip(b"\r").decode("utf-8", "replace"))
            if m.command == "001":
                st.welcomed, st.nick = True, m.param(0)
            elif m.command == "366":
                st.joined = True
            elif m.command == "PING":
                try:
                    sock.send(f"PONG :{m.text}\r\n".encode())
                except OSError:
                    pass
