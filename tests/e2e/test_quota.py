"""Quotas that cannot be beaten by racing: two parallel uploads that together exceed the
quota -> exactly one 226 and one 552, ledger == disk afterwards; overwrite at full quota;
file-count quota; AVBL / SITE QUOTA; `ferry user quota` and `rescan` while serving."""

from __future__ import annotations

import ftplib
import os
import re
import threading
import time
from types import SimpleNamespace

import pytest

from ferry_e2e import (
    curl_popen, dir_growth, dir_sizes, disk_usage_bytes, ftp_size, ftp_stor, ftp_stor_reply, ftp_try,
    kill_when,
    sha256_bytes, wait_until, write_random,
)

pytestmark = pytest.mark.timeout(90)

MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture(scope="module")
def q(make_ferry):
    f = make_ferry("quota")
    users = {
        "race": f.add_user("race", None, "--quota", "1MiB"),
        "race4": f.add_user("race4", None, "--quota", "1MiB"),
        "full": f.add_user("full", None, "--quota", "1MiB"),
        "files": f.add_user("files", None, "--quota-files", "2"),
        "avbl": f.add_user("avbl", None, "--quota", "1MiB"),
        "grow": f.add_user("grow", None, "--quota", "1MiB"),
        "appe": f.add_user("appe", None, "--quota", "1MiB"),
        "kill": f.add_user("kill", None, "--quota", "8MiB"),
        "dele": f.add_user("dele", None, "--quota", "1MiB"),
        "same": f.add_user("same", None, "--quota", "4MiB"),
        "lower": f.add_user("lower", None, "--quota", "1MiB"),
        "drop": f.add_user("drop", None, "--quota", "4MiB", "--quota-files", "100"),
    }
    s = f.serve("limits.failed_login_delay_ms=50")
    yield SimpleNamespace(ferry=f, server=s, **users)
    s.stop()


def settled_ledger(q, name: str, timeout: float = 10) -> dict:
    """The user's ledger once no reservation is outstanding."""
    return wait_until(lambda: (u := q.ferry.user_info(name))["reserved_bytes"] == 0 and u, timeout, 0.2,
                      f"reserved_bytes of {name} to return to 0")


def throttled_stor(server, user, name: str, payload: bytes, started: threading.Barrier, out: dict,
                   chunk: int = 16 * KiB, pause: float = 0.02):
    """STOR `payload` slowly; both uploads must be in flight at once (barrier after 150)."""
    f = None
    try:
        f = server.ftp(user)
        f.voidcmd("TYPE I")
        try:
            conn = f.transfercmd(f"STOR {name}")
        except ftplib.error_perm as e:  # refused up front: fine, that counts as the 552
            out["reply"] = str(e)
            started.abort()
            return
        try:
            started.wait(20)
        except threading.BrokenBarrierError:
            pass
        try:
            for i in range(0, len(payload), chunk):
                conn.sendall(payload[i:i + chunk])
                time.sleep(pause)
        except OSError as e:  # the server stopped the upload
            out["send_error"] = repr(e)
        conn.close()
        try:
            out["reply"] = f.voidresp()
        except ftplib.all_errors as e:
            out["reply"] = str(e)
    except Exception as e:  # noqa: BLE001
        out["reply"] = f"client error: {e!r}"
    finally:
        if f:
            f.close()


