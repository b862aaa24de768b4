"""The home is the user's `/`: `..`, absolute paths, symlinks planted inside the home that
point outside it, NUL bytes and huge paths must not read, list or write anything outside,
and the session survives each attempt."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from ferry_e2e import Ctrl

pytestmark = pytest.mark.timeout(90)

SECRET = b"TOP-SECRET-OUTSIDE-THE-HOME\n"


def snapshot(root: Path) -> dict:
    """Everything about a tree that a write could change."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture(scope="module")
def jail(make_ferry, tmp_path_factory):
    f = make_ferry("jail")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "outside-secret.txt").write_bytes(SECRET)
    (outside / "subdir").mkdir()
    u = f.add_user("jailed")
    home = u.home
    (home / "inside.txt").write_bytes(b"inside\n")
    (home / "etc_link").symlink_to("/etc")
    (home / "passwd_link").symlink_to("/etc/passwd")
    (home / "out_dir").symlink_to(outside)
    (home / "out_file").symlink_to(outside / "outside-secret.txt")
    (home / "rel_up").symlink_to("../../..")
    s = f.serve("limits.failed_login_delay_ms=50")
    yield SimpleNamespace(server=s, user=u, home=home, outside=outside)
    s.stop()


@pytest.fixture
def c(jail):
    conn = jail.server.ctrl(jail.user)
    conn.expect("TYPE I", 200)
    before = snapshot(jail.outside)
    yield conn
    try:
        conn.expect("NOOP", 200)  # the session survives every attempt
    finally:
        conn.close()
    assert snapshot(jail.outside) == before, "something outside the home was modified"


def assert_no_leak(data: bytes):
    assert SECRET not in data and b"root:" not in data and b"outside-secret" not in data, data[:300]


def transfer(c: Ctrl, cmd: str, payload: bytes | None = None) -> tuple[int, bytes]:
    """PASV + cmd; returns (final code, data received). For uploads, sends `payload`."""
    data = c.pasv()
    r = c.cmd(cmd)
    got = b""
    if r.code in (125, 150):
        if payload is not None:
            try:
                data.sendall(payload)
            except OSError:
                pass
            data.close()
        else:
            data.settimeout(10)
            try:
                while True:
                    d = data.recv(65536)
                    if not d:
                        break
                    got += d
            except (OSError, TimeoutError):
                pass
            data.close()
        r = c.reply()
    else:
        data.close()
    return r.code, got


def pwd(c: Ctrl) -> str:
    r = c.expect("PWD", 257)
    return r.text.split('"')[1]


def test_cwd_dotdot_at_root_stays_at_root(c):
    for cmd in ("CWD ..", "CDUP", "CWD ../..", "CWD /..", "CWD ../../../../../..", "XCUP", "CWD /../../"):
        r = c.cmd(cmd)
        assert r.code in (200, 250, 550), (cmd, r)
        assert pwd(c) == "/", f"after {cmd!r} PWD is not /"
    final, data = c.listing("LIST")
    assert final.code == 226
    assert b"inside.txt" in data
    for real_root_entry in (b" usr", b" proc", b" boot", b" var"):
        assert real_root_entry not in data, data


@pytest.mark.parametrize("path", [
    "../../etc/passwd", "../../../../../../../../etc/passwd", "/etc/passwd", "/../etc/passwd",
    "/../../etc/passwd", "inside.txt/../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "..\\..\\etc\\passwd",
    "//etc/passwd", "./../etc/passwd",
])
def test_retr_outside_paths_is_refused(c, path):
    code, data = transfer(c, f"RETR {path}")
    assert code == 550, f"RETR {path} -> {code}"
    assert_no_leak(data)
    for cmd in ("SIZE", "MDTM", "HASH", "XSHA256", "MLST"):
        r = c.cmd(f"{cmd} {path}")
        assert r.code == 550, f"{cmd} {path} -> {r}"
        assert "root:" not in r.text


def test_absolute_path_is_relative_to_home(c):
    code, data = transfer(c, "RETR /inside.txt")
    assert code == 226 and data == b"inside\n"
    code, data = transfer(c, "LIST /etc")
    assert code == 550, f"LIST /etc -> {code}"
    assert b"passwd" not in data and b"hostname" not in data


SYMLINK_READS = [
    "RETR etc_link/passwd", "RETR passwd_link", "RETR out_file", "RETR out_dir/outside-secret.txt",
    "RETR rel_up/etc/passwd", "LIST etc_link", "LIST -la etc_link", "NLST etc_link", "MLSD etc_link",
    "LIST out_dir", "NLST out_dir", "MLSD out_dir", "LIST rel_up", "LIST etc_link/",
]


@pytest.mark.parametrize("cmd", SYMLINK_READS)
def test_reads_through_symlink_to_outside_fail(c, cmd):
    code, data = transfer(c, cmd)
    assert code == 550, f"{cmd} -> {code} ({data[:200]!r})"
    assert_no_leak(data)
    assert b"hostname" not in data and b"subdir" not in data


@pytest.mark.parametrize("cmd", [
    "CWD etc_link", "CWD out_dir", "CWD rel_up", "CWD out_dir/subdir", "SIZE passwd_link", "SIZE out_file",
    "HASH passwd_link", "HASH out_file", "XMD5 out_file", "XSHA256 etc_link/passwd", "MD5 out_file",
    "MDTM out_file", "MLST out_dir", "MLST out_dir/outside-secret.txt", "STAT out_dir", "STAT etc_link",
])
def test_commands_through_symlink_to_outside_fail(c, cmd):
    r = c.cmd(cmd)
    assert r.code == 550, f"{cmd} -> {r}"
    text = r.text.replace(cmd.split(" ", 1)[1], "<path>")  # the reply may echo our own path
    assert "root:" not in text and "outside-secret" not in text and "subdir" not in text, r
    assert hashlib.sha256(SECRET).hexdigest() not in text.lower()
    assert hashlib.md5(SECRET).hexdigest() not in text.lower()
    assert pwd(c) == "/"


