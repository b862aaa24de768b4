"""Hostile and broken clients: commands before login, unknown verbs, bad arguments,
over-long lines, random bytes, silent clients, PASV never connected, data connections
from the wrong address, 500 parallel sessions, wrong passwords and bans."""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time

import pytest

from ferry_e2e import ConnectionClosed, Ctrl, recv_all, tcp_listening, wait_until, write_random

pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------------ protocol errors


BEFORE_LOGIN = [
    "PWD", "XPWD", "CWD /", "CDUP", "LIST", "NLST", "MLSD", "MLST x", "RETR x", "STOR x", "APPE x",
    "STOU", "DELE x", "MKD x", "RMD x", "RNFR x", "RNTO x", "SIZE x", "MDTM x", "MFMT 20200101000000 x",
    "PASV", "EPSV", "PORT 127,0,0,1,100,100", "EPRT |1|127.0.0.1|25700|", "REST 0", "HASH x", "RANG 0 1",
    "XMD5 x", "XSHA1 x", "XSHA256 x", "XSHA512 x", "XCRC x", "MD5 x", "AVBL", "SITE QUOTA", "ALLO 10",
    "STAT /",
]


def test_commands_before_login_get_530(srv):
    c = srv.server.ctrl()
    try:
        bad = []
        for cmd in BEFORE_LOGIN:
            r = c.cmd(cmd)
            if r.code != 530:
                bad.append(f"{cmd!r} -> {r.text!r}")
        assert not bad, "expected 530 before login:\n" + "\n".join(bad)
        c.expect("NOOP", 200)
        c.login(srv.alice)
    finally:
        c.close()


def test_pass_before_user_is_bad_sequence_503(srv):
    c = srv.server.ctrl()
    try:
        c.expect(f"PASS {srv.alice.password}", 503)
        c.login(srv.alice)
    finally:
        c.close()


