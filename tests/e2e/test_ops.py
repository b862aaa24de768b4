"""Operations: the transfer log, first start, config errors, graceful shutdown (SIGTERM /
SIGINT) that keeps a killed upload's partial resumable."""

from __future__ import annotations

import ftplib
import os
import signal
import socket
import subprocess
import time

import pytest

from ferry_e2e import (
    FERRY_BIN, HOST, curl, curl_popen, dir_growth, dir_sizes, ftp_retr, ftp_size, ftp_stor,
    kill_when, passive_range, sha256_file, wait_until, write_random,
)

pytestmark = pytest.mark.timeout(120)


def parse_xferlog(line: str) -> dict:
    t = line.split()
    assert len(t) >= 18, f"not an xferlog line: {line!r}"
    return {
        "host": t[6], "bytes": int(t[7]), "file": " ".join(t[8:-9]), "type": t[-9], "action": t[-8],
        "direction": t[-7], "mode": t[-6], "user": t[-5], "service": t[-4], "auth": t[-3],
        "auth_user": t[-2], "status": t[-1], "time": t[5],
    }


def test_xferlog_has_one_line_per_transfer(make_ferry):
    f = make_ferry("xfer")
    alice = f.add_user("alice")
    s = f.serve("limits.failed_login_delay_ms=50")
    try:
        ftp = s.ftp(alice)
        ftp_stor(ftp, "up1.bin", b"a" * 1000)
        ftp_stor(ftp, "up2.bin", b"b" * 2345)
        assert ftp_retr(ftp, "up1.bin") == b"a" * 1000
        ftp.retrlines("LIST", lambda _l: None)  # listings are not file transfers
        ftp.quit()
        # an aborted download is a transfer too: logged as incomplete
        write_random(alice.home / "big.bin", 32 << 20)
        c = s.ctrl(alice)
        c.expect("TYPE I", 200)
        data = c.pasv()
        c.expect("RETR big.bin", 150, 125)
        data.settimeout(10)
        data.recv(65536)
        c.sendraw(b"ABOR\r\n")
        c.expect_reply(426, 226)
        data.close()
        c.close()
        log = f.xferlog
        lines = wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 4 and
                           log.read_text().splitlines(), 10, 0.2, "4 lines in logs/xferlog")
        time.sleep(0.5)
        lines = log.read_text().splitlines()
        assert len(lines) == 4, lines
        recs = [parse_xferlog(l) for l in lines]
        last = recs.pop()
        assert last["file"].endswith("big.bin") and last["direction"] == "o" and last["status"] == "i", last
        assert 0 < last["bytes"] < 32 << 20, last
        expect = [("up1.bin", 1000, "i"), ("up2.bin", 2345, "i"), ("up1.bin", 1000, "o")]
        for rec, (name, size, direction) in zip(recs, expect):
            assert rec["file"].endswith(name), rec
            assert rec["bytes"] == size, rec
            assert rec["direction"] == direction, rec
            assert rec["host"] == "127.0.0.1", rec
            assert rec["user"] == "alice", rec
            assert rec["type"] == "b", rec
            assert rec["status"] == "c", rec
            assert rec["time"].isdigit(), rec
    finally:
        s.stop()


def test_first_start_creates_admin_once(make_ferry):
    f = make_ferry("first")
    s = f.serve()
    try:
        assert any(l.startswith("created user admin") for l in s.stdout_lines), s.stdout_lines
        assert "admin" in {u["name"] for u in f.list_users()}
    finally:
        assert s.stop() == 0
    s2 = f.serve()
    try:
        time.sleep(0.3)
        assert not any(l.startswith("created user admin") for l in s2.stdout_lines), s2.stdout_lines
    finally:
        s2.stop()


def test_no_admin_created_when_users_exist(make_ferry):
    f = make_ferry("first")
    f.add_user("alice")
    s = f.serve()
    try:
        time.sleep(0.3)
        assert not any(l.startswith("created user admin") for l in s.stdout_lines), s.stdout_lines
        assert {u["name"] for u in f.list_users()} == {"alice"}
    finally:
        s.stop()


def test_unknown_config_key_is_an_error(make_ferry):
    f = make_ferry("badcfg")
    lo, hi = passive_range()
    p = subprocess.run([FERRY_BIN, "serve", "--data-dir", str(f.data_dir), "--listen", f"{HOST}:0",
                        "--passive-ports", f"{lo}-{hi}", "--set", "limits.no_such_key=1"],
                       capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "no_such_key" in p.stderr, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_right_after_listening_shuts_down_cleanly(make_ferry, sig):
    # The handlers exist before the server says it listens: a signal sent the moment the
    # lines appear is a shutdown (exit 0), not a kill by the signal's default action.
    f = make_ferry("sigearly")
    for _ in range(5):
        s = f.serve()
        code = s.stop(sig, timeout=30)
        assert code == 0, f"exit code after {sig.name} right after listening: {code}\n{s.stderr_tail()}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_with_idle_sessions(make_ferry, sig):
    f = make_ferry("sig")
    alice = f.add_user("alice")
    s = f.serve("limits.failed_login_delay_ms=50")
    c = s.ctrl(alice)
    try:
        t0 = time.monotonic()
        code = s.stop(sig, timeout=30)
        assert code == 0, f"exit code after {sig.name}: {code}\n{s.stderr_tail()}"
        assert time.monotonic() - t0 < 15, "idle sessions held up shutdown"
        # the idle session is told or simply closed; it is not left hanging
        try:
            r = c.reply()
            assert r.code == 421, r
        except Exception:
            pass
        assert c.reads_eof(5)
    finally:
        c.close()
    # the listener is gone
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, s.port), timeout=3).close()


