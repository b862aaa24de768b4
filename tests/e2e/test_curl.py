"""curl against ferry: list, upload, download (byte for byte, 0 bytes to 100 MiB, UTF-8
names with spaces), and quote commands (SIZE, HASH)."""

from __future__ import annotations

import os
import re

import pytest

from ferry_e2e import curl, curl_replies, sha256_file, write_random

pytestmark = pytest.mark.timeout(120)


def cred(u) -> list[str]:
    return ["-u", f"{u.name}:{u.password}"]


@pytest.fixture
def wd(srv, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    return d


def test_curl_lists_directory(srv, wd, uniq):
    (wd / "a.txt").write_bytes(b"a" * 10)
    (wd / "b c.bin").write_bytes(b"b" * 20)
    (wd / "sub").mkdir()
    p = curl(*cred(srv.alice), srv.server.url(uniq + "/"))
    out = p.stdout.decode()
    lines = out.splitlines()  # curl converts the ASCII listing's CRLF for us
    assert len(lines) == 3, lines
    assert any(l.startswith("-") and l.endswith(" a.txt") and " 10 " in l for l in lines), lines
    assert any(l.startswith("-") and l.endswith(" b c.bin") and " 20 " in l for l in lines), lines
    assert any(l.startswith("d") and l.endswith(" sub") for l in lines), lines
    p = curl(*cred(srv.alice), "-l", srv.server.url(uniq + "/"))
    names = sorted(p.stdout.decode().splitlines())
    assert names == ["a.txt", "b c.bin", "sub"], names


def test_curl_lists_root_of_home(srv, wd, uniq):
    p = curl(*cred(srv.alice), "-l", srv.server.url("/"))
    assert uniq in p.stdout.decode().splitlines()


@pytest.mark.parametrize("size", [0, 1, 1_000_003], ids=["empty", "1B", "1MB-odd"])
def test_curl_upload_then_download_is_byte_identical(srv, wd, uniq, tmp_path, size):
    src = tmp_path / "src"
    digest = write_random(src, size)
    url = srv.server.url(f"{uniq}/file.bin")
    curl(*cred(srv.alice), "-T", str(src), url)
    assert (wd / "file.bin").stat().st_size == size
    assert sha256_file(wd / "file.bin") == digest
    out = tmp_path / "out"
    p = curl(*cred(srv.alice), "-o", str(out), "-w", "%{size_download}", url)
    assert int(p.stdout) == size
    if size == 0 and not out.exists():
        out.write_bytes(b"")  # curl does not create the file for an empty download
    assert sha256_file(out) == digest


@pytest.mark.timeout(300)
def test_curl_100mib_upload_and_download_are_byte_identical(srv, wd, uniq, tmp_path):
    size = 100 << 20
    src = tmp_path / "big"
    digest = write_random(src, size)
    url = srv.server.url(f"{uniq}/big.bin")
    curl(*cred(srv.alice), "-T", str(src), url, timeout=240)
    assert (wd / "big.bin").stat().st_size == size
    assert sha256_file(wd / "big.bin") == digest
    out = tmp_path / "big.out"
    curl(*cred(srv.alice), "-o", str(out), url, timeout=240)
    assert sha256_file(out) == digest
    os.unlink(src)
    os.unlink(out)
    # the digest was remembered during the upload: HASH agrees
    p = curl(*cred(srv.alice), "-v", "-l", "-Q", f"HASH {uniq}/big.bin", srv.server.url(uniq + "/"))
    assert any(r.startswith(f"213 SHA-256 0-{size - 1} {digest}") for r in curl_replies(p.stderr)), \
        curl_replies(p.stderr)


def test_curl_utf8_name_with_spaces(srv, wd, uniq, tmp_path):
    name = "naïve file ✓.txt"
    src = tmp_path / "src"
    digest = write_random(src, 123_457)
    url = srv.server.url(f"{uniq}/{name}")
    curl(*cred(srv.alice), "-T", str(src), url)
    assert os.listdir(wd) == [name]
    assert sha256_file(wd / name) == digest
    p = curl(*cred(srv.alice), "-l", srv.server.url(uniq + "/"))
    assert p.stdout.decode("utf-8").splitlines() == [name]
    out = tmp_path / "out"
    curl(*cred(srv.alice), "-o", str(out), url)
    assert sha256_file(out) == digest


def test_curl_creates_missing_directories_on_upload(srv, wd, uniq, tmp_path):
    src = tmp_path / "src"
    digest = write_random(src, 5000)
    curl(*cred(srv.alice), "--ftp-create-dirs", "-T", str(src), srv.server.url(f"{uniq}/x/y/z.bin"))
    assert sha256_file(wd / "x" / "y" / "z.bin") == digest


def test_curl_quote_size_and_hash(srv, wd, uniq, tmp_path):
    name = "naïve file ✓.txt"
    src = tmp_path / "src"
    digest = write_random(src, 65_536)
    curl(*cred(srv.alice), "-T", str(src), srv.server.url(f"{uniq}/{name}"))
    p = curl(*cred(srv.alice), "-v", "-l", "-Q", f"SIZE {uniq}/{name}", "-Q", f"HASH {uniq}/{name}",
             "-Q", f"XSHA256 {uniq}/{name}", srv.server.url(uniq + "/"))
    replies = curl_replies(p.stderr)
    assert "213 65536" in replies, replies
    hash_lines = [r for r in replies if r.startswith("213 SHA-256 ")]
    assert hash_lines, replies
    m = re.fullmatch(r"213 SHA-256 0-65535 ([0-9a-f]{64}) (.+)", hash_lines[0])
    assert m and m.group(1) == digest and m.group(2).endswith(name), hash_lines[0]
    assert f"250 {digest}" in replies, replies


def test_curl_quote_of_failing_command_fails(srv, wd, uniq):
    p = curl(*cred(srv.alice), "-v", "-l", "-Q", f"SIZE {uniq}/missing.bin", srv.server.url(uniq + "/"),
             check=False)
    assert p.returncode != 0
    assert any(r.startswith("550") for r in curl_replies(p.stderr)), curl_replies(p.stderr)


def test_curl_wrong_password_fails_with_530(srv, wd, uniq):
    p = curl("-v", "-u", f"{srv.alice.name}:wrong", srv.server.url(uniq + "/"), check=False)
    assert p.returncode == 67, p.returncode  # CURLE_LOGIN_DENIED
    assert any(r.startswith("530") for r in curl_replies(p.stderr))


def test_curl_range_download(srv, wd, uniq, tmp_path):
    data = os.urandom(10_000)
    (wd / "r.bin").write_bytes(data)
    p = curl(*cred(srv.alice), "-r", "1000-1999", srv.server.url(f"{uniq}/r.bin"))
    assert p.stdout == data[1000:2000]


def test_curl_delete_via_quote_after_transfer(srv, wd, uniq, tmp_path):
    (wd / "gone.bin").write_bytes(b"x")
    curl(*cred(srv.alice), "-l", "-Q", "-DELE gone.bin", srv.server.url(uniq + "/"))
    assert not (wd / "gone.bin").exists()
