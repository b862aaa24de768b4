"""Python ftplib against ferry: every command of DESIGN §4 that ftplib can send
(sendcmd for the unusual ones), MLSD, REST+STOR, REST+RETR."""

from __future__ import annotations

import datetime as dt
import ftplib
import hashlib
import io
import os
import re
import socket
import time
import zlib

import pytest

from ferry_e2e import (
    ftp_retr, ftp_size, ftp_stor, ftp_try, recv_all, sha256_bytes, sha256_file, write_random,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def ftp(srv):
    f = srv.server.ftp(srv.alice)
    yield f
    try:
        f.quit()
    except Exception:
        f.close()


@pytest.fixture
def wd(srv, ftp, uniq):
    """A fresh directory in alice's home; the session's CWD is set to it."""
    ftp.mkd(uniq)
    ftp.cwd(uniq)
    return srv.alice.home / uniq


def pwd_of(reply: str) -> str:
    m = re.match(r'^257 "((?:[^"]|"")*)"', reply)
    assert m, f"PWD/MKD reply not in RFC 959 form: {reply!r}"
    return m.group(1).replace('""', '"')


# ------------------------------------------------------------------ session commands


def test_login_replies_331_then_230(srv):
    f = srv.server.ftp()
    try:
        assert f.sendcmd(f"USER {srv.alice.name}").startswith("331")
        assert f.sendcmd(f"PASS {srv.alice.password}").startswith("230")
    finally:
        f.close()


def test_noop_syst_help(ftp):
    assert ftp.sendcmd("NOOP").startswith("200")
    assert ftp.sendcmd("SYST") == "215 UNIX Type: L8"
    assert ftp.sendcmd("HELP").startswith("214")


def test_acct_is_not_implemented_502(ftp):
    assert ftp_try(ftp, "ACCT anything")[0] == 502


def test_quit_replies_221(srv):
    f = srv.server.ftp(srv.alice)
    assert f.quit().startswith("221")


def test_rein_logs_out_and_allows_new_login(srv, ftp):
    code, text = ftp_try(ftp, "REIN")
    assert code == 220, text
    assert ftp_try(ftp, "PWD")[0] == 530
    ftp.login(srv.alice.name, srv.alice.password)
    assert ftp.pwd() == "/"


def test_feat_lists_the_working_extensions(ftp):
    resp = ftp.sendcmd("FEAT")
    lines = resp.splitlines()
    assert lines[0].startswith("211-") and lines[-1].startswith("211 "), resp
    feats = [l[1:] for l in lines[1:-1] if l.startswith(" ")]
    assert len(feats) == len(lines) - 2, f"feature lines must start with one space (RFC 2389): {resp!r}"
    upper = {f.strip().upper() for f in feats}
    for needed in ["HASH SHA-256*;SHA-512;SHA-1;MD5;CRC32", "RANG STREAM", "REST STREAM", "MFMT",
                   "SIZE", "MDTM", "EPSV", "EPRT", "UTF8", "TVFS", "AVBL"]:
        assert needed.upper() in upper, f"FEAT lacks {needed!r}: {feats}"
    assert any(f.upper().startswith("MLST ") for f in upper), feats
    mlst = next(f for f in feats if f.upper().startswith("MLST "))
    for fact in ["type", "size", "modify", "perm", "unique"]:
        assert fact in mlst.lower(), f"MLST feature lacks {fact}: {mlst!r}"


def test_feat_advertises_auth_tls_only_if_it_works(srv, ftp):
    feats = ftp.sendcmd("FEAT").upper()
    c = srv.server.ctrl()
    try:
        r = c.cmd("AUTH TLS")
        if "AUTH TLS" in feats:
            assert r.code == 234, f"FEAT advertises AUTH TLS but AUTH TLS got {r}"
        else:
            assert 500 <= r.code < 600, f"AUTH TLS not advertised but got {r}"
    finally:
        c.close()


def test_opts_utf8_and_mlst(ftp):
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    assert ftp.sendcmd("OPTS MLST type;size;modify;").startswith("200")
    code, text = ftp_try(ftp, "OPTS NOSUCHOPTION")
    assert code == 501, text


def test_stat_without_transfer_is_211_multiline(ftp):
    r = ftp.sendcmd("STAT")
    lines = r.splitlines()
    assert lines[0].startswith("211-") and lines[-1].startswith("211 "), r


def test_stat_of_path_lists_it(ftp, wd):
    (wd / "statme.txt").write_bytes(b"x")
    r = ftp.sendcmd("STAT .")
    assert r[:3] in ("211", "212", "213"), r
    assert "statme.txt" in r, r


def test_site_quota_and_site_help(ftp):
    r = ftp.sendcmd("SITE QUOTA")
    assert r.startswith("200"), r
    assert len(r.splitlines()) > 1, f"SITE QUOTA should be multi-line: {r!r}"
    low = r.lower()
    for word in ("used", "reserved", "quota"):
        assert word in low, f"SITE QUOTA lacks {word!r}: {r!r}"
    code, text = ftp_try(ftp, "SITE HELP")
    assert code in (200, 214), text


# ------------------------------------------------------------------ directories


def test_cwd_cdup_pwd_and_x_aliases(ftp, wd, uniq):
    ftp.mkd("sub")
    assert ftp.sendcmd("CWD sub").startswith("250")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}/sub"
    assert ftp.sendcmd("CDUP")[:3] in ("200", "250")
    assert pwd_of(ftp.sendcmd("XPWD")) == f"/{uniq}"
    assert ftp.sendcmd("XCWD sub").startswith("250")
    assert ftp.sendcmd("XCUP")[:3] in ("200", "250")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}"
    assert ftp_try(ftp, "CWD no-such-dir")[0] == 550
    (wd / "plain.txt").write_bytes(b"x")
    assert ftp_try(ftp, "CWD plain.txt")[0] == 550
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}"


