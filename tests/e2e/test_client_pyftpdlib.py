"""The `ferry` client against another server, pyftpdlib (no TLS, no HASH, no RANG: the client
goes on in plaintext on loopback and checks sizes instead of digests): round trips of files,
trees with UTF-8 names and 100 MiB, resume after a killed transfer both ways (on a throttled
server), .netrc, and the small commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client_e2e import (EXIT_REFUSED, ok, one_line_error, popen_client, pyftpdlib_available,
                        run_client, start_pyftpd)
from ferry_e2e import kill_when, sha256_file, tree_digest, wait_until, write_random

if not pyftpdlib_available():
    pytest.fail("pyftpdlib is not installed (python3 -m pip install pyftpdlib)", pytrace=False)


@pytest.fixture(scope="module")
def pyftpd(tmp_path_factory):
    base = tmp_path_factory.mktemp("pyftpd")
    s = start_pyftpd(base / "home", base / "pyftpd.log")
    yield s
    s.stop()


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_round_trip_checks_sizes_without_a_digest(pyftpd, home, tmp_path, uniq):
    src = tmp_path / "a.bin"
    digest = write_random(src, 123_456)
    p = ok(run_client(home, "put", str(src), pyftpd.url(f"{uniq}/")))
    assert "size checked (the server offers no digest)" in p.stdout, p.stdout
    assert sha256_file(pyftpd.home / uniq / "a.bin") == digest
    p = ok(run_client(home, "get", pyftpd.url(f"{uniq}/a.bin"), str(tmp_path / "b.bin")))
    assert "size checked" in p.stdout
    assert sha256_file(tmp_path / "b.bin") == digest


def test_tree_round_trip_with_utf8_names(pyftpd, home, tmp_path, uniq):
    tree = tmp_path / "Verzeichnis"
    (tree / "日本語" / "sub dir").mkdir(parents=True)
    write_random(tree / "日本語" / "sub dir" / "ファイル.bin", 50_000)
    (tree / "été.txt").write_text("été\n")
    (tree / "empty.txt").write_bytes(b"")
    ok(run_client(home, "put", "-r", str(tree), pyftpd.url(f"{uniq}/")))
    assert tree_digest(pyftpd.home / uniq / "Verzeichnis") == tree_digest(tree)
    out = tmp_path / "out"
    ok(run_client(home, "get", "-r", pyftpd.url(f"{uniq}/Verzeichnis"), str(out)))
    assert tree_digest(out) == tree_digest(tree)


@pytest.mark.timeout(300)
def test_100_mib_round_trip(pyftpd, home, tmp_path, uniq):
    src = tmp_path / "big.bin"
    digest = write_random(src, 100 << 20)
    ok(run_client(home, "put", str(src), pyftpd.url(f"{uniq}/big.bin"), timeout=240))
    ok(run_client(home, "get", pyftpd.url(f"{uniq}/big.bin"), str(tmp_path / "big2.bin"), timeout=240))
    assert sha256_file(tmp_path / "big2.bin") == digest


@pytest.fixture
def slow(tmp_path):
    """A pyftpdlib throttled to 2 MiB/s per transfer."""
    s = start_pyftpd(tmp_path / "slowhome", tmp_path / "slow.log", rate=2 << 20)
    yield s
    s.stop()


def test_resume_after_killed_download_and_upload(slow, home, tmp_path):
    (slow.home / "d").mkdir()
    digest = write_random(slow.home / "d" / "f.bin", 6 << 20)
    dest = tmp_path / "f.bin"
    proc = popen_client(home, "get", "-q", slow.url("d/f.bin"), str(dest))
    kill_when(proc, lambda: dest.exists() and dest.stat().st_size >= (1 << 20), 30, "1 MiB downloaded")
    assert dest.stat().st_size < (6 << 20)
    p = ok(run_client(home, "get", "-c", slow.url("d/f.bin"), str(dest)))
    assert "resumed at" in p.stdout, p.stdout
    assert "cannot hash byte ranges" in p.stderr, p.stderr
    assert sha256_file(dest) == digest

    src = tmp_path / "u.bin"
    digest = write_random(src, 6 << 20)
    target = slow.home / "d" / "u.bin"
    proc = popen_client(home, "put", "-q", str(src), slow.url("d/u.bin"))
    kill_when(proc, lambda: target.exists() and target.stat().st_size >= (1 << 20), 30, "1 MiB uploaded")

    def settled():  # pyftpdlib writes what it has received, then closes the file
        a = target.stat().st_size
        import time
        time.sleep(0.3)
        return a == target.stat().st_size

    wait_until(settled, 10, what="the server's partial to stop growing")
    assert target.stat().st_size < (6 << 20)
    p = ok(run_client(home, "put", "-c", str(src), slow.url("d/u.bin")))
    assert "resumed at" in p.stdout, p.stdout
    assert sha256_file(target) == digest


def test_netrc_and_small_commands(pyftpd, home, tmp_path, uniq):
    netrc = home / ".netrc"
    netrc.write_text(f"default login {pyftpd.user} password {pyftpd.password}\n")
    netrc.chmod(0o600)
    base = f"ftp://127.0.0.1:{pyftpd.port}/{uniq}"
    ok(run_client(home, "mkdir", "-p", f"{base}/x/y"))
    assert (pyftpd.home / uniq / "x" / "y").is_dir()
    src = tmp_path / "s.txt"
    src.write_text("small\n")
    ok(run_client(home, "put", str(src), f"{base}/x/"))
    p = ok(run_client(home, "ls", f"{base}/x"))
    assert any(l.endswith(" s.txt") for l in p.stdout.splitlines()), p.stdout
    assert any(l.startswith("d ") and l.endswith(" y/") for l in p.stdout.splitlines()), p.stdout
    ok(run_client(home, "mv", f"{base}/x/s.txt", "t.txt"))
    assert (pyftpd.home / uniq / "x" / "t.txt").exists()
    ok(run_client(home, "rm", f"{base}/x/t.txt"))
    ok(run_client(home, "rmdir", f"{base}/x/y"))
    assert sorted(os.listdir(pyftpd.home / uniq / "x")) == []
    one_line_error(run_client(home, "get", f"{base}/nope.bin", str(tmp_path / "nope.bin")), EXIT_REFUSED)
    assert not (tmp_path / "nope.bin").exists()
