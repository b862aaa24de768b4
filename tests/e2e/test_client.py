"""The `ferry` client against the Ferry server: round trips (files, trees, UTF-8 names,
100 MiB), resume after a killed transfer both ways, a corrupted partial caught by RANG+HASH,
a tampered server file caught by the post-transfer check, .netrc and FERRY_PASSWORD, and the
small commands (ls, mkdir, mv, rm, rmdir, hash, quota).

The server's own certificate is passed with --ca-file (trust on first use has its own tests),
so every run here is FTPS with data connections that resume the control session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client_e2e import (EXIT_VERIFY, ok, one_line_error, popen_client, run_client, url,
                        wait_size)
from ferry_e2e import kill_when, sha256_file, tree_digest, wait_until, write_random


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def ferry(srv, home):
    """Runs `ferry ARGS… --ca-file <server cert>` with a private HOME; `u(path)` is alice's URL."""
    ca = ["--ca-file", str(srv.ferry.tls_cert)]

    def run(*args, **kw):
        return run_client(home, *args, *ca, **kw)

    def popen(*args, **kw):
        return popen_client(home, *args, *ca, **kw)

    def u(path: str = "", scheme: str = "ftp", password: bool = True) -> str:
        return url(scheme, srv.server.port, "alice", srv.alice.password if password else None, path)

    run.popen = popen
    run.u = u
    run.home = home
    return run


def test_put_then_get_round_trip_is_verified_with_sha256(ferry, srv, tmp_path, uniq):
    src = tmp_path / "report.bin"
    digest = write_random(src, 300_000)
    p = ok(ferry("put", str(src), ferry.u(f"{uniq}/")))
    assert f"put {uniq}/report.bin: 293.0 KiB in " in p.stdout
    assert "SHA-256 verified" in p.stdout, p.stdout
    assert sha256_file(srv.alice.home / uniq / "report.bin") == digest

    dest = tmp_path / "back.bin"
    p = ok(ferry("get", ferry.u(f"{uniq}/report.bin"), str(dest)))
    assert "SHA-256 verified" in p.stdout and "/s)" in p.stdout, p.stdout
    assert sha256_file(dest) == digest


def test_several_sources_into_a_directory(ferry, srv, tmp_path, uniq):
    files = []
    for i in range(3):
        f = tmp_path / f"f{i}.txt"
        f.write_text(f"file {i}\n")
        files.append(str(f))
    ok(ferry("put", *files, ferry.u(f"{uniq}/many")))  # several sources: a directory, created
    assert sorted(os.listdir(srv.alice.home / uniq / "many")) == ["f0.txt", "f1.txt", "f2.txt"]
    out = tmp_path / "out"
    ok(ferry("get", ferry.u(f"{uniq}/many/f0.txt"), ferry.u(f"{uniq}/many/f2.txt"), str(out)))
    assert sorted(os.listdir(out)) == ["f0.txt", "f2.txt"]
    assert (out / "f2.txt").read_text() == "file 2\n"


def test_tree_round_trip_with_utf8_names(ferry, srv, tmp_path, uniq):
    tree = tmp_path / "Bäume"
    (tree / "Ünïcödé dir" / "日本").mkdir(parents=True)
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "empty dir").mkdir()
    write_random(tree / "Ünïcödé dir" / "日本" / "ファイル.bin", 70_000)
    write_random(tree / "a" / "b" / "c" / "deep.bin", 1_500_000)
    (tree / "a" / "zero.txt").write_bytes(b"")
    (tree / "sp ace & 'quote'.txt").write_text("x" * 10)
    for i in range(8):  # more data connections than a TLS 1.3 control handshake has tickets
        (tree / "a" / f"n{i}.txt").write_text(str(i))
    ok(ferry("put", "-r", str(tree), ferry.u(f"{uniq}/")))
    assert tree_digest(srv.alice.home / uniq / "Bäume") == tree_digest(tree)

    out = tmp_path / "out"
    out.mkdir()
    p = ok(ferry("get", "-r", ferry.u(f"{uniq}/Bäume"), str(out)))
    assert p.stdout.count("SHA-256 verified") == 12, p.stdout
    assert tree_digest(out / "Bäume") == tree_digest(tree)