def test_mkd_rmd_and_x_aliases(ftp, wd, uniq):
    assert pwd_of(ftp.sendcmd("MKD d1")) == f"/{uniq}/d1"
    assert (wd / "d1").is_dir()
    assert pwd_of(ftp.sendcmd("XMKD d2")) == f"/{uniq}/d2"
    assert (wd / "d2").is_dir()
    assert ftp_try(ftp, "MKD d1")[0] == 550  # exists
    assert ftp.sendcmd("RMD d1").startswith("250")
    assert ftp.sendcmd("XRMD d2").startswith("250")
    assert not (wd / "d1").exists() and not (wd / "d2").exists()
    assert ftp_try(ftp, "RMD d1")[0] == 550


def test_rmd_of_non_empty_directory_fails(ftp, wd):
    ftp.mkd("full")
    (wd / "full" / "f").write_bytes(b"1")
    assert ftp_try(ftp, "RMD full")[0] == 550
    assert (wd / "full" / "f").exists()


def test_mkd_reply_doubles_quotes_in_path(ftp, wd, uniq):
    r = ftp.sendcmd('MKD say"hi"')
    assert r.startswith(f'257 "/{uniq}/say""hi"""'), r
    assert (wd / 'say"hi"').is_dir()
    ftp.cwd('say"hi"')
    assert ftp.sendcmd("PWD").startswith(f'257 "/{uniq}/say""hi"""')
    assert ftp.pwd() == f'/{uniq}/say"hi"'


def test_dele_rnfr_rnto(ftp, wd):
    (wd / "a.txt").write_bytes(b"aaa")
    assert ftp.sendcmd("RNFR a.txt").startswith("350")
    assert ftp.sendcmd("RNTO b.txt").startswith("250")
    assert not (wd / "a.txt").exists() and (wd / "b.txt").read_bytes() == b"aaa"
    ftp.mkd("dir")
    ftp.rename("b.txt", "dir/c.txt")
    assert (wd / "dir" / "c.txt").read_bytes() == b"aaa"
    assert ftp.sendcmd("DELE dir/c.txt").startswith("250")
    assert not (wd / "dir" / "c.txt").exists()
    assert ftp_try(ftp, "DELE dir/c.txt")[0] == 550
    assert ftp_try(ftp, "RNFR nope.txt")[0] == 550


def test_rnto_without_rnfr_is_bad_sequence(ftp, wd):
    assert ftp_try(ftp, "RNTO x.txt")[0] == 503


def test_dele_of_directory_fails(ftp, wd):
    ftp.mkd("d")
    assert ftp_try(ftp, "DELE d")[0] == 550
    assert (wd / "d").is_dir()


# ------------------------------------------------------------------ file facts


def test_size_mdtm_mfmt(ftp, wd):
    (wd / "f.bin").write_bytes(b"x" * 12345)
    assert ftp.sendcmd("SIZE f.bin") == "213 12345"
    mtime = int((wd / "f.bin").stat().st_mtime)
    r = ftp.sendcmd("MDTM f.bin")
    m = re.fullmatch(r"213 (\d{14})(\.\d+)?", r)
    assert m, r
    got = dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    assert abs(got.timestamp() - mtime) <= 1, (r, mtime)
    r = ftp.sendcmd("MFMT 20200102030405 f.bin")
    assert re.fullmatch(r"213 Modify=20200102030405; (/.*/)?f\.bin", r), r
    assert int((wd / "f.bin").stat().st_mtime) == int(
        dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc).timestamp())
    assert ftp.sendcmd("MDTM f.bin") == "213 20200102030405"
    assert ftp_try(ftp, "SIZE missing.bin")[0] == 550
    assert ftp_try(ftp, "MDTM missing.bin")[0] == 550


def test_size_of_directory_is_550(ftp, wd):
    ftp.mkd("d")
    assert ftp_try(ftp, "SIZE d")[0] == 550


