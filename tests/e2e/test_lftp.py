"""lftp against ferry: mirror a tree up (mirror -R) and down and compare byte for byte;
resume partial files with `get -c` and `put -c`."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ferry_e2e import lftp, sha256_file, tree_digest, write_random

pytestmark = pytest.mark.timeout(240)


def make_tree(root: Path) -> None:
    rng = random.Random(42)
    dirs = [root, root / "a", root / "a" / "b", root / "a" / "b" / "c", root / "d",
            root / "naïve dir ✓", root / "with space"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir()
    n = 0
    for d in dirs:
        for i in range(7):
            size = rng.choice([0, 1, 100, 4096, 65_537, 200_000])
            write_random(d / f"file-{i}.bin", size)
            n += 1
    write_random(root / "naïve dir ✓" / "résumé ✓ é.txt", 12_345)
    write_random(root / "a" / "big.bin", 3 << 20)
    (root / "zero.bin").write_bytes(b"")
    assert n + 3 >= 50


def test_lftp_mirror_tree_up_and_down(srv, uniq, tmp_path):
    local = tmp_path / "tree"
    make_tree(local)
    expected = tree_digest(local)
    lftp(srv.server, srv.alice, f'mirror -R --no-perms "{local}" "/{uniq}"')
    remote_dir = srv.alice.home / uniq
    assert tree_digest(remote_dir) == expected
    # lftp sets the remote modification times (MFMT) so a second mirror transfers nothing
    for rel, digest in expected.items():
        if digest != "dir":
            lt = (local / rel).stat().st_mtime
            rt = (remote_dir / rel).stat().st_mtime
            assert abs(lt - rt) <= 1, f"mtime of {rel} not preserved: {lt} vs {rt}"
    p = lftp(srv.server, srv.alice, f'mirror -R --no-perms --verbose=1 "{local}" "/{uniq}"')
    out = p.stdout.decode("utf-8", "replace")
    assert "Transferring file" not in out, f"second mirror -R re-sent files:\n{out}"
    down = tmp_path / "down"
    lftp(srv.server, srv.alice, f'mirror --no-perms "/{uniq}" "{down}"')
    assert tree_digest(down) == expected


def test_lftp_get_c_resumes_partial_download(srv, uniq, tmp_path):
    remote = srv.alice.home / f"{uniq}.bin"
    write_random(remote, 5 << 20)
    full = remote.read_bytes()
    local = tmp_path / "local.bin"
    # a local partial whose content differs from the server's: if lftp really resumes
    # (REST n + RETR), the result is our prefix + the server's tail.
    partial = b"L" * (1 << 20) + b"M" * 12_345
    local.write_bytes(partial)
    lftp(srv.server, srv.alice, f'get -c "/{uniq}.bin" -o "{local}"')
    assert local.read_bytes() == partial + full[len(partial):]
    # and a plain partial resumes to a byte-identical file
    local.write_bytes(full[:777_777])
    lftp(srv.server, srv.alice, f'get -c "/{uniq}.bin" -o "{local}"')
    assert sha256_file(local) == sha256_file(remote)


def test_lftp_put_c_resumes_partial_upload(srv, uniq, tmp_path):
    local = tmp_path / "local.bin"
    write_random(local, 5 << 20)
    full = local.read_bytes()
    remote = srv.alice.home / f"{uniq} ✓.bin"
    partial = b"R" * (1 << 20) + b"S" * 4321
    remote.write_bytes(partial)
    lftp(srv.server, srv.alice, f'put -c "{local}" -o "/{uniq} ✓.bin"')
    assert remote.read_bytes() == partial + full[len(partial):]
    remote.write_bytes(full[:1_234_567])
    lftp(srv.server, srv.alice, f'put -c "{local}" -o "/{uniq} ✓.bin"')
    assert sha256_file(remote) == sha256_file(local)


def test_lftp_ls_rm_mkdir_mv(srv, uniq, tmp_path):
    d = srv.alice.home / uniq
    d.mkdir()
    (d / "one.txt").write_bytes(b"1")
    p = lftp(srv.server, srv.alice, f'cd "/{uniq}"; mkdir sub; mv one.txt sub/uno.txt; cls -1 sub')
    assert p.stdout.decode().split() == ["sub/uno.txt"], p.stdout
    assert (d / "sub" / "uno.txt").read_bytes() == b"1"
    lftp(srv.server, srv.alice, f'cd "/{uniq}"; rm sub/uno.txt; rmdir sub')
    assert os.listdir(d) == []