@pytest.mark.timeout(180)
def test_sigterm_during_upload_exits_0_and_partial_resumes(make_ferry, tmp_path):
    f = make_ferry("sigup")
    alice = f.add_user("alice")
    s = f.serve("limits.failed_login_delay_ms=50")
    src = tmp_path / "src"
    size = 16 << 20
    digest = write_random(src, size)
    url = s.url("upload.bin")
    baseline = dir_sizes(alice.home)
    p = curl_popen("-u", f"{alice.name}:{alice.password}", "--limit-rate", "1M", "-T", str(src), url)
    try:
        wait_until(lambda: dir_growth(alice.home, baseline) >= 1 << 20, 60, 0.05, "1 MiB uploaded")
        s.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert p.poll() is None or p.returncode != 0
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
    code = s.stop(timeout=60)
    assert code == 0, f"exit code after SIGTERM during an upload: {code}\n{s.stderr_tail()}"
    s2 = f.serve("limits.failed_login_delay_ms=50")
    try:
        ftp = s2.ftp(alice)
        ftp.voidcmd("TYPE I")
        n = ftp_size(ftp, "upload.bin")
        ftp.quit()
        assert 0 < n < size, n
        assert (alice.home / "upload.bin").read_bytes() == src.read_bytes()[:n]
        assert not [x for x in os.listdir(alice.home) if x.startswith(".ferry-")], os.listdir(alice.home)
        curl("-u", f"{alice.name}:{alice.password}", "-C", "-", "-T", str(src), s2.url("upload.bin"))
        assert sha256_file(alice.home / "upload.bin") == digest
        u = f.user_info("alice")
        assert u["used_bytes"] == size and u["reserved_bytes"] == 0, u
    finally:
        s2.stop()


def test_sigterm_lets_a_running_transfer_finish(make_ferry, tmp_path):
    f = make_ferry("grace")
    alice = f.add_user("alice")
    s = f.serve("limits.failed_login_delay_ms=50")
    src = tmp_path / "src"
    digest = write_random(src, 3 << 20)
    baseline = dir_sizes(alice.home)
    p = curl_popen("-u", f"{alice.name}:{alice.password}", "--limit-rate", "1M", "-T", str(src), s.url("g.bin"))
    try:
        wait_until(lambda: dir_growth(alice.home, baseline) >= 512 << 10, 60, 0.05, "512 KiB uploaded")
        s.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # no new sessions while shutting down
        with pytest.raises(OSError):
            socket.create_connection((s.host, s.port), timeout=3).close()
        p.wait(30)
        err = p.stderr.read().decode("utf-8", "replace")
        assert p.returncode == 0, f"upload during the grace period failed: curl {p.returncode}: {err}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert s.stop(timeout=30) == 0
    assert sha256_file(alice.home / "g.bin") == digest


def test_hash_is_right_when_hash_uploads_is_off(make_ferry):
    f = make_ferry("nohash")
    alice = f.add_user("alice")
    s = f.serve("ftp.hash_uploads=false", "limits.failed_login_delay_ms=50")
    try:
        ftp = s.ftp(alice)
        data = os.urandom(300_000)
        ftp_stor(ftp, "f.bin", data)
        import hashlib
        r = ftp.sendcmd("HASH f.bin")
        assert r.startswith(f"213 SHA-256 0-299999 {hashlib.sha256(data).hexdigest()}"), r
        ftp.quit()
    finally:
        s.stop()


def test_restart_keeps_ledger_and_digests_fresh(make_ferry):
    import hashlib

    f = make_ferry("restart")
    alice = f.add_user("alice", None, "--quota", "10MiB")
    s = f.serve("limits.failed_login_delay_ms=50")
    ftp = s.ftp(alice)
    a = os.urandom(100_000)
    ftp_stor(ftp, "a.bin", a)
    ftp_stor(ftp, "b.bin", os.urandom(50_000))
    ftp.quit()
    assert s.stop() == 0
    # changed behind the server's back while it was down: same size, new content and mtime
    b2 = os.urandom(50_000)
    (alice.home / "b.bin").write_bytes(b2)
    st = (alice.home / "b.bin").stat()
    os.utime(alice.home / "b.bin", (st.st_atime, st.st_mtime + 100))
    s2 = f.serve("limits.failed_login_delay_ms=50")
    try:
        ftp = s2.ftp(alice)
        assert hashlib.sha256(a).hexdigest() in ftp.sendcmd("HASH a.bin")
        r = ftp.sendcmd("HASH b.bin")
        assert hashlib.sha256(b2).hexdigest() in r, f"stale digest after restart: {r}"
        assert ftp.sendcmd("AVBL") == f"213 {10 * (1 << 20) - 150_000}"
        ftp.quit()
        u = f.user_info("alice")
        assert u["used_bytes"] == 150_000 and u["used_files"] == 2 and u["reserved_bytes"] == 0, u
    finally:
        s2.stop()