def test_mlst_facts_in_utc(ftp, wd, uniq):
    (wd / "m.txt").write_bytes(b"hello")
    os.utime(wd / "m.txt", (1600000000, 1600000000))
    r = ftp.sendcmd("MLST m.txt")
    lines = r.splitlines()
    assert lines[0].startswith("250-") and lines[-1].startswith("250"), r
    entry = lines[1]
    assert entry.startswith(" "), r
    facts_s, _, name = entry[1:].partition(" ")
    facts = dict(kv.split("=", 1) for kv in facts_s.rstrip(";").split(";"))
    facts = {k.lower(): v for k, v in facts.items()}
    assert facts["type"] == "file"
    assert facts["size"] == "5"
    assert facts["modify"].startswith("20200913122640"), facts  # 1600000000 in UTC
    assert "perm" in facts and "unique" in facts
    assert name.endswith("m.txt"), name


def test_mlsd_lists_facts_and_hides_nothing_real(ftp, wd):
    (wd / "a.bin").write_bytes(b"12345678")
    (wd / "sub").mkdir()
    os.utime(wd / "a.bin", (1600000000, 1600000000))
    entries = dict(ftp.mlsd())
    names = {n for n in entries if entries[n].get("type") not in ("cdir", "pdir")}
    assert names == {"a.bin", "sub"}, entries
    a = entries["a.bin"]
    assert a["type"] == "file" and a["size"] == "8"
    assert a["modify"].startswith("20200913122640"), a
    assert entries["sub"]["type"] == "dir"
    for n in names:
        for fact in ("type", "modify", "perm", "unique"):
            assert fact in entries[n], (n, entries[n])
    assert entries["a.bin"]["unique"] != entries["sub"]["unique"]


def test_list_is_ls_l_style_and_accepts_flags_and_path(ftp, wd, uniq):
    (wd / "one.txt").write_bytes(b"1" * 42)
    (wd / "dir").mkdir()
    (wd / "dir" / "inner.txt").write_bytes(b"2")
    for cmd in ("LIST", "LIST -a", "LIST -la", "LIST -l", f"LIST /{uniq}", "LIST ."):
        lines: list[str] = []
        ftp.retrlines(cmd, lines.append)
        byname = {l.split()[-1]: l for l in lines if l.split() and l.split()[-1] not in (".", "..")}
        assert set(byname) == {"one.txt", "dir"}, (cmd, lines)
        assert re.match(r"^-[rwx-]{9}\s+\d+\s+\S+\s+\S+\s+42\s+\w{3}\s+\d{1,2}\s+[\d:]{4,5}\s+one\.txt$",
                        byname["one.txt"]), (cmd, byname["one.txt"])
        assert byname["dir"].startswith("d"), (cmd, byname["dir"])
    lines = []
    ftp.retrlines("LIST dir", lines.append)
    assert [l.split()[-1] for l in lines if l.strip()] == ["inner.txt"], lines


def test_nlst_returns_names(ftp, wd):
    for n in ("x1", "x2", "naïve file ✓.txt"):
        (wd / n).write_bytes(b"")
    assert sorted(ftp.nlst()) == sorted(["x1", "x2", "naïve file ✓.txt"])


def test_listings_end_lines_with_crlf_in_both_types(srv, wd, uniq):
    (wd / "f1").write_bytes(b"a")
    (wd / "f2").write_bytes(b"b")
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect(f"CWD /{uniq}", 250)
        for typ in ("A", "I"):
            c.expect(f"TYPE {typ}", 200)
            for cmd in ("LIST", "NLST", "MLSD"):
                final, data = c.listing(cmd)
                assert final.code == 226, (cmd, final)
                assert data.endswith(b"\r\n"), (typ, cmd, data)
                assert data.count(b"\n") == data.count(b"\r\n") >= 2, (typ, cmd, data)
    finally:
        c.close()


def test_type_a_transfers_files_unchanged(srv, wd, uniq):
    payload = b"line1\nline2\r\nline3\rend\x00\xff"
    (wd / "text.txt").write_bytes(payload)
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE A", 200)
        assert c.retr(f"/{uniq}/text.txt") == payload
        r = c.stor(f"/{uniq}/up.txt", payload)
        assert r.code == 226, r
        assert (wd / "up.txt").read_bytes() == payload
    finally:
        c.close()


def test_type_mode_stru(ftp):
    assert ftp.sendcmd("TYPE I").startswith("200")
    assert ftp.sendcmd("TYPE A").startswith("200")
    assert ftp.sendcmd("TYPE A N").startswith("200")
    assert ftp.sendcmd("TYPE L 8").startswith("200")
    assert ftp_try(ftp, "TYPE E")[0] in (501, 504)
    assert ftp.sendcmd("MODE S").startswith("200")
    assert ftp_try(ftp, "MODE B")[0] in (501, 504)
    assert ftp.sendcmd("STRU F").startswith("200")
    assert ftp_try(ftp, "STRU R")[0] in (501, 504)
    assert ftp.sendcmd("TYPE I").startswith("200")


# ------------------------------------------------------------------ transfers


def test_stor_retr_roundtrip_via_pasv(ftp, wd):
    data = os.urandom(300_001)
    ftp_stor(ftp, "r.bin", data)
    assert (wd / "r.bin").read_bytes() == data
    assert ftp_retr(ftp, "r.bin") == data


