"""Atomic uploads: readers never see half a file; a new file appears only when complete;
two sessions overwriting one file leave one complete version, never a mix."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from ferry_e2e import ftp_try

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def wd(srv, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    return d


def test_reader_sees_old_file_during_overwrite(srv, wd, uniq):
    old = os.urandom(1 << 20)
    new = os.urandom(2 << 20)
    (wd / "doc.bin").write_bytes(old)
    w = srv.server.ctrl(srv.alice)
    r = srv.server.ctrl(srv.alice)
    try:
        w.expect("TYPE I", 200)
        r.expect("TYPE I", 200)
        data = w.pasv()
        w.expect(f"STOR /{uniq}/doc.bin", 150, 125)
        data.sendall(new[: 1 << 20])
        time.sleep(0.5)  # half the new content is on the server
        assert r.retr(f"/{uniq}/doc.bin") == old, "a reader saw a half-written overwrite"
        assert r.cmd(f"SIZE /{uniq}/doc.bin").text == f"213 {len(old)}"
        names = [n for n in os.listdir(wd) if not n.startswith(".ferry-")]
        assert names == ["doc.bin"], os.listdir(wd)
        data.sendall(new[1 << 20:])
        data.close()
        w.expect_reply(226)
        assert r.retr(f"/{uniq}/doc.bin") == new
    finally:
        w.close()
        r.close()


def test_new_file_is_invisible_until_upload_completes(srv, wd, uniq):
    payload = os.urandom(1 << 20)
    w = srv.server.ctrl(srv.alice)
    r = srv.server.ctrl(srv.alice)
    try:
        w.expect("TYPE I", 200)
        data = w.pasv()
        w.expect(f"STOR /{uniq}/fresh.bin", 150, 125)
        data.sendall(payload[:300_000])
        time.sleep(0.5)
        assert r.cmd(f"SIZE /{uniq}/fresh.bin").code == 550, "a file being uploaded is visible"
        final, listing = r.listing(f"NLST /{uniq}")
        assert final.code == 226
        assert b"fresh.bin" not in listing and b".ferry-" not in listing, listing
        data.sendall(payload[300_000:])
        data.close()
        w.expect_reply(226)
        assert r.cmd(f"SIZE /{uniq}/fresh.bin").text == f"213 {len(payload)}"
        assert (wd / "fresh.bin").read_bytes() == payload
    finally:
        w.close()
        r.close()


@pytest.mark.parametrize("round_", range(6))
def test_concurrent_overwrites_leave_one_complete_version(srv, wd, uniq, round_):
    """Two sessions overwrite one file at once: the result is one complete version, never a
    mix, and HASH describes the version that is on disk."""
    payloads = [os.urandom(1 << 20), os.urandom(1 << 20)]
    results: list = [None, None]
    start = threading.Barrier(2)
    finish = threading.Barrier(2)

    def upload(i):
        c = srv.server.ctrl(srv.alice, timeout=30)
        try:
            c.expect("TYPE I", 200)
            data = c.pasv()
            c.expect(f"STOR /{uniq}/same.bin", 150, 125)
            start.wait(10)
            p = payloads[i]
            for off in range(0, len(p), 64 << 10):  # interleave the two uploads
                data.sendall(p[off:off + (64 << 10)])
                time.sleep(0.005)
            finish.wait(10)  # both uploads complete at the same moment
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
    final = (wd / "same.bin").read_bytes()
    assert final in payloads, "two concurrent overwrites produced a mix of both"
    assert os.listdir(wd) == ["same.bin"], os.listdir(wd)
    on_disk = hashlib.sha256(final).hexdigest()
    other = hashlib.sha256(payloads[1 - payloads.index(final)]).hexdigest()
    f = srv.server.ftp(srv.alice)
    try:
        r = f.sendcmd(f"HASH {uniq}/same.bin")
    finally:
        f.close()
    assert other not in r, f"HASH reports the digest of the upload that lost the race, not the file on disk: {r}"
    assert on_disk in r, r


def test_delete_during_upload_of_same_name(srv, wd, uniq):
    """DELE of a name that is being uploaded: either refused or the upload still ends in a
    complete file or none; never a truncated file."""
    payload = os.urandom(1 << 20)
    (wd / "victim.bin").write_bytes(b"old")
    w = srv.server.ctrl(srv.alice)
    d = srv.server.ftp(srv.alice)
    try:
        w.expect("TYPE I", 200)
        data = w.pasv()
        w.expect(f"STOR /{uniq}/victim.bin", 150, 125)
        data.sendall(payload[:500_000])
        time.sleep(0.3)
        code, _ = ftp_try(d, f"DELE {uniq}/victim.bin")
        assert code in (250, 450, 550), code
        data.sendall(payload[500_000:])
        data.close()
        w.expect_reply(226)
        assert (wd / "victim.bin").read_bytes() == payload
    finally:
        w.close()
        d.close()