@pytest.mark.timeout(300)
def test_100_mib_round_trip(ferry, srv, tmp_path, uniq):
    src = tmp_path / "big.bin"
    digest = write_random(src, 100 << 20)
    p = ok(ferry("put", str(src), ferry.u(f"{uniq}/big.bin"), timeout=240))
    assert "100.0 MiB in" in p.stdout and "SHA-256 verified" in p.stdout, p.stdout
    dest = tmp_path / "big.back"
    p = ok(ferry("get", ferry.u(f"{uniq}/big.bin"), str(dest), timeout=240))
    assert "SHA-256 verified" in p.stdout
    assert sha256_file(dest) == digest


@pytest.mark.timeout(300)
def test_get_resumes_after_a_killed_download(ferry, srv, tmp_path, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    digest = write_random(d / "movie.bin", 400 << 20)
    dest = tmp_path / "movie.bin"
    proc = ferry.popen("get", "-q", ferry.u(f"{uniq}/movie.bin"), str(dest))
    kill_when(proc, lambda: dest.exists() and dest.stat().st_size >= (8 << 20), 120,
              "8 MiB downloaded")
    partial = dest.stat().st_size
    assert 0 < partial < (400 << 20)
    p = ok(ferry("get", "-c", ferry.u(f"{uniq}/movie.bin"), str(dest), timeout=240))
    assert "resumed at" in p.stdout and "SHA-256 verified" in p.stdout, p.stdout
    assert sha256_file(dest) == digest


@pytest.mark.timeout(300)
def test_put_resumes_after_a_killed_upload(ferry, srv, tmp_path, uniq):
    src = tmp_path / "upload.bin"
    digest = write_random(src, 400 << 20)
    (srv.alice.home / uniq).mkdir()
    proc = ferry.popen("put", "-q", str(src), ferry.u(f"{uniq}/upload.bin"))

    def grown():
        for dirpath, _dirs, files in os.walk(srv.alice.home / uniq):
            for f in files:
                try:
                    if os.stat(os.path.join(dirpath, f)).st_size >= (8 << 20):
                        return True
                except FileNotFoundError:
                    pass
        return False

    kill_when(proc, grown, 120, "8 MiB uploaded")
    # the server keeps a new file's partial under its name, for the client to resume
    target = srv.alice.home / uniq / "upload.bin"
    wait_until(target.exists, 20, what="the partial upload kept as upload.bin")
    partial = target.stat().st_size
    assert 0 < partial < (400 << 20)
    p = ok(ferry("put", "-c", str(src), ferry.u(f"{uniq}/upload.bin"), timeout=240))
    assert "resumed at" in p.stdout and "SHA-256 verified" in p.stdout, p.stdout
    assert sha256_file(target) == digest


def test_corrupted_local_partial_is_detected_and_downloaded_again(ferry, srv, tmp_path, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    digest = write_random(d / "data.bin", 2 << 20)
    data = (d / "data.bin").read_bytes()
    dest = tmp_path / "data.bin"
    bad = bytearray(data[: 1 << 20])
    bad[12345] ^= 0xFF
    dest.write_bytes(bytes(bad))
    p = ok(ferry("get", "-c", ferry.u(f"{uniq}/data.bin"), str(dest)))
    assert "do not match the server's first bytes (RANG+HASH)" in p.stderr, p.stderr
    assert "downloading from the start" in p.stderr
    assert "resumed" not in p.stdout
    assert sha256_file(dest) == digest

    # a good partial is resumed
    dest.write_bytes(data[: 1 << 20])
    p = ok(ferry("get", "-c", ferry.u(f"{uniq}/data.bin"), str(dest)))
    assert "resumed at 1.0 MiB" in p.stdout, p.stdout
    assert sha256_file(dest) == digest


def test_corrupted_server_partial_is_detected_and_uploaded_again(ferry, srv, tmp_path, uniq):
    src = tmp_path / "up.bin"
    digest = write_random(src, 2 << 20)
    d = srv.alice.home / uniq
    d.mkdir()
    bad = bytearray(src.read_bytes()[: 1 << 20])
    bad[777] ^= 0x01
    (d / "up.bin").write_bytes(bytes(bad))
    p = ok(ferry("put", "-c", str(src), ferry.u(f"{uniq}/up.bin")))
    assert "do not match the start of" in p.stderr and "uploading from the start" in p.stderr, p.stderr
    assert sha256_file(d / "up.bin") == digest


def test_tampered_server_file_fails_the_check_with_exit_6(ferry, srv, tmp_path, uniq):
    src = tmp_path / "orig.bin"
    write_random(src, 1 << 20)
    ok(ferry("put", str(src), ferry.u(f"{uniq}/orig.bin")))
    stored = srv.alice.home / uniq / "orig.bin"
    st = stored.stat()
    with open(stored, "r+b") as f:  # bit rot: same size, same mtime, other bytes
        f.seek(4096)
        f.write(b"\x00TAMPERED\x00")
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    dest = tmp_path / "copy.bin"
    p = ferry("get", ferry.u(f"{uniq}/orig.bin"), str(dest))
    line = one_line_error(p, EXIT_VERIFY)
    assert "SHA-256 mismatch" in line and "orig.bin" in line, line
    assert str(dest) in line  # the user is told where the bad copy is

    # --no-verify skips the check and says so
    p = ok(ferry("get", "--no-verify", ferry.u(f"{uniq}/orig.bin"), str(dest)))
    assert "not verified (--no-verify)" in p.stdout


def test_netrc_supplies_login_and_password(ferry, srv, tmp_path, uniq):
    (srv.alice.home / uniq).mkdir()
    (srv.alice.home / uniq / "n.txt").write_text("netrc\n")
    netrc = ferry.home / ".netrc"
    netrc.write_text(f"machine example.org login nobody password nothing\n"
                     f"machine 127.0.0.1\n  login alice\n  password {srv.alice.password}\n")
    netrc.chmod(0o600)
    p = ok(ferry("ls", url("ftp", srv.server.port, path=uniq)))  # no user in the URL
    assert "n.txt" in p.stdout
    p = ok(ferry("ls", url("ftp", srv.server.port, "alice", path=uniq)))  # user given, password from .netrc
    assert "n.txt" in p.stdout


def test_password_from_the_environment(ferry, srv, uniq):
    (srv.alice.home / uniq).mkdir()
    p = ok(ferry("mkdir", url("ftp", srv.server.port, "alice", path=f"{uniq}/env"),
                 env={"FERRY_PASSWORD": srv.alice.password}))
    assert (srv.alice.home / uniq / "env").is_dir()


def test_small_commands(ferry, srv, tmp_path, uniq):
    u = ferry.u
    ok(ferry("mkdir", "-p", u(f"{uniq}/a/b/c")))
    assert (srv.alice.home / uniq / "a" / "b" / "c").is_dir()
    src = tmp_path / "x.txt"
    src.write_text("hello\n")
    ok(ferry("put", "-q", str(src), u(f"{uniq}/a/x.txt")))
    p = ok(ferry("ls", u(f"{uniq}/a")))
    lines = p.stdout.splitlines()
    assert any(l.startswith("d ") and l.endswith(" b/") for l in lines), lines
    assert any(l.startswith("- ") and "6 B" in l and l.endswith(" x.txt") for l in lines), lines

    p = ok(ferry("hash", u(f"{uniq}/a/x.txt")))
    assert p.stdout.split() == ["SHA-256", sha256_file(src), f"{uniq}/a/x.txt"]

    ok(ferry("mv", u(f"{uniq}/a/x.txt"), "renamed.txt"))  # relative to the source's directory
    assert (srv.alice.home / uniq / "a" / "renamed.txt").read_text() == "hello\n"
    ok(ferry("mv", u(f"{uniq}/a/renamed.txt"), u(f"{uniq}/moved.txt")))
    assert (srv.alice.home / uniq / "moved.txt").exists()

    ok(ferry("rm", u(f"{uniq}/moved.txt")))
    assert not (srv.alice.home / uniq / "moved.txt").exists()
    ok(ferry("rmdir", u(f"{uniq}/a/b/c")))
    assert not (srv.alice.home / uniq / "a" / "b" / "c").exists()

    p = ok(ferry("quota", u()))
    assert p.stdout.startswith("used ") and "quota none" in p.stdout and "free " in p.stdout, p.stdout


def test_quiet_prints_nothing_and_plain_progress_lines_otherwise(ferry, srv, tmp_path, uniq):
    src = tmp_path / "q.bin"
    write_random(src, 10_000)
    p = ok(ferry("put", "-q", str(src), ferry.u(f"{uniq}/q.bin")))
    assert p.stdout == "" and p.stderr == ""
    p = ok(ferry("get", "-q", ferry.u(f"{uniq}/q.bin"), str(tmp_path / "q2.bin")))
    assert p.stdout == "" and p.stderr == ""
    assert wait_size(tmp_path / "q2.bin", 10_000, 1) == 10_000