def test_transfers_via_port_active_mode(ftp, wd):
    ftp.set_pasv(False)
    data = os.urandom(70_000)
    ftp_stor(ftp, "active.bin", data)
    assert ftp_retr(ftp, "active.bin") == data
    assert "active.bin" in ftp.nlst()


def _listen_local():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(15)
    return s


def test_eprt_active_mode(ftp, wd):
    (wd / "e.bin").write_bytes(b"eprt-data" * 1000)
    ftp.voidcmd("TYPE I")
    ls = _listen_local()
    port = ls.getsockname()[1]
    assert ftp.sendcmd(f"EPRT |1|127.0.0.1|{port}|").startswith("200")
    r = ftp.sendcmd("RETR e.bin")
    assert r[:3] in ("150", "125"), r
    conn, _ = ls.accept()
    assert recv_all(conn) == b"eprt-data" * 1000
    ls.close()
    assert ftp.voidresp().startswith("226")


def test_epsv_and_epsv_all(ftp, wd):
    (wd / "p.bin").write_bytes(b"p" * 5000)
    ftp.voidcmd("TYPE I")
    r = ftp.sendcmd("EPSV")
    port = int(re.search(r"\(\|\|\|(\d+)\|\)", r).group(1))
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    assert ftp.sendcmd("RETR p.bin")[:3] in ("150", "125")
    assert recv_all(s) == b"p" * 5000
    assert ftp.voidresp().startswith("226")
    assert ftp.sendcmd("EPSV ALL").startswith("2")
    code, text = ftp_try(ftp, "PASV")
    assert 500 <= code < 600, f"PASV after EPSV ALL must be refused: {text}"
    code, text = ftp_try(ftp, "PORT 127,0,0,1,100,100")
    assert 500 <= code < 600, f"PORT after EPSV ALL must be refused: {text}"
    assert ftp.sendcmd("EPSV").startswith("229")


def test_port_and_eprt_bounce_protection(ftp):
    for cmd in ("PORT 10,0,0,1,200,10", "PORT 127,0,0,1,0,21", "PORT 127,0,0,1,3,255",
                "EPRT |1|10.0.0.1|5000|", "EPRT |1|127.0.0.1|80|", "EPRT |1|192.168.1.1|40000|"):
        code, text = ftp_try(ftp, cmd)
        assert 500 <= code < 600, f"{cmd} must be refused (RFC 2577), got {text}"
    assert ftp.sendcmd("NOOP").startswith("200")


def test_rest_then_retr_resumes_download(ftp, wd):
    data = os.urandom(200_000)
    (wd / "big.bin").write_bytes(data)
    assert ftp_retr(ftp, "big.bin", rest=123_456) == data[123_456:]
    assert ftp.sendcmd("REST 0").startswith("350")
    assert ftp_retr(ftp, "big.bin") == data


def test_storbinary_with_rest_resumes_upload(ftp, wd):
    data = os.urandom(500_000)
    ftp_stor(ftp, "part.bin", data[:200_000])
    assert ftp_size(ftp, "part.bin") == 200_000
    ftp.voidcmd("TYPE I")
    ftp_stor(ftp, "part.bin", data[200_000:], rest=200_000)
    assert (wd / "part.bin").read_bytes() == data
    assert ftp_size(ftp, "part.bin") == 500_000


def test_appe_appends(ftp, wd):
    ftp_stor(ftp, "ap.bin", b"first-")
    ftp_stor(ftp, "ap.bin", b"second", verb="APPE")
    assert (wd / "ap.bin").read_bytes() == b"first-second"
    ftp_stor(ftp, "new-by-appe.bin", b"fresh", verb="APPE")
    assert (wd / "new-by-appe.bin").read_bytes() == b"fresh"


def test_stor_overwrites_existing(ftp, wd):
    ftp_stor(ftp, "ow.bin", b"A" * 1000)
    ftp_stor(ftp, "ow.bin", b"B" * 10)
    assert (wd / "ow.bin").read_bytes() == b"B" * 10


def test_stou_creates_unique_file(ftp, wd):
    ftp_stor(ftp, "taken", b"original")
    ftp.voidcmd("TYPE I")
    names = []
    for payload in (b"unique-content", b"second-unique"):
        s = socket.create_connection(("127.0.0.1", _pasv_port(ftp)), timeout=15)
        r = ftp.sendcmd("STOU")
        m = re.match(r"^150 FILE: (.+)$", r)
        assert m, f"STOU preliminary reply must be '150 FILE: <name>', got {r!r}"
        s.sendall(payload)
        s.close()
        assert ftp.voidresp().startswith("226")
        name = os.path.basename(m.group(1).strip())
        assert (wd / name).read_bytes() == payload
        names.append(name)
    assert len(set(names)) == 2 and "taken" not in names, names
    assert (wd / "taken").read_bytes() == b"original"
    assert sorted(os.listdir(wd)) == sorted(["taken", *names])