@pytest.mark.parametrize("cmd", ["STOR out_dir/new.txt", "STOR out_file", "APPE out_file",
                                 "STOR etc_link/ferry-test-should-not-exist", "STOR out_dir/subdir/x.txt",
                                 "STOR rel_up/x.txt", "APPE out_dir/outside-secret.txt"])
def test_writes_through_symlink_to_outside_fail(jail, c, cmd):
    code, _ = transfer(c, cmd, payload=b"PWNED" * 100)
    assert code == 550, f"{cmd} -> {code}"
    assert (jail.outside / "outside-secret.txt").read_bytes() == SECRET
    assert not Path("/etc/ferry-test-should-not-exist").exists()


@pytest.mark.parametrize("cmds", [
    ["MKD out_dir/newdir"], ["MKD etc_link/newdir"], ["RMD out_dir/subdir"],
    ["DELE out_dir/outside-secret.txt"], ["MFMT 20000101000000 out_file"],
    ["MFMT 20000101000000 out_dir/outside-secret.txt"],
    ["RNFR out_dir/outside-secret.txt", "RNTO stolen.txt"], ["RNFR inside.txt", "RNTO out_dir/moved.txt"],
])
def test_modifications_through_symlink_to_outside_fail(jail, c, cmds):
    for i, cmd in enumerate(cmds):
        r = c.cmd(cmd)
        if i == len(cmds) - 1:
            assert r.code == 550, f"{cmd} -> {r}"
        elif r.code == 550:
            break
    assert (jail.outside / "outside-secret.txt").read_bytes() == SECRET
    assert (jail.home / "inside.txt").read_bytes() == b"inside\n"
    assert not (jail.home / "stolen.txt").exists()


@pytest.mark.parametrize("cmd", [
    b"RETR inside\x00.txt", b"RETR \x00", b"CWD \x00/etc", b"MKD a\x00b", b"SIZE inside.txt\x00",
    b"DELE inside.txt\x00../x", b"HASH inside.txt\x00", b"LIST \x00",
])
def test_nul_bytes_in_paths_are_rejected(jail, c, cmd):
    if cmd.startswith((b"RETR", b"LIST")):
        data = c.pasv()
        c.send(cmd)
        r = c.reply()
        if r.code in (125, 150):
            leaked = b""
            data.settimeout(5)
            try:
                while (d := data.recv(65536)):
                    leaked += d
            except OSError:
                pass
            r2 = c.reply()
            raise AssertionError(f"{cmd!r} was accepted: {r}, {r2}, data {leaked[:100]!r}")
        data.close()
    else:
        r = c.cmd(cmd)
    assert r.code in (501, 550, 553), f"{cmd!r} -> {r}"
    assert (jail.home / "inside.txt").read_bytes() == b"inside\n"
    assert not (jail.home / "a").exists()
    assert pwd(c) == "/"


def test_nul_byte_in_stor_path_writes_nothing(jail, c):
    before = sorted(os.listdir(jail.home))
    data = c.pasv()
    c.send(b"STOR evil\x00name.txt")
    r = c.reply()
    if r.code in (125, 150):
        data.sendall(b"x")
        data.close()
        r2 = c.reply()
        raise AssertionError(f"STOR with NUL accepted: {r}, {r2}")
    data.close()
    assert r.code in (501, 550, 553), r
    assert sorted(os.listdir(jail.home)) == before


def test_4k_path_is_refused_and_session_survives(jail, c):
    deep = "a/" * 1995 + "x"  # ~4 KiB, the line still fits in 4096 bytes
    assert len(f"RETR {deep}\r\n") <= 4096
    for verb in ("RETR", "SIZE", "CWD", "MKD", "DELE", "HASH"):
        r = c.cmd(f"{verb} {deep}")
        assert r.code in (501, 550, 553), f"{verb} <4 KiB path> -> {r}"
    long_name = "n" * 300  # > NAME_MAX
    for verb in ("MKD", "SIZE", "CWD"):
        r = c.cmd(f"{verb} {long_name}")
        assert r.code in (501, 550, 553), f"{verb} <300-char name> -> {r}"
    dotdots = "../" * 1300 + "etc/passwd"
    r = c.cmd(f"SIZE {dotdots}")
    assert r.code in (501, 550, 553), r
    assert not (jail.home / "a").exists()
    too_long = "b/" * 2100  # the whole line is > 4096 bytes: 500, session goes on
    r = c.cmd(f"MKD {too_long}")
    assert r.code == 500, f"line > 4096 bytes -> {r}"
    assert not (jail.home / "b").exists()


def test_listing_of_home_does_not_follow_symlinks_outside(c):
    for cmd in ("LIST -la", "MLSD", "NLST", "STAT ."):
        if cmd.startswith("STAT"):
            r = c.cmd(cmd)
            data = r.text.encode()
            assert r.code in (211, 212, 213), (cmd, r)
        else:
            final, data = c.listing(cmd)
            assert final.code == 226, (cmd, final)
        # the links themselves live in the home and may be listed; what they point to must not be
        assert SECRET not in data and b"root:" not in data
        for outside_only in (b"hostname", b"subdir", b"shadow", b"fstab"):
            assert outside_only not in data, (cmd, data)
