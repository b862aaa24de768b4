"""Interrupted transfers: a client killed mid-upload of a new file leaves a partial that
is visible with its size and resumes to a byte-identical file (curl -C -, REST+STOR);
killed mid-overwrite leaves the old file intact; killed mid-download resumes; an upload
that stalls is timed out and keeps its partial."""

from __future__ import annotations

import ftplib
import os
import socket
import threading
import time

import pytest

from ferry_e2e import (
    curl, curl_popen, dir_growth, dir_sizes, ftp_size, ftp_stor, kill_when, sha256_bytes,
    sha256_file, wait_until, write_random,
)

pytestmark = pytest.mark.timeout(150)

SIZE = 8 << 20
RATE = "1M"
KILL_AFTER = 1 << 20


def cred(u) -> list[str]:
    return ["-u", f"{u.name}:{u.password}"]


@pytest.fixture
def wd(srv, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    return d


def poll_size(srv, path: str, timeout: float = 15) -> int:
    """SIZE path, retried until the server answers 213 (it may still be handling the
    disconnect)."""
    def try_size():
        f = srv.server.ftp(srv.alice)
        try:
            f.voidcmd("TYPE I")
            return ftp_size(f, path)
        except ftplib.error_perm:
            return None
        finally:
            f.close()
    return wait_until(try_size, timeout, 0.2, f"SIZE {path} to answer 213")


def no_temp_files(d) -> bool:
    return not [n for n in os.listdir(d) if n.startswith(".ferry-")]


def kill_curl_upload(srv, wd, src, remote: str):
    baseline = dir_sizes(wd)
    p = curl_popen(*cred(srv.alice), "--limit-rate", RATE, "-T", str(src), srv.server.url(remote))
    kill_when(p, lambda: dir_growth(wd, baseline) >= KILL_AFTER, 60,
              f"{KILL_AFTER} bytes of the upload to reach the server")


def test_partial_upload_of_new_file_is_resumable_with_curl(srv, wd, uniq, tmp_path):
    src = tmp_path / "src"
    digest = write_random(src, SIZE)
    kill_curl_upload(srv, wd, src, f"{uniq}/new.bin")
    n = poll_size(srv, f"{uniq}/new.bin")
    assert KILL_AFTER <= n < SIZE, f"partial size {n}"
    assert (wd / "new.bin").read_bytes() == src.read_bytes()[:n], "partial is not a prefix of the upload"
    wait_until(lambda: no_temp_files(wd), 10, what="no .ferry- temp file left")
    curl(*cred(srv.alice), "-C", "-", "-T", str(src), srv.server.url(f"{uniq}/new.bin"))
    assert sha256_file(wd / "new.bin") == digest


def test_partial_upload_of_new_file_resumes_with_rest_stor(srv, wd, uniq, tmp_path):
    src = tmp_path / "src"
    digest = write_random(src, SIZE)
    kill_curl_upload(srv, wd, src, f"{uniq}/new.bin")
    n = poll_size(srv, f"{uniq}/new.bin")
    assert 0 < n < SIZE
    data = src.read_bytes()
    f = srv.server.ftp(srv.alice)
    try:
        f.voidcmd("TYPE I")
        ftp_stor(f, f"{uniq}/new.bin", data[n:], rest=n)
        assert ftp_size(f, f"{uniq}/new.bin") == SIZE
        r = f.sendcmd(f"HASH {uniq}/new.bin")
        assert f" {digest} " in r, r
    finally:
        f.close()
    assert sha256_file(wd / "new.bin") == digest


def test_killed_overwrite_leaves_old_file_intact(srv, wd, uniq, tmp_path):
    old = os.urandom(3 << 20)
    f = srv.server.ftp(srv.alice)
    ftp_stor(f, f"{uniq}/existing.bin", old)
    f.close()
    src = tmp_path / "src"
    write_random(src, SIZE)
    kill_curl_upload(srv, wd, src, f"{uniq}/existing.bin")
    # the server notices the disconnect and throws the temp file away
    wait_until(lambda: no_temp_files(wd), 15, what="the aborted overwrite's temp file to be discarded")
    time.sleep(0.5)
    assert (wd / "existing.bin").read_bytes() == old, "old file was modified by a killed overwrite"
    assert sorted(os.listdir(wd)) == ["existing.bin"]
    f = srv.server.ftp(srv.alice)
    try:
        assert ftp_size(f, f"{uniq}/existing.bin") == len(old)
        r = f.sendcmd(f"HASH {uniq}/existing.bin")
        assert f" {sha256_bytes(old)} " in r, f"HASH after a failed overwrite is stale or wrong: {r}"
    finally:
        f.close()


DL_SIZE = 48 << 20  # curl reads what the socket buffers hold (~10 MiB on loopback) before it throttles


def test_killed_download_resumes_with_curl(srv, wd, uniq, tmp_path):
    digest = write_random(wd / "dl.bin", DL_SIZE)
    out = tmp_path / "dl.out"
    p = curl_popen(*cred(srv.alice), "--limit-rate", RATE, "-o", str(out), srv.server.url(f"{uniq}/dl.bin"))
    kill_when(p, lambda: out.exists() and out.stat().st_size >= KILL_AFTER, 60, "1 MiB downloaded")
    n = out.stat().st_size
    assert KILL_AFTER <= n < DL_SIZE, n
    curl(*cred(srv.alice), "-C", "-", "-o", str(out), srv.server.url(f"{uniq}/dl.bin"))
    assert sha256_file(out) == digest
    # the server is not disturbed by the killed download
    assert (wd / "dl.bin").stat().st_size == DL_SIZE


def test_upload_killed_twice_still_resumes_to_identical_file(srv, wd, uniq, tmp_path):
    src = tmp_path / "src"
    digest = write_random(src, SIZE)
    kill_curl_upload(srv, wd, src, f"{uniq}/twice.bin")
    n1 = poll_size(srv, f"{uniq}/twice.bin")
    baseline = dir_sizes(wd)
    p = curl_popen(*cred(srv.alice), "--limit-rate", RATE, "-C", "-", "-T", str(src),
                   srv.server.url(f"{uniq}/twice.bin"))
    kill_when(p, lambda: dir_growth(wd, baseline) >= KILL_AFTER, 60, "the resumed upload to grow 1 MiB")
    n2 = wait_until(lambda: (s := poll_size(srv, f"{uniq}/twice.bin")) > n1 and s, 15,
                    what="the second partial to be longer")
    assert n2 < SIZE
    assert (wd / "twice.bin").read_bytes() == src.read_bytes()[:n2]
    curl(*cred(srv.alice), "-C", "-", "-T", str(src), srv.server.url(f"{uniq}/twice.bin"))
    assert sha256_file(wd / "twice.bin") == digest


@pytest.fixture(scope="module")
def stall_srv(make_ferry):
    f = make_ferry("stall")
    alice = f.add_user("alice")
    s = f.serve("limits.transfer_stall_timeout_secs=2", "limits.failed_login_delay_ms=50")
    yield s, alice
    s.stop()


def test_a_client_that_stops_reading_its_replies_is_dropped(stall_srv):
    # Commands keep coming but no reply is read: once the socket buffers are full, a reply
    # waits at most the stall timeout (2 s here), then the server closes the connection.
    s, alice = stall_srv
    c = s.ctrl(alice, timeout=20)
    sent = 100_000

    def flood():
        try:
            c.sock.sendall(b"FEAT\r\n" * sent)
        except OSError:
            pass  # the server closed the connection under our feet

    flooder = threading.Thread(target=flood, daemon=True)
    try:
        flooder.start()
        time.sleep(6)
        got = b""
        c.settimeout(10)
        try:
            while chunk := c.sock.recv(1 << 16):
                got += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the session still waits for us after {len(got)} bytes of replies")
        answered = got.count(b"\r\n211 End")
        assert 0 < answered < sent, f"{answered} of {sent} FEATs answered before the close"
    finally:
        c.close()
        flooder.join(10)


def test_stalled_upload_times_out_and_keeps_partial(stall_srv):
    s, alice = stall_srv
    payload = os.urandom(300_000)
    c = s.ctrl(alice, timeout=20)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect("STOR stalled.bin", 150, 125)
        data.sendall(payload[:100_000])
        t0 = time.monotonic()
        r = c.reply()  # the client now says nothing on either connection
        elapsed = time.monotonic() - t0
        assert r.code in (426, 451), f"a stalled upload should end with 426/451, got {r}"
        assert 1.5 <= elapsed <= 10, f"stall timeout of 2s fired after {elapsed:.1f}s"
        data.close()
        r = c.cmd("SIZE stalled.bin")
        assert r.text == "213 100000", f"the stalled upload's partial must be kept: {r}"
        c.expect("REST 100000", 350)
        r = c.stor("stalled.bin", payload[100_000:])
        assert r.code == 226, r
        assert (alice.home / "stalled.bin").read_bytes() == payload
    finally:
        c.close()


def test_stalled_overwrite_keeps_old_file(stall_srv):
    s, alice = stall_srv
    old = os.urandom(200_000)
    (alice.home / "stall-old.bin").write_bytes(old)
    c = s.ctrl(alice, timeout=20)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect("STOR stall-old.bin", 150, 125)
        data.sendall(os.urandom(50_000))
        r = c.reply()
        assert r.code in (426, 451), f"a stalled upload should end with 426/451, got {r}"
        data.close()
        assert c.cmd("SIZE stall-old.bin").text == "213 200000"
        assert (alice.home / "stall-old.bin").read_bytes() == old
    finally:
        c.close()


def test_stalled_download_times_out(stall_srv):
    s, alice = stall_srv
    write_random(alice.home / "big-stall.bin", 32 << 20)
    c = s.ctrl(alice, timeout=30)
    try:
        c.expect("TYPE I", 200)
        data = c.pasv()
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.expect("RETR big-stall.bin", 150, 125)
        t0 = time.monotonic()
        r = c.reply()  # we never read: the server's writes stall
        elapsed = time.monotonic() - t0
        assert r.code in (426, 451), f"a stalled download should end with 426/451, got {r}"
        assert elapsed <= 15, elapsed
        data.close()
        c.expect("NOOP", 200)
    finally:
        c.close()