def _pasv_port(ftp) -> int:
    r = ftp.sendcmd("PASV")
    nums = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r).groups()
    return int(nums[4]) * 256 + int(nums[5])


def test_stou_with_name_keeps_existing_file(ftp, wd):
    ftp_stor(ftp, "keep.txt", b"keep")
    s = socket.create_connection(("127.0.0.1", _pasv_port(ftp)), timeout=15)
    r = ftp.sendcmd("STOU keep.txt")
    assert r.startswith("150 FILE: "), r
    s.sendall(b"other")
    s.close()
    assert ftp.voidresp().startswith("226")
    assert (wd / "keep.txt").read_bytes() == b"keep"
    newname = r[len("150 FILE: "):].strip()
    assert os.path.basename(newname) != "keep.txt"
    assert (wd / os.path.basename(newname)).read_bytes() == b"other"


def test_allo_is_accepted(ftp):
    code, text = ftp_try(ftp, "ALLO 1000")
    assert code in (200, 202), text


def test_abor_without_transfer(ftp):
    code, text = ftp_try(ftp, "ABOR")
    assert code in (225, 226), text


def test_ftplib_abort_during_retr(ftp, wd):
    """ftplib.abort() sends 'ABOR\\r\\n' as TCP urgent data: the server must still see the
    whole line (SO_OOBINLINE), answer 426/226 and keep the session."""
    write_random(wd / "huge.bin", 64 << 20)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR huge.bin")
    conn.settimeout(15)
    got = 0
    while got < (1 << 20):
        d = conn.recv(65536)
        assert d
        got += len(d)
    resp = ftp.abort()
    assert resp[:3] in ("426", "226"), resp
    if resp.startswith("426"):
        assert ftp.getresp().startswith("226")
    conn.close()
    assert ftp.sendcmd("NOOP").startswith("200")


def test_retr_of_missing_file_and_directory_is_550(ftp, wd):
    ftp.mkd("adir")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp_retr(ftp, "missing.bin")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp_retr(ftp, "adir")
    assert ftp.sendcmd("NOOP").startswith("200")


def test_utf8_names_with_spaces_roundtrip(ftp, wd, uniq):
    name = "naïve file ✓.txt"
    data = os.urandom(4096)
    ftp_stor(ftp, name, data)
    assert (wd / name).read_bytes() == data
    assert name in ftp.nlst()
    assert ftp_retr(ftp, name) == data
    assert ftp.sendcmd(f"SIZE {name}") == "213 4096"
    ftp.mkd("dossier été")
    ftp.cwd("dossier été")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}/dossier été"


# ------------------------------------------------------------------ integrity


def _hash_reply_re(algo, start, end, name):
    return re.compile(rf"^213 {re.escape(algo)} {start}-{end} ([0-9a-fA-F]+) (.*)$")


ALGOS = {
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512": lambda b: hashlib.sha512(b).hexdigest(),
    "SHA-1": lambda b: hashlib.sha1(b).hexdigest(),
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "CRC32": lambda b: f"{zlib.crc32(b) & 0xffffffff:08x}",
}


def test_hash_of_uploaded_file_is_sha256_by_default(ftp, wd):
    data = os.urandom(100_000)
    ftp_stor(ftp, "h.bin", data)
    r = ftp.sendcmd("HASH h.bin")
    m = re.fullmatch(r"213 SHA-256 0-99999 ([0-9a-f]{64}) (.+)", r)
    assert m, f"expected '213 SHA-256 0-99999 <hex> h.bin' (end inclusive, as in the draft), got {r!r}"
    assert m.group(1) == sha256_bytes(data)
    assert m.group(2).endswith("h.bin")


def test_hash_of_file_not_uploaded_through_ftp(ftp, wd):
    data = os.urandom(54_321)
    (wd / "planted.bin").write_bytes(data)
    r = ftp.sendcmd("HASH planted.bin")
    assert re.fullmatch(rf"213 SHA-256 0-54320 {sha256_bytes(data)} (/.*/)?planted\.bin", r), r


def test_hash_of_empty_file(ftp, wd):
    ftp_stor(ftp, "empty.bin", b"")
    r = ftp.sendcmd("HASH empty.bin")
    assert re.fullmatch(rf"213 SHA-256 0-0 {sha256_bytes(b'')} (.*)empty\.bin", r), r


def test_hash_is_not_stale_after_file_changes_on_disk(ftp, wd):
    ftp_stor(ftp, "chg.bin", b"A" * 5000)
    assert sha256_bytes(b"A" * 5000) in ftp.sendcmd("HASH chg.bin")
    (wd / "chg.bin").write_bytes(b"B" * 5000)  # same size, new content, new mtime
    st = (wd / "chg.bin").stat()
    os.utime(wd / "chg.bin", (st.st_atime, st.st_mtime + 10))
    r = ftp.sendcmd("HASH chg.bin")
    assert sha256_bytes(b"B" * 5000) in r, f"HASH returned a stale digest: {r!r}"