def test_parallel_uploads_cannot_exceed_quota(q):
    home = q.race.home
    a, b = os.urandom(768 * KiB), os.urandom(768 * KiB)
    started = threading.Barrier(2)
    outs = [{}, {}]
    threads = [threading.Thread(target=throttled_stor, args=(q.server, q.race, n, d, started, o), daemon=True)
               for n, d, o in (("a.bin", a, outs[0]), ("b.bin", b, outs[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(o.get("reply", "none")[:3] for o in outs)
    assert codes == ["226", "552"], f"expected exactly one 226 and one 552, got {outs}"
    winner, payload = ("a.bin", a) if outs[0]["reply"].startswith("226") else ("b.bin", b)
    loser = "b.bin" if winner == "a.bin" else "a.bin"
    assert (home / winner).read_bytes() == payload
    assert not (home / loser).exists(), "the upload that hit the quota must not be stored"
    assert sorted(os.listdir(home)) == [winner], os.listdir(home)
    u = settled_ledger(q, "race")
    assert u["used_bytes"] == disk_usage_bytes(home) == 768 * KiB, u
    assert u["used_files"] == 1, u
    f = q.server.ftp(q.race)
    try:
        assert ftp_try(f, f"SIZE {loser}")[0] == 550
        assert f.sendcmd("AVBL") == f"213 {MiB - 768 * KiB}"
    finally:
        f.close()


def test_four_parallel_uploads_respect_quota(q):
    home = q.race4.home
    payloads = {f"p{i}.bin": os.urandom(300 * KiB) for i in range(4)}
    started = threading.Barrier(4)
    outs = {n: {} for n in payloads}
    threads = [threading.Thread(target=throttled_stor, args=(q.server, q.race4, n, d, started, outs[n]),
                                daemon=True) for n, d in payloads.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [o.get("reply", "none")[:3] for o in outs.values()]
    assert set(codes) <= {"226", "552"} and "226" in codes and "552" in codes, outs
    stored = 0
    for n, o in outs.items():
        if o["reply"].startswith("226"):
            assert (home / n).read_bytes() == payloads[n]
            stored += len(payloads[n])
        else:
            assert not (home / n).exists(), f"{n} got {o['reply']!r} but is on disk"
    assert stored <= MiB
    u = settled_ledger(q, "race4")
    assert u["used_bytes"] == disk_usage_bytes(home) == stored, u


def test_overwrite_at_full_quota_with_equal_size_works(q):
    home = q.full.home
    f = q.server.ftp(q.full)
    try:
        first = os.urandom(MiB)
        assert ftp_stor(f, "a.bin", first).startswith("226")
        assert f.sendcmd("AVBL") == "213 0"
        r = ftp_stor_reply(f, "b.bin", b"x")
        assert r.startswith("552"), r
        assert not (home / "b.bin").exists()
        second = os.urandom(MiB)
        assert ftp_stor(f, "a.bin", second).startswith("226")
        assert (home / "a.bin").read_bytes() == second
        assert f.sendcmd("HASH a.bin").split()[3] == sha256_bytes(second)
        # a bigger overwrite does not fit and leaves the old file alone
        r = ftp_stor_reply(f, "a.bin", os.urandom(MiB + 1))
        assert r.startswith("552"), r
        assert (home / "a.bin").read_bytes() == second
        # a smaller overwrite frees space
        assert ftp_stor(f, "a.bin", b"small").startswith("226")
        assert f.sendcmd("AVBL") == f"213 {MiB - 5}"
    finally:
        f.close()
    u = settled_ledger(q, "full")
    assert u["used_bytes"] == disk_usage_bytes(home) == 5, u


def test_upload_that_crosses_quota_midway_gets_552_and_is_discarded(q):
    home = q.grow.home
    f = q.server.ftp(q.grow)
    try:
        base = os.urandom(600 * KiB)
        assert ftp_stor(f, "base.bin", base).startswith("226")
        r = ftp_stor_reply(f, "over.bin", os.urandom(600 * KiB))
        assert r.startswith("552"), r
        assert ftp_try(f, "SIZE over.bin")[0] == 550
        assert f.sendcmd("NOOP").startswith("200")
        # REST+STOR that would grow a file past the quota is refused too
        r = ftp_stor_reply(f, "base.bin", os.urandom(600 * KiB), rest=600 * KiB)
        assert r.startswith("552"), r
        assert (home / "base.bin").stat().st_size <= MiB
        assert (home / "base.bin").read_bytes()[: 600 * KiB] == base, "data already stored was lost"
    finally:
        f.close()
    assert not (home / "over.bin").exists()
    u = settled_ledger(q, "grow")
    assert u["used_bytes"] == disk_usage_bytes(home), u
    assert u["used_bytes"] <= MiB


def test_appe_past_quota_gets_552(q):
    home = q.appe.home
    f = q.server.ftp(q.appe)
    try:
        ftp_stor(f, "log.txt", b"a" * (1000 * KiB))
        r = ftp_stor_reply(f, "log.txt", b"b" * (100 * KiB), verb="APPE")
        assert r.startswith("552"), r
        assert (home / "log.txt").stat().st_size <= MiB
        assert (home / "log.txt").read_bytes()[: 1000 * KiB] == b"a" * (1000 * KiB)
    finally:
        f.close()
    u = settled_ledger(q, "appe")
    assert u["used_bytes"] == disk_usage_bytes(home), u


def test_file_count_quota(q):
    f = q.server.ftp(q.files)
    try:
        ftp_stor(f, "1.txt", b"1")
        ftp_stor(f, "2.txt", b"2")
        r = ftp_stor_reply(f, "3.txt", b"3")
        assert r.startswith("552"), r
        assert ftp_stor(f, "2.txt", b"two").startswith("226")  # overwrite: same count
        f.delete("1.txt")
        assert ftp_stor(f, "3.txt", b"3").startswith("226")
    finally:
        f.close()
    assert sorted(os.listdir(q.files.home)) == ["2.txt", "3.txt"]
    u = settled_ledger(q, "files")
    assert u["used_files"] == 2 and u["quota_files"] == 2, u


def test_avbl_site_quota_and_cli_changes(q):
    home = q.avbl.home
    f = q.server.ftp(q.avbl)
    try:
        assert f.sendcmd("AVBL") == f"213 {MiB}"
        ftp_stor(f, "x.bin", os.urandom(100_000))
        assert f.sendcmd("AVBL") == f"213 {MiB - 100_000}"
        r = f.sendcmd("SITE QUOTA")
        assert r.startswith("200-") and len(r.splitlines()) > 1, r
        for word in ("used", "reserved", "quota"):
            assert word in r.lower(), r
        st = f.sendcmd("STAT")
        assert st.startswith("211-"), st
        # the admin raises the quota while the server runs
        q.ferry.user_cmd("quota", "avbl", "2MiB")
        wait_until(lambda: f.sendcmd("AVBL") == f"213 {2 * MiB - 100_000}", 10, 0.2,
                   "AVBL to reflect `ferry user quota avbl 2MiB`")
        assert q.ferry.user_info("avbl")["quota_bytes"] == 2 * MiB
        # a file planted behind the server's back is counted after `ferry user rescan`
        (home / "planted.bin").write_bytes(b"p" * 12_345)
        q.ferry.user_cmd("rescan", "avbl")
        u = settled_ledger(q, "avbl")
        assert u["used_bytes"] == disk_usage_bytes(home) == 112_345, u
        assert u["used_files"] == 2, u
        wait_until(lambda: f.sendcmd("AVBL") == f"213 {2 * MiB - 112_345}", 10, 0.2, "AVBL after rescan")
        q.ferry.user_cmd("quota", "avbl", "none")
        assert q.ferry.user_info("avbl")["quota_bytes"] is None
        ftp_stor(f, "big.bin", os.urandom(3 * MiB))  # no quota any more
    finally:
        f.close()


def test_killed_upload_releases_reservation_and_ledger_matches_disk(q, tmp_path):
    home = q.kill.home
    src = tmp_path / "src"
    write_random(src, 6 * MiB)
    baseline = dir_sizes(home)
    p = curl_popen("-u", f"kill:{q.kill.password}", "--limit-rate", "1M", "-T", str(src),
                   q.server.url("partial.bin"))
    kill_when(p, lambda: dir_growth(home, baseline) >= MiB, 60, "1 MiB uploaded")

    def partial_size():
        f = q.server.ftp(q.kill)
        try:
            return ftp_size(f, "partial.bin")
        except ftplib.error_perm:
            return None
        finally:
            f.close()
    n = wait_until(partial_size, 15, 0.2, "the partial to appear")
    assert 0 < n < 6 * MiB
    u = settled_ledger(q, "kill")
    assert u["used_bytes"] == disk_usage_bytes(home) == n, u
    f = q.server.ftp(q.kill)
    try:
        assert f.sendcmd("AVBL") == f"213 {8 * MiB - n}"
    finally:
        f.close()


def test_dele_and_rmd_free_quota(q):
    home = q.dele.home
    f = q.server.ftp(q.dele)
    try:
        ftp_stor(f, "a.bin", os.urandom(700 * KiB))
        r = ftp_stor_reply(f, "b.bin", os.urandom(700 * KiB))
        assert r.startswith("552"), r
        f.delete("a.bin")
        assert f.sendcmd("AVBL") == f"213 {MiB}"
        assert ftp_stor(f, "b.bin", os.urandom(700 * KiB)).startswith("226")
        f.rename("b.bin", "c.bin")  # a rename costs nothing
        assert f.sendcmd("AVBL") == f"213 {MiB - 700 * KiB}"
    finally:
        f.close()
    u = settled_ledger(q, "dele")
    assert u["used_bytes"] == disk_usage_bytes(home) == 700 * KiB and u["used_files"] == 1, u


@pytest.mark.parametrize("round_", range(3))
@pytest.mark.parametrize("existing", [False, True], ids=["new-name", "overwrite"])
def test_concurrent_uploads_to_one_name_keep_ledger_exact(q, existing, round_):
    home = q.same.home
    for n in os.listdir(home):
        os.unlink(home / n)
    q.ferry.user_cmd("rescan", "same")
    if existing:
        f = q.server.ftp(q.same)
        ftp_stor(f, "one.bin", os.urandom(200 * KiB))
        f.close()
    payloads = [os.urandom(300 * KiB), os.urandom(300 * KiB)]
    start, finish = threading.Barrier(2), threading.Barrier(2)
    results = [None, None]

    def upload(i):
        c = q.server.ctrl(q.same, timeout=30)
        try:
            c.expect("TYPE I", 200)
            data = c.pasv()
            c.expect("STOR one.bin", 150, 125)
            start.wait(10)
            for off in range(0, len(payloads[i]), 32 * KiB):
                data.sendall(payloads[i][off:off + 32 * KiB])
                time.sleep(0.005)
            finish.wait(10)
            data.close()
            results[i] = c.reply().code
        except Exception as e:  # noqa: BLE001
            results[i] = repr(e)
        finally:
            c.close()

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [226, 226], results
    assert (home / "one.bin").read_bytes() in payloads
    u = settled_ledger(q, "same")
    assert u["used_bytes"] == disk_usage_bytes(home) == 300 * KiB, u
    assert u["used_files"] == 1, u


def test_quota_lowered_below_usage(q):
    home = q.lower.home
    f = q.server.ftp(q.lower)
    try:
        ftp_stor(f, "big.bin", os.urandom(800 * KiB))
        q.ferry.user_cmd("quota", "lower", "500KiB")
        wait_until(lambda: f.sendcmd("AVBL") == "213 0", 10, 0.2, "AVBL to be 0 (not negative or wrapped)")
        r = ftp_stor_reply(f, "more.bin", b"x")
        assert r.startswith("552"), r
        assert not (home / "more.bin").exists()
        # shrinking the file by an overwrite brings the user back under the quota
        r = ftp_stor_reply(f, "big.bin", b"s" * (100 * KiB))
        assert r.startswith("226"), r
        assert f.sendcmd("AVBL") == f"213 {400 * KiB}"
    finally:
        f.close()
    u = settled_ledger(q, "lower")
    assert u["used_bytes"] == disk_usage_bytes(home) == 100 * KiB, u


def test_uploads_are_counted_and_logged_when_the_client_drops_the_connection_after_226(q):
    # The 226 of an upload goes out before its ledger commit and log lines (they follow at once,
    # before the session reads on): a client that vanishes right after the 226 still gets both.
    home = q.drop.home
    sizes = [1000 + 37 * i for i in range(20)]
    for i, size in enumerate(sizes):
        f = q.server.ftp(q.drop)
        reply = ftp_stor(f, f"d{i:02}.bin", os.urandom(size))
        assert reply.startswith("226"), reply
        f.sock.close()  # no QUIT: the connection is simply gone
    u = settled_ledger(q, "drop")
    assert u["used_bytes"] == disk_usage_bytes(home) == sum(sizes), u
    assert u["used_files"] == 20, u
    logged = wait_until(
        lambda: (n := sum(1 for l in q.ferry.xferlog.read_text().splitlines()
                          if re.search(r" /d\d\d\.bin b _ i r drop ftp 0 \* c$", l))) == 20 and n,
        10, 0.2, "20 upload lines of drop in logs/xferlog")
    assert logged == 20
