"""`ferry user ...` commands, alone and while the server runs."""

from __future__ import annotations

import json
import os
import time

import pytest

from ferry_e2e import Ctrl, wait_until

pytestmark = pytest.mark.timeout(90)

MiB = 1 << 20


def test_user_add_creates_home_and_list_json_has_all_fields(make_ferry):
    f = make_ferry("cli")
    f.add_user("carol", None, "--quota", "10MiB", "--quota-files", "7")
    f.add_user("dave", None, "--read-only")
    home = f.data_dir / "homes" / "carol"
    assert home.is_dir()
    users = {u["name"]: u for u in f.list_users()}
    assert set(users) >= {"carol", "dave"}
    c = users["carol"]
    for key in ("name", "used_bytes", "used_files", "reserved_bytes", "quota_bytes", "quota_files", "home",
                "read_only", "enabled"):
        assert key in c, f"`user list --json` lacks {key}: {c}"
    assert c["used_bytes"] == 0 and c["used_files"] == 0 and c["reserved_bytes"] == 0
    assert c["quota_bytes"] == 10 * MiB and c["quota_files"] == 7
    assert os.path.realpath(c["home"]) == os.path.realpath(home)
    assert c["read_only"] is False and c["enabled"] is True
    d = users["dave"]
    assert d["read_only"] is True and d["quota_bytes"] is None


def test_user_list_without_json_is_a_table(make_ferry):
    f = make_ferry("cli")
    f.add_user("erin", None, "--quota", "1MiB")
    p = f.user_cmd("list")
    assert "erin" in p.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(p.stdout)


@pytest.mark.parametrize("size,expected", [
    ("1024", {1024}), ("10MiB", {10 * MiB}), ("5G", {5 * 10**9, 5 * 2**30}), ("500KB", {500_000, 512_000}),
    ("1KiB", {1024}), ("2GiB", {2 * 2**30}), ("0", {0}),
])
def test_quota_sizes_are_parsed(make_ferry, size, expected):
    f = make_ferry("cli")
    f.add_user("u", None, "--quota", size)
    assert f.user_info("u")["quota_bytes"] in expected
    f.user_cmd("quota", "u", "none")
    assert f.user_info("u")["quota_bytes"] is None
    f.user_cmd("quota", "u", size)
    assert f.user_info("u")["quota_bytes"] in expected


@pytest.mark.parametrize("bad", ["ten", "10XB", "-5", "", "1.5.5MiB", "MiB", "99999999999999999999999"])
def test_bad_size_exits_2_with_one_line_error(make_ferry, bad):
    f = make_ferry("cli")
    f.add_user("u")
    p = f.user_cmd("quota", "u", bad, check=False)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected a one-line error, got {p.stderr!r}"
    p = f.user_cmd("add", "v", "--password-stdin", "--quota", bad, input="pw\n", check=False)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "v" not in {u["name"] for u in f.list_users()}


def test_duplicate_user_add_fails(make_ferry):
    f = make_ferry("cli")
    f.add_user("u")
    p = f.user_cmd("add", "u", "--password-stdin", input="other\n", check=False)
    assert p.returncode != 0
    assert p.stderr.strip()


def test_user_del_removes_user_and_home_unless_keep_files(make_ferry):
    f = make_ferry("cli")
    a = f.add_user("a")
    b = f.add_user("b")
    (a.home / "x").write_bytes(b"1")
    (b.home / "y").write_bytes(b"2")
    f.user_cmd("del", "a")
    f.user_cmd("del", "b", "--keep-files")
    names = {u["name"] for u in f.list_users()}
    assert "a" not in names and "b" not in names
    assert not a.home.exists()
    assert (b.home / "y").read_bytes() == b"2"
    p = f.user_cmd("del", "nobody", check=False)
    assert p.returncode != 0


def test_custom_home(make_ferry, tmp_path):
    f = make_ferry("cli")
    home = tmp_path / "elsewhere"
    u = f.add_user("h", None, home=home)
    assert home.is_dir()
    (home / "marker.txt").write_bytes(b"m")
    assert os.path.realpath(f.user_info("h")["home"]) == os.path.realpath(home)
    s = f.serve("limits.failed_login_delay_ms=50")
    try:
        ftp = s.ftp(u)
        assert ftp.nlst() == ["marker.txt"]
        ftp.quit()
    finally:
        s.stop()


def _login_code(s, name, password) -> int:
    c = s.ctrl()
    try:
        r = c.cmd(f"USER {name}")
        if r.code != 331:
            return r.code
        return c.cmd(f"PASS {password}").code
    finally:
        c.close()


def test_user_commands_work_while_server_runs(make_ferry):
    f = make_ferry("cli-live")
    alice = f.add_user("alice", "old-password")
    s = f.serve("limits.failed_login_delay_ms=50")
    try:
        assert _login_code(s, "alice", "old-password") == 230  # now possibly cached
        f.user_cmd("passwd", "alice", "--password-stdin", input="new-password\n")
        assert _login_code(s, "alice", "new-password") == 230
        assert _login_code(s, "alice", "old-password") == 530, "old password still accepted after passwd"
        # a user added while serving can log in
        f.add_user("bob", "bob-pw")
        assert _login_code(s, "bob", "bob-pw") == 230
        # a deleted user can no longer log in, even right after a successful login
        f.user_cmd("del", "bob")
        assert _login_code(s, "bob", "bob-pw") == 530
        # the quota change is visible in the listing
        f.user_cmd("quota", "alice", "3MiB")
        assert f.user_info("alice")["quota_bytes"] == 3 * MiB
        assert s.running()
    finally:
        s.stop()


def test_user_cli_works_during_heavy_uploads(make_ferry):
    """`ferry user ...` shares the SQLite database with a busy server: no 'database is locked'."""
    import threading

    from ferry_e2e import disk_usage_bytes, ftp_stor

    f = make_ferry("cli-busy")
    users = [f.add_user(f"w{i}", None, "--quota", "100MiB") for i in range(4)]
    s = f.serve("limits.failed_login_delay_ms=50")
    stop = threading.Event()
    errors: list[str] = []

    def uploader(u):
        try:
            ftp = s.ftp(u)
            i = 0
            while not stop.is_set() and i < 400:
                ftp_stor(ftp, f"f{i}.bin", os.urandom(1000 + i))
                i += 1
            ftp.quit()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{u.name}: {e!r}")

    threads = [threading.Thread(target=uploader, args=(u,), daemon=True) for u in users]
    for t in threads:
        t.start()
    try:
        for k in range(15):
            p = f.user_cmd("list", "--json", check=False)
            assert p.returncode == 0, f"`user list` during uploads failed: {p.stderr}"
            json.loads(p.stdout)
            p = f.user_cmd("quota", "w0", f"{100 + k}MiB", check=False)
            assert p.returncode == 0, f"`user quota` during uploads failed: {p.stderr}"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    time.sleep(0.5)
    for u in users:
        info = f.user_info(u.name)
        assert info["reserved_bytes"] == 0, info
        assert info["used_bytes"] == disk_usage_bytes(u.home), info
        assert info["used_files"] == len(os.listdir(u.home)), info
    s.stop()