@pytest.mark.parametrize("algo", list(ALGOS))
def test_opts_hash_selects_algorithm(ftp, wd, algo):
    data = os.urandom(77_777)
    (wd / "alg.bin").write_bytes(data)
    assert ftp.sendcmd(f"OPTS HASH {algo}") == f"200 {algo}"
    assert ftp.sendcmd("OPTS HASH") == f"200 {algo}"
    r = ftp.sendcmd("HASH alg.bin")
    m = re.fullmatch(rf"213 {re.escape(algo)} 0-77776 ([0-9a-fA-F]+) (.*)", r)
    assert m, r
    assert m.group(1).lower() == ALGOS[algo](data)


def test_opts_hash_unknown_algorithm_is_501_and_keeps_selection(ftp):
    assert ftp.sendcmd("OPTS HASH MD5") == "200 MD5"
    assert ftp_try(ftp, "OPTS HASH CRC-37")[0] == 501
    assert ftp.sendcmd("OPTS HASH") == "200 MD5"


def test_rang_then_hash_covers_inclusive_range(ftp, wd):
    data = os.urandom(10_000)
    (wd / "rg.bin").write_bytes(data)
    assert ftp.sendcmd("RANG 100 1099").startswith("350")
    r = ftp.sendcmd("HASH rg.bin")
    m = re.fullmatch(r"213 SHA-256 100-1099 ([0-9a-f]{64}) (.*)", r)
    assert m, r
    assert m.group(1) == sha256_bytes(data[100:1100])
    assert ftp.sendcmd("RANG 0 0").startswith("350")
    assert sha256_bytes(data[:1]) in ftp.sendcmd("HASH rg.bin")
    assert ftp.sendcmd("RANG 1 0").startswith("350")  # reset
    r = ftp.sendcmd("HASH rg.bin")
    assert r.startswith("213 SHA-256 0-9999 " + sha256_bytes(data)), r
    assert ftp_try(ftp, "RANG 5 2")[0] == 501


def test_x_hash_aliases(ftp, wd):
    data = os.urandom(33_333)
    (wd / "x.bin").write_bytes(data)
    for cmd, fn in (("XSHA256", hashlib.sha256), ("XSHA1", hashlib.sha1),
                    ("XSHA512", hashlib.sha512), ("XMD5", hashlib.md5)):
        r = ftp.sendcmd(f"{cmd} x.bin")
        assert r.lower() == f"250 {fn(data).hexdigest()}", (cmd, r)
    r = ftp.sendcmd("XCRC x.bin")
    assert r.lower() == f"250 {zlib.crc32(data) & 0xffffffff:08x}", r


def test_md5_command(ftp, wd):
    data = os.urandom(1234)
    (wd / "m5.bin").write_bytes(data)
    r = ftp.sendcmd("MD5 m5.bin")
    m = re.fullmatch(r"251 (.+) ([0-9a-fA-F]{32})", r)
    assert m, r
    assert m.group(1).endswith("m5.bin") and m.group(2).lower() == hashlib.md5(data).hexdigest()


def test_hash_of_missing_file_and_directory(ftp, wd):
    ftp.mkd("hd")
    assert ftp_try(ftp, "HASH nope.bin")[0] == 550
    assert ftp_try(ftp, "HASH hd")[0] in (550, 553)
    assert ftp_try(ftp, "XSHA256 nope.bin")[0] == 550


def test_avbl_reports_free_bytes(ftp, wd):
    r = ftp.sendcmd("AVBL")
    assert re.fullmatch(r"213 \d+", r), r
    r = ftp.sendcmd("AVBL .")
    assert re.fullmatch(r"213 \d+", r), r


# ------------------------------------------------------------------ hidden server files


def test_ferry_temp_names_are_never_listed_or_addressable(ftp, wd):
    (wd / ".ferry-secret").write_bytes(b"internal")
    (wd / "visible.txt").write_bytes(b"v")
    lines: list[str] = []
    ftp.retrlines("LIST -a", lines.append)
    assert not any(".ferry-" in l for l in lines), lines
    assert ".ferry-secret" not in ftp.nlst()
    assert ".ferry-secret" not in dict(ftp.mlsd())
    for cmd in ("SIZE .ferry-secret", "MDTM .ferry-secret", "DELE .ferry-secret", "RNFR .ferry-secret",
                "HASH .ferry-secret", "MLST .ferry-secret", "MKD .ferry-dir", "CWD .ferry-secret"):
        code, text = ftp_try(ftp, cmd)
        assert code == 550, f"{cmd} -> {text}"
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp_retr(ftp, ".ferry-secret")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp_stor(ftp, ".ferry-new", b"x")
    assert ftp.sendcmd("RNFR visible.txt").startswith("350")
    assert ftp_try(ftp, "RNTO .ferry-renamed")[0] == 550
    assert (wd / ".ferry-secret").read_bytes() == b"internal"
    assert (wd / "visible.txt").exists()
    assert not (wd / ".ferry-new").exists() and not (wd / ".ferry-renamed").exists()


# ------------------------------------------------------------------ permissions