def test_unknown_verbs_get_500(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        for cmd in ("FOOBAR", "XYZZY with args", "RETRX file", "A", "12345", "\u00e9t\u00e9 x"):
            r = c.cmd(cmd)
            assert r.code == 500, f"{cmd!r} -> {r}"
        c.expect("ACCT something", 502)
        c.expect("NOOP", 200)
    finally:
        c.close()


MISSING_ARG = ["RETR", "STOR", "APPE", "DELE", "MKD", "XMKD", "RMD", "XRMD", "RNFR", "SIZE", "MDTM",
               "MFMT", "TYPE", "MODE", "STRU", "PORT", "EPRT", "REST", "HASH", "RANG", "XMD5",
               "XSHA256", "XCRC", "MD5", "OPTS"]


def test_missing_arguments_get_501(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        bad = []
        for cmd in MISSING_ARG:
            r = c.cmd(cmd)
            if r.code != 501:
                bad.append(f"{cmd!r} -> {r.text!r}")
        assert not bad, "expected 501 for a missing argument:\n" + "\n".join(bad)
        c.expect("NOOP", 200)
    finally:
        c.close()


INVALID_ARG = {
    "REST abc": (501,), "REST -5": (501,), "PORT 1,2,3": (501,), "PORT 300,1,1,1,1,1": (501,),
    "PORT a,b,c,d,e,f": (501,), "EPRT garbage": (501,), "EPRT |1|not-an-ip|5000|": (501,),
    "EPRT |9|127.0.0.1|5000|": (522,), "MFMT 2020 x": (501,), "MFMT 20201301000000 x": (501,),
    "RANG a b": (501,), "RANG 5 2": (501,), "OPTS HASH NOPE": (501,), "OPTS FOOBAR": (501,),
    "TYPE Z": (501, 504), "MODE Z": (501, 504), "STRU Z": (501, 504), "OPTS UTF8 MAYBE": (501,),
}


def test_invalid_arguments_are_rejected(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        bad = []
        for cmd, codes in INVALID_ARG.items():
            r = c.cmd(cmd)
            if r.code not in codes:
                bad.append(f"{cmd!r} -> {r.text!r}, expected {codes}")
        assert not bad, "\n".join(bad)
        c.expect("NOOP", 200)
    finally:
        c.close()


@pytest.mark.parametrize("length", [4097, 10 * 1024, 100 * 1024])
def test_overlong_line_gets_500_and_session_survives_or_closes(srv, length):
    c = srv.server.ctrl(srv.alice)
    try:
        c.sendraw(b"NOOP " + b"A" * (length - 5) + b"\r\n")
        r = c.reply()
        assert r.code == 500, f"a {length}-byte line must get 500, got {r}"
        try:
            c.send("NOOP")
            r2 = c.reply()
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            return  # closed cleanly after the 500: allowed
        assert r2.code == 200, f"after the 500, NOOP got {r2}"
    finally:
        c.close()
    # either way the server still serves
    c = srv.server.ctrl(srv.alice)
    c.expect("NOOP", 200)
    c.close()


@pytest.mark.parametrize("logged_in", [False, True], ids=["before-login", "after-login"])
def test_random_bytes_do_not_break_the_server(srv, logged_in):
    rng = random.Random(1234 + logged_in)
    blob = rng.randbytes(256 * 1024)
    c = srv.server.ctrl(srv.alice if logged_in else None)
    errors = []

    def sender():
        try:
            c.sendraw(blob)
        except OSError as e:  # the server may close the session: fine
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    # drain replies until the server closes or goes quiet
    c.settimeout(3)
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
    except (socket.timeout, ConnectionResetError):
        pass
    t.join(20)
    assert not t.is_alive(), "sending to the server blocked for 20s: it stopped reading"
    c.close()
    assert srv.server.running(), "ferry serve died"
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("NOOP", 200)
        c.expect("PWD", 257)
        final, _ = c.listing("LIST")
        assert final.code == 226
    finally:
        c.close()


# ------------------------------------------------------------------ authentication


def test_wrong_password_gets_530_and_logs_login_failed(srv, uniq):
    c = srv.server.ctrl()
    try:
        c.expect(f"USER {srv.alice.name}", 331)
        c.expect("PASS definitely-wrong", 530)
        ghost = f"ghost{random.randrange(10**6)}"
        r = c.cmd(f"USER {ghost}")
        if r.code == 331:
            c.expect("PASS whatever", 530)
        else:
            assert r.code == 530, r
        c.login(srv.alice)
    finally:
        c.close()
    for name in (srv.alice.name, ghost):
        line = srv.server.wait_stderr(
            lambda l, n=name: "login failed" in l and "ip=127.0.0.1" in l and re.search(rf"user=\"?{n}\b", l),
            timeout=10, what=f"a 'login failed ... ip=127.0.0.1 ... user={name}' line on stderr")
        assert "definitely-wrong" not in line and "whatever" not in line, f"password logged: {line}"
    time.sleep(0.3)
    ghost_lines = [l for l in srv.server.stderr_text().splitlines()
                   if "login failed" in l and re.search(rf"user=\"?{ghost}\b", l)]
    assert len(ghost_lines) == 1, f"expected exactly one 'login failed' line per failure: {ghost_lines}"


def test_odd_credentials_are_refused_cleanly(srv):
    c = srv.server.ctrl()
    try:
        for user, password in ((srv.alice.name + "' OR '1'='1", "x' OR '1'='1"), ("a" * 4000, "x"),
                               ("alice\u00a0", srv.alice.password), ("ALICE", srv.alice.password),
                               ("%s%s%n", "%n%n")):
            r = c.cmd(f"USER {user}")
            assert r.code in (331, 530), (user[:20], r)
            if r.code == 331:
                r = c.cmd(f"PASS {password}")
                assert r.code == 530, (user[:20], r)
        c.expect(f"USER {srv.alice.name}", 331)
        r = c.cmd("PASS")
        assert r.code in (501, 530), f"empty PASS: {r}"
        c.login(srv.alice)
    finally:
        c.close()


def test_loopback_is_never_banned_by_default(srv):
    for _ in range(7):  # more than the default limits.max_login_failures (5)
        c = srv.server.ctrl()
        try:
            c.expect(f"USER {srv.alice.name}", 331)
            c.expect("PASS nope", 530)
        finally:
            c.close()
    c = srv.server.ctrl()
    try:
        c.login(srv.alice)
        c.expect("NOOP", 200)
    finally:
        c.close()


def test_repeated_failures_ban_the_address_until_it_expires(make_ferry):
    f = make_ferry("ban")
    alice = f.add_user("alice")
    s = f.serve("limits.ban_exempt=[]", "limits.max_login_failures=3", "limits.failed_login_delay_ms=50",
                "limits.ban_secs=4")
    for _ in range(3):
        c = s.ctrl()
        try:
            c.expect(f"USER {alice.name}", 331)
            c.expect("PASS wrong", 530)
        except (ConnectionClosed, ConnectionResetError):
            pass
        finally:
            c.close()
    t_banned = time.monotonic()
    for _ in range(2):
        c = s.ctrl(greet=False)
        try:
            r = c.reply()
            assert r.code == 421, f"a banned address must be greeted with 421, got {r}"
            assert c.reads_eof(5), "connection not closed after 421"
        finally:
            c.close()
    # the ban lasts limits.ban_secs, then the right password works again
    time.sleep(max(0.0, t_banned + 5 - time.monotonic()))
    c = s.ctrl()
    try:
        c.login(alice)
        c.expect("NOOP", 200)
    finally:
        c.close()
    s.stop()


def test_failed_login_is_delayed(make_ferry):
    f = make_ferry("delay")
    alice = f.add_user("alice")
    s = f.serve("limits.failed_login_delay_ms=1500")
    c = s.ctrl()
    try:
        c.expect(f"USER {alice.name}", 331)
        t0 = time.monotonic()
        c.expect("PASS wrong", 530)
        assert time.monotonic() - t0 >= 1.4, "failed login answered without the configured delay"
    finally:
        c.close()
    s.stop()


# ------------------------------------------------------------------ timeouts and resources


@pytest.fixture(scope="module")
def idle_srv(make_ferry):
    f = make_ferry("idle")
    alice = f.add_user("alice")
    s = f.serve("limits.idle_timeout_secs=2", "limits.failed_login_delay_ms=50")
    yield s, alice
    s.stop()


@pytest.mark.parametrize("logged_in", [False, True], ids=["silent", "logged-in"])
def test_idle_client_gets_421_and_is_disconnected(idle_srv, logged_in):
    s, alice = idle_srv
    c = s.ctrl(alice if logged_in else None, timeout=15)
    t0 = time.monotonic()
    try:
        r = c.reply()
        elapsed = time.monotonic() - t0
        assert r.code == 421, f"expected 421 on idle timeout, got {r}"
        assert 1.5 <= elapsed <= 8, f"idle timeout of 2s fired after {elapsed:.1f}s"
        assert c.reads_eof(5), "connection not closed after the idle 421"
    finally:
        c.close()


def test_command_line_trickled_byte_by_byte_is_timed_out(idle_srv):
    """A client that never finishes a line must not hold a session forever (slowloris)."""
    s, alice = idle_srv
    c = s.ctrl(alice, timeout=15)
    t0 = time.monotonic()
    try:
        closed = False
        for i in range(12):  # 6 s of one byte every 0.5 s, never a newline
            try:
                c.sendraw(b"N")
            except OSError:
                closed = True
                break
            time.sleep(0.5)
            if c.reads_eof(0.01):
                closed = True
                break
        if not closed:
            closed = c.reads_eof(4)
        assert closed, "a never-ending command line kept the session alive past the 2s idle timeout"
        assert time.monotonic() - t0 < 9
        assert b"421" in c.buf, f"expected a 421 before the close, got {c.buf!r}"
    finally:
        c.close()


def test_idle_timeout_does_not_cut_a_slow_transfer(idle_srv):
    s, alice = idle_srv
    size = 4 << 20
    write_random(alice.home / "slow.bin", size)
    c = s.ctrl(alice, timeout=20)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect("RETR slow.bin", 150, 125)
        data.settimeout(20)
        got = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.5:  # > 2x the idle timeout, data flowing slowly
            d = data.recv(16384)
            assert d, "data connection closed during a slow but active transfer"
            got += len(d)
            time.sleep(0.05)
        got += len(recv_all(data))
        assert got == size
        c.expect_reply(226)
        c.expect("NOOP", 200)
    finally:
        c.close()


@pytest.fixture(scope="module")
def accept_srv(make_ferry):
    f = make_ferry("accept")
    alice = f.add_user("alice")
    (alice.home / "secret.bin").write_bytes(b"S" * 100_000)
    s = f.serve("limits.data_accept_timeout_secs=2", "limits.failed_login_delay_ms=50")
    yield s, alice
    s.stop()


def _settle_then_noop(c: Ctrl):
    """Send NOOP; tolerate one unsolicited 4xx (e.g. a 425 for the expired PASV) before the 200."""
    c.send("NOOP")
    r = c.reply()
    if 400 <= r.code < 500:
        r = c.reply()
    assert r.code == 200, r


@pytest.mark.parametrize("verb", ["PASV", "EPSV"])
def test_unconnected_passive_port_is_released_after_accept_timeout(accept_srv, verb):
    s, alice = accept_srv
    c = s.ctrl(alice)
    try:
        port = c.pasv_port() if verb == "PASV" else c.epsv_port()
        t0 = time.monotonic()
        assert tcp_listening(port), f"{verb} port {port} is not listening"
        time.sleep(1.0)
        assert tcp_listening(port), f"{verb} port {port} closed after 1s although the accept timeout is 2s"
        wait_until(lambda: not tcp_listening(port), 6, 0.1,
                   f"{verb} port {port} to be released after the 2s accept timeout")
        assert time.monotonic() - t0 >= 1.5
        _settle_then_noop(c)
        _released_and_listing_works(s, c, port)
    finally:
        c.close()


def _released_and_listing_works(s, c: Ctrl, port: int):
    """`port` refuses connections, and a new PASV + LIST on the session works."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, port), timeout=5).close()
    final, data = c.listing("LIST")
    assert final.code == 226 and b"secret.bin" in data


def test_passive_data_connection_from_another_address_is_refused(accept_srv):
    s, alice = accept_srv
    c = s.ctrl(alice)
    try:
        c.expect("TYPE I", 200)
        port = c.pasv_port()
        evil = socket.socket()
        evil.bind(("127.0.0.2", 0))
        evil.settimeout(10)
        evil.connect((s.host, port))
        c.send("RETR secret.bin")
        leaked = b""
        try:
            while True:
                d = evil.recv(65536)
                if not d:
                    break
                leaked += d
        except (socket.timeout, ConnectionResetError):
            pass
        evil.close()
        assert leaked == b"", f"{len(leaked)} bytes sent to a data connection from another address"
        r = c.reply()
        if r.code in (125, 150):
            r = c.reply()
        assert r.code in (425, 426), f"RETR with only a foreign data connection: {r}"
        c.expect("NOOP", 200)
    finally:
        c.close()


def _retr_on(c: Ctrl, port: int, path: str) -> bytes:
    data = socket.create_connection((c.host, port), timeout=10)
    c.expect(f"RETR {path}", 150, 125)
    out = recv_all(data)
    c.expect_reply(226)
    return out


@pytest.mark.parametrize("verb", ["PASV", "EPSV"])
def test_back_to_back_transfers_reuse_the_passive_port_until_it_is_released(accept_srv, verb):
    s, alice = accept_srv
    small = b"small file " * 100
    (alice.home / f"small-{verb}.bin").write_bytes(small)
    c = s.ctrl(alice)
    pasv = c.pasv_port if verb == "PASV" else c.epsv_port
    try:
        c.expect("TYPE I", 200)
        first = pasv()
        assert _retr_on(c, first, f"small-{verb}.bin") == small
        # sent at once on the session task, then the one that goes on in a task of its own
        for path, want in ((f"small-{verb}.bin", small), ("secret.bin", b"S" * 100_000)):
            port = pasv()
            assert port == first, f"{verb} right after a transfer moved from port {first} to {port}"
            assert _retr_on(c, port, path) == want
        again = pasv()
        assert again == first
        assert _retr_on(c, again, "secret.bin") == b"S" * 100_000
        # kept for a second after the last transfer, then released
        t0 = time.monotonic()
        wait_until(lambda: not tcp_listening(first), 6, 0.05,
                   f"kept {verb} port {first} to be released after the last transfer")
        assert time.monotonic() - t0 < 3
        _released_and_listing_works(s, c, first)
    finally:
        c.close()


def test_a_stray_connection_to_a_kept_passive_port_gets_no_data(accept_srv):
    s, alice = accept_srv
    c = s.ctrl(alice)
    try:
        c.expect("TYPE I", 200)
        port = c.pasv_port()
        assert _retr_on(c, port, "secret.bin") == b"S" * 100_000
        # between transfers, the kept port is connected to from the client's own address
        stray = socket.create_connection((s.host, port), timeout=10)
        assert c.pasv_port() == port
        real = socket.create_connection((s.host, port), timeout=10)
        c.expect("RETR secret.bin", 150, 125)
        assert recv_all(real) == b"S" * 100_000
        c.expect_reply(226)
        assert recv_all(stray, timeout=10) == b"", "a connection made before the PASV got data"
        stray.close()
        c.expect("NOOP", 200)
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_500_parallel_sessions(make_ferry):
    n = 500
    f = make_ferry("many")
    alice = f.add_user("alice")
    s = f.serve(f"limits.max_sessions={n + 100}", f"limits.max_sessions_per_ip={n + 100}",
                f"limits.max_sessions_per_user={n + 100}", "limits.failed_login_delay_ms=50")
    barrier = threading.Barrier(n + 1)
    results: list[str | None] = [None] * n

    def worker(i):
        c = None
        try:
            c = Ctrl(s.host, s.port, timeout=120)
            r = c.reply()
            assert r.code == 220, r
            c.login(alice)
            barrier.wait(180)  # all n sessions logged in at once
            c.expect("NOOP", 200)
            c.expect("QUIT", 221)
            results[i] = "ok"
        except threading.BrokenBarrierError:
            results[i] = "barrier broken"
        except Exception as e:  # noqa: BLE001
            results[i] = f"{type(e).__name__}: {e}"
            barrier.abort()
        finally:
            if c:
                c.close()

    def rss_kib() -> int:
        with open(f"/proc/{s.proc.pid}/status") as fh:
            return int(next(l for l in fh if l.startswith("VmRSS")).split()[1])

    warm = s.ctrl(alice)  # one login first, so the baseline includes the per-server state
    warm.close()
    time.sleep(0.3)
    rss_before = rss_kib()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    rss_during = None
    try:
        barrier.wait(200)
        rss_during = rss_kib()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join(60)
    failures = [r for r in results if r != "ok"]
    assert not failures, f"{len(failures)} of {n} sessions failed, e.g. {sorted(set(map(str, failures)))[:5]}"
    assert s.running()
    per_session = (rss_during - rss_before) / n
    assert per_session < 64, f"idle sessions are not cheap: {per_session:.0f} KiB of RSS each"
    s.stop()


def test_session_limit_per_ip_refuses_extra_connection_with_421(make_ferry):
    f = make_ferry("limit")
    alice = f.add_user("alice")
    s = f.serve("limits.max_sessions_per_ip=3", "limits.failed_login_delay_ms=50")
    held = [s.ctrl(alice) for _ in range(3)]
    try:
        c = s.ctrl(greet=False)
        try:
            r = c.reply()
            assert r.code == 421, f"4th session from one IP with max_sessions_per_ip=3: {r}"
        finally:
            c.close()
        # an abrupt disconnect (RST) frees the slot too
        h = held.pop()
        h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close()
        c = wait_until(lambda: _try_login(s, alice), 5, 0.2, "the slot of a reset session to be freed")
        c.expect("NOOP", 200)
        c.close()
    finally:
        for h in held:
            h.close()
    s.stop()


def _try_login(s, user):
    c = s.ctrl(greet=False)
    r = c.reply()
    if r.code != 220:
        c.close()
        return None
    c.login(user)
    return c


def test_session_limit_per_user(make_ferry):
    f = make_ferry("ulimit")
    alice = f.add_user("alice")
    bob = f.add_user("bob")
    s = f.serve("limits.max_sessions_per_user=2", "limits.failed_login_delay_ms=50")
    held = [s.ctrl(alice) for _ in range(2)]
    try:
        c = s.ctrl()
        try:
            c.expect(f"USER {alice.name}", 331)
            r = c.cmd(f"PASS {alice.password}")
            assert r.code in (421, 530), f"3rd session of a user with max_sessions_per_user=2: {r}"
        except (ConnectionClosed, ConnectionResetError):
            pass
        finally:
            c.close()
        other = s.ctrl(bob)  # other users are not affected
        other.expect("NOOP", 200)
        other.close()
        held.pop().close()
        time.sleep(0.5)
        c = s.ctrl(alice)
        c.expect("NOOP", 200)
        c.close()
    finally:
        for h in held:
            h.close()
    s.stop()


def test_global_session_limit(make_ferry):
    f = make_ferry("glimit")
    alice = f.add_user("alice")
    s = f.serve("limits.max_sessions=2", "limits.failed_login_delay_ms=50")
    held = [s.ctrl(alice) for _ in range(2)]
    try:
        c = s.ctrl(greet=False)
        try:
            r = c.reply()
            assert r.code == 421, f"3rd session with max_sessions=2: {r}"
        finally:
            c.close()
    finally:
        for h in held:
            h.close()
    time.sleep(0.5)
    c = s.ctrl(alice)
    c.expect("NOOP", 200)
    c.close()
    s.stop()
