"""Raw-socket sessions: what ftplib cannot send (pipelining, bare LF, Telnet IAC bytes,
ABOR in the middle of a transfer)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from ferry_e2e import Ctrl, recv_all, write_random

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def wd(srv, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    return d


def test_pipelined_commands_are_answered_in_order(srv):
    c = srv.server.ctrl()
    try:
        a = srv.alice
        c.sendraw(f"USER {a.name}\r\nPASS {a.password}\r\nPWD\r\nSYST\r\nNOOP\r\nTYPE I\r\nFOO\r\n".encode())
        codes = [c.reply().code for _ in range(7)]
        assert codes == [331, 230, 257, 215, 200, 200, 500], codes
    finally:
        c.close()


def test_bare_lf_line_endings_are_accepted(srv):
    c = srv.server.ctrl()
    try:
        a = srv.alice
        c.send(f"USER {a.name}", eol=b"\n")
        assert c.reply().code == 331
        c.send(f"PASS {a.password}", eol=b"\n")
        assert c.reply().code == 230
        c.send("PWD", eol=b"\n")
        r = c.reply()
        assert r.code == 257 and r.text.startswith('257 "/"'), r
        c.send("NOOP", eol=b"\n")
        assert c.reply().code == 200
    finally:
        c.close()


def test_verbs_are_case_insensitive(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("noop", 200)
        c.expect("NoOp", 200)
        c.expect("syst", 215)
    finally:
        c.close()


def test_command_split_across_packets(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        for piece in (b"NO", b"O", b"P\r", b"\n"):
            c.sendraw(piece)
            time.sleep(0.05)
        assert c.reply().code == 200
    finally:
        c.close()


def _start_big_retr(c: Ctrl, path: str, min_bytes: int = 1 << 20) -> tuple[socket.socket, int]:
    data = c.pasv()
    c.expect(f"RETR {path}", 150, 125)
    got = 0
    data.settimeout(15)
    while got < min_bytes:
        d = data.recv(65536)
        assert d, "data connection closed early"
        got += len(d)
    return data, got


def _drain(sock: socket.socket, timeout: float = 15) -> int:
    n = 0
    sock.settimeout(timeout)
    try:
        while True:
            d = sock.recv(1 << 20)
            if not d:
                break
            n += len(d)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return n


@pytest.mark.parametrize("prefix", [b"", b"\xff\xf4\xff\xf2"], ids=["plain", "telnet-ip-synch"])
def test_abor_during_retr_replies_426_then_226(srv, wd, uniq, prefix):
    size = 64 << 20
    write_random(wd / "huge.bin", size)
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        data, got = _start_big_retr(c, f"/{uniq}/huge.bin")
        c.sendraw(prefix + b"ABOR\r\n")
        r1 = c.reply()
        assert r1.code == 426, f"first reply to ABOR during RETR: expected 426, got {r1}"
        r2 = c.reply()
        assert r2.code == 226, f"second reply to ABOR: expected 226, got {r2}"
        total = got + _drain(data)
        assert total < size, "the transfer was not aborted: the whole file arrived"
        c.expect("NOOP", 200)
        # the session can transfer again
        assert c.retr(f"/{uniq}/huge.bin")[:10] == (wd / "huge.bin").read_bytes()[:10]
    finally:
        c.close()


def test_abor_during_stor_of_new_file_keeps_resumable_partial(srv, wd, uniq):
    payload = os.urandom(1 << 20)
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect(f"STOR /{uniq}/new.bin", 150, 125)
        data.sendall(payload[:256 << 10])
        time.sleep(0.5)
        c.sendraw(b"ABOR\r\n")
        r1 = c.reply()
        assert r1.code == 426, f"expected 426 for the aborted STOR, got {r1}"
        r2 = c.reply()
        assert r2.code == 226, f"expected 226 for ABOR, got {r2}"
        data.close()
        r = c.cmd(f"SIZE /{uniq}/new.bin")
        assert r.code == 213, f"partial of an aborted new upload must be visible: {r}"
        n = int(r.text[4:])
        assert 0 < n <= 256 << 10, n
        assert (wd / "new.bin").read_bytes() == payload[:n]
        # resume with REST + STOR
        c.expect(f"REST {n}", 350)
        data = c.pasv()
        c.expect(f"STOR /{uniq}/new.bin", 150, 125)
        data.sendall(payload[n:])
        data.close()
        c.expect_reply(226)
        assert (wd / "new.bin").read_bytes() == payload
    finally:
        c.close()


def test_abor_during_overwrite_keeps_old_file(srv, wd, uniq):
    old = os.urandom(300_000)
    (wd / "old.bin").write_bytes(old)
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect(f"STOR /{uniq}/old.bin", 150, 125)
        data.sendall(os.urandom(500_000))
        time.sleep(0.5)
        c.sendraw(b"ABOR\r\n")
        assert c.reply().code == 426
        assert c.reply().code == 226
        data.close()
        time.sleep(0.3)
        assert (wd / "old.bin").read_bytes() == old
        assert c.cmd(f"SIZE /{uniq}/old.bin").text == "213 300000"
        assert sorted(os.listdir(wd)) == ["old.bin"], os.listdir(wd)
    finally:
        c.close()


def test_rein_resets_session(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("CWD /", 250)
        c.expect("REIN", 220)
        c.expect("PWD", 530)
        c.login(srv.alice)
        c.expect("NOOP", 200)
    finally:
        c.close()


def test_quit_replies_221_and_closes(srv):
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("QUIT", 221)
        assert c.reads_eof(5), "server did not close the connection after QUIT"
    finally:
        c.close()


def test_retr_without_pasv_or_port_is_425(srv, wd, uniq):
    (wd / "f.bin").write_bytes(b"data")
    c = srv.server.ctrl(srv.alice)
    try:
        r = c.cmd(f"RETR /{uniq}/f.bin")
        assert r.code == 425, r
        c.expect("NOOP", 200)
    finally:
        c.close()


def test_two_transfers_on_one_session_and_listing_between(srv, wd, uniq):
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        for i in range(3):
            r = c.stor(f"/{uniq}/f{i}", bytes([i]) * (1000 * (i + 1)))
            assert r.code == 226, r
        final, data = c.listing(f"NLST /{uniq}")
        assert final.code == 226
        names = sorted(os.path.basename(l) for l in data.decode().split("\r\n") if l)
        assert names == ["f0", "f1", "f2"], data
        assert c.retr(f"/{uniq}/f2") == b"\x02" * 3000
    finally:
        c.close()


def test_short_transfers_reach_a_client_with_a_tiny_window_that_reads_only_after_the_150(srv, wd, uniq):
    # Short downloads and listings are written at once, their 150 going out with the 226 (or,
    # if the socket cannot take them at once, first, the rest following from a task): either
    # way a client that reads nothing before the 150, with a 2 kB receive window, gets the 150
    # first and every byte.
    payload = os.urandom(60_000)
    (wd / "f.bin").write_bytes(payload)
    for i in range(40):
        (wd / f"name-{i:02}-{'x' * 200}").write_bytes(b"")
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        for verb, expect_len in ((f"RETR /{uniq}/f.bin", len(payload)), (f"NLST /{uniq}", None)):
            r = c.expect("PASV", 227)
            nums = [int(x) for x in r.text.split("(")[1].split(")")[0].split(",")]
            data = socket.socket()
            data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            data.settimeout(15)
            data.connect((srv.server.host, nums[4] * 256 + nums[5]))
            time.sleep(0.2)  # connected well before the command, as most clients are
            c.send(verb)
            first = c.reply()
            assert first.code == 150, first
            got = recv_all(data)
            assert c.reply().code == 226
            if expect_len is None:
                assert got.count(b"\r\n") == 41, got[:200]
            else:
                assert got == payload
    finally:
        c.close()


def _reset(sock: socket.socket):
    """Close with RST instead of FIN (what a crashing client or a dropped link looks like)."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_reset_connections_mid_overwrite_keep_old_file(srv, wd, uniq):
    old = os.urandom(400_000)
    (wd / "keep.bin").write_bytes(old)
    c = srv.server.ctrl(srv.alice)
    c.expect("TYPE I", 200)
    data = c.pasv()
    c.expect(f"STOR /{uniq}/keep.bin", 150, 125)
    data.sendall(os.urandom(200_000))
    time.sleep(0.3)
    _reset(data)
    _reset(c.sock)
    time.sleep(1.0)
    assert (wd / "keep.bin").read_bytes() == old
    assert [n for n in os.listdir(wd) if n != "keep.bin"] == [], os.listdir(wd)


def test_reset_connections_mid_upload_keep_resumable_partial(srv, wd, uniq):
    payload = os.urandom(400_000)
    c = srv.server.ctrl(srv.alice)
    c.expect("TYPE I", 200)
    data = c.pasv()
    c.expect(f"STOR /{uniq}/part.bin", 150, 125)
    data.sendall(payload[:150_000])
    time.sleep(0.5)
    _reset(data)
    _reset(c.sock)
    c2 = srv.server.ctrl(srv.alice)
    try:
        c2.expect("TYPE I", 200)
        deadline = time.monotonic() + 10
        while True:
            r = c2.cmd(f"SIZE /{uniq}/part.bin")
            if r.code == 213 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.code == 213, f"no resumable partial after a reset: {r}"
        n = int(r.text[4:])
        assert 0 < n <= 150_000
        assert (wd / "part.bin").read_bytes() == payload[:n]
        r = c2.stor(f"/{uniq}/part.bin", payload[n:], verb="APPE")
        assert r.code == 226, r
        assert (wd / "part.bin").read_bytes() == payload
    finally:
        c2.close()