def test_read_only_user_cannot_modify(srv):
    home = srv.reader.home
    (home / "ro.txt").write_bytes(b"read me")
    (home / "rodir").mkdir(exist_ok=True)
    f = srv.server.ftp(srv.reader)
    try:
        assert ftp_retr(f, "ro.txt") == b"read me"
        assert "ro.txt" in f.nlst()
        for cmd in ("DELE ro.txt", "MKD newdir", "RMD rodir", "RNFR ro.txt", "MFMT 20200101000000 ro.txt"):
            code, text = ftp_try(f, cmd)
            assert code == 550 and "permission denied" in text.lower(), f"{cmd} -> {text}"
        for verb in ("STOR", "APPE"):
            with pytest.raises(ftplib.error_perm) as ei:
                ftp_stor(f, "ro.txt" if verb == "APPE" else "new.txt", b"x", verb=verb)
            assert str(ei.value).startswith("550") and "permission denied" in str(ei.value).lower()
        f.voidcmd("TYPE I")
        with pytest.raises(ftplib.error_perm, match="^550"):
            conn, _ = f.ntransfercmd("STOU")
            conn.close()
        assert (home / "ro.txt").read_bytes() == b"read me"
        assert (home / "rodir").is_dir()
        assert sorted(os.listdir(home)) == ["ro.txt", "rodir"]
    finally:
        f.close()


# ------------------------------------------------------------------ more edge cases


def test_hash_follows_appe_and_rest_stor(ftp, wd):
    ftp_stor(ftp, "grow.bin", b"a" * 1000)
    assert sha256_bytes(b"a" * 1000) in ftp.sendcmd("HASH grow.bin")
    ftp_stor(ftp, "grow.bin", b"b" * 500, verb="APPE")
    r = ftp.sendcmd("HASH grow.bin")
    assert r.startswith(f"213 SHA-256 0-1499 {sha256_bytes(b'a' * 1000 + b'b' * 500)}"), r
    ftp.voidcmd("TYPE I")
    ftp_stor(ftp, "grow.bin", b"c" * 700, rest=1000)
    r = ftp.sendcmd("HASH grow.bin")
    assert r.startswith(f"213 SHA-256 0-1699 {sha256_bytes(b'a' * 1000 + b'c' * 700)}"), r
    assert (wd / "grow.bin").read_bytes() == b"a" * 1000 + b"c" * 700


def test_stor_into_missing_directory_is_550(ftp, wd):
    with pytest.raises(ftplib.error_perm, match="^55[03]"):
        ftp_stor(ftp, "no/such/dir/f.bin", b"x")
    assert not (wd / "no").exists()
    assert ftp.sendcmd("NOOP").startswith("200")


def test_non_utf8_name_on_disk_does_not_break_listings(ftp, wd):
    os.close(os.open(os.fsencode(str(wd)) + b"/bad-\xff\xfe-name", os.O_CREAT | os.O_WRONLY, 0o644))
    (wd / "good.txt").write_bytes(b"g")
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert any(l.endswith("good.txt") for l in lines), lines
    assert len([l for l in lines if l.strip()]) == 2, lines
    names = ftp.nlst()
    assert "good.txt" in names and len(names) == 2, names
    entries = dict(ftp.mlsd())
    assert "good.txt" in entries and len([n for n in entries if entries[n].get("type") == "file"]) == 2


def test_mlst_without_argument_describes_current_directory(ftp, wd):
    r = ftp.sendcmd("MLST")
    lines = r.splitlines()
    assert lines[0].startswith("250-") and lines[-1].startswith("250"), r
    assert re.search(r"type=(cdir|dir);", lines[1], re.I), r


def test_list_of_single_file(ftp, wd):
    (wd / "only.txt").write_bytes(b"12345")
    lines: list[str] = []
    ftp.retrlines("LIST only.txt", lines.append)
    lines = [l for l in lines if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("-") and lines[0].endswith("only.txt"), lines
    assert " 5 " in lines[0]


def test_pasv_reply_announces_the_control_address(ftp):
    r = ftp.sendcmd("PASV")
    assert re.search(r"\(127,0,0,1,\d+,\d+\)", r), r
    port = _pasv_port(ftp)
    assert 1024 <= port, port


def test_passive_ports_come_from_the_configured_range(srv, ftp):
    for _ in range(5):
        port = _pasv_port(ftp)
        assert srv.server.pasv_lo <= port <= srv.server.pasv_hi, (port, srv.server.pasv_lo, srv.server.pasv_hi)
    r = ftp.sendcmd("EPSV")
    port = int(re.search(r"\(\|\|\|(\d+)\|\)", r).group(1))
    assert srv.server.pasv_lo <= port <= srv.server.pasv_hi


def test_rename_directory_and_over_existing_file(ftp, wd):
    ftp.mkd("d1")
    (wd / "d1" / "in.txt").write_bytes(b"in")
    ftp.rename("d1", "d2")
    assert (wd / "d2" / "in.txt").read_bytes() == b"in" and not (wd / "d1").exists()
    (wd / "x.txt").write_bytes(b"x")
    assert ftp.sendcmd("RNFR x.txt").startswith("350")
    code, text = ftp_try(ftp, "RNTO d2")  # onto a directory name
    assert code in (250, 550, 553), text
    assert (wd / "d2" / "in.txt").read_bytes() == b"in"


def test_hash_is_not_stale_after_rename_over_file(ftp, wd):
    ftp_stor(ftp, "a.bin", b"a" * 1000)
    ftp_stor(ftp, "b.bin", b"b" * 1000)  # same size, probably the same second
    assert sha256_bytes(b"a" * 1000) in ftp.sendcmd("HASH a.bin")
    ftp.rename("b.bin", "a.bin")
    r = ftp.sendcmd("HASH a.bin")
    assert sha256_bytes(b"b" * 1000) in r, f"HASH after a rename over the file is stale: {r}"
    ftp.delete("a.bin")
    ftp_stor(ftp, "a.bin", b"c" * 1000)
    r = ftp.sendcmd("HASH a.bin")
    assert sha256_bytes(b"c" * 1000) in r, f"HASH after delete + upload is stale: {r}"


def test_zero_byte_upload_over_existing_file_empties_it(ftp, wd):
    (wd / "z.bin").write_bytes(b"z" * 1000)
    assert ftp_stor(ftp, "z.bin", b"").startswith("226")
    assert (wd / "z.bin").read_bytes() == b""
    assert ftp.sendcmd("SIZE z.bin") == "213 0"


def test_rang_applies_to_retr_as_advertised(srv, wd, uniq):
    """FEAT advertises 'RANG STREAM' (draft-bryan-ftp-range): RANG a b + RETR sends bytes a..b."""
    data = os.urandom(5000)
    (wd / "rr.bin").write_bytes(data)
    c = srv.server.ctrl(srv.alice)
    try:
        c.expect("TYPE I", 200)
        c.expect("RANG 100 199", 350)
        assert c.retr(f"/{uniq}/rr.bin") == data[100:200]
        assert c.retr(f"/{uniq}/rr.bin") == data, "the range must apply to one transfer only"
    finally:
        c.close()


def test_repeated_pasv_does_not_exhaust_the_port_range(srv, ftp, wd):
    n = (srv.server.pasv_hi - srv.server.pasv_lo + 1) + 50
    for i in range(n):
        r = ftp.sendcmd("PASV")
        assert r.startswith("227"), f"PASV #{i + 1} of {n}: {r}"
    (wd / "after.bin").write_bytes(b"ok")
    assert ftp_retr(ftp, "after.bin") == b"ok"


def test_epsv_with_protocol_argument(ftp):
    assert ftp.sendcmd("EPSV 1").startswith("229")
    assert ftp_try(ftp, "EPSV 2")[0] == 522
    assert ftp_try(ftp, "EPSV 7")[0] == 522


def test_long_and_exotic_names_work(ftp, wd):
    names = ["n" * 255, "😀 emoji.txt", "semi;colon", "star*quest?", "#hash%20pct", "tab\there", "-dash-first"]
    for name in names:
        ftp_stor(ftp, name, name.encode())
        assert (wd / name).read_bytes() == name.encode(), name
        assert ftp_retr(ftp, name) == name.encode(), name
    assert sorted(ftp.nlst()) == sorted(names)
    ftp.mkd("d" * 255)
    assert ftp.sendcmd(f"CWD {'d' * 255}/").startswith("250")


def test_cwd_with_trailing_slash_and_dot_segments(ftp, wd, uniq):
    ftp.mkd("t")
    assert ftp.sendcmd("CWD t/").startswith("250")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}/t"
    assert ftp.sendcmd("CWD ./../t/./..").startswith("250")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}"
    assert ftp.sendcmd(f"CWD //{uniq}//t").startswith("250")
    assert pwd_of(ftp.sendcmd("PWD")) == f"/{uniq}/t"


def test_name_clashes_between_files_and_directories(ftp, wd):
    ftp.mkd("adir")
    (wd / "afile").write_bytes(b"f")
    with pytest.raises(ftplib.error_perm, match="^55[03]"):
        ftp_stor(ftp, "adir", b"x")
    assert (wd / "adir").is_dir()
    assert ftp_try(ftp, "MKD afile")[0] == 550
    assert ftp_try(ftp, "RMD afile")[0] == 550
    assert (wd / "afile").read_bytes() == b"f"
    assert ftp_try(ftp, "CWD afile")[0] == 550


def test_help_for_a_command(ftp):
    assert ftp.sendcmd("HELP STOR").startswith("214")
    assert ftp.sendcmd("HELP").startswith("214")


def test_large_directory_listing(ftp, wd):
    for i in range(3000):
        (wd / f"f{i:05d}").write_bytes(b"")
    t0 = time.monotonic()
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert len(lines) == 3000
    assert len(ftp.nlst()) == 3000
    assert len([e for e in ftp.mlsd() if e[1].get("type") == "file"]) == 3000
    assert time.monotonic() - t0 < 20
