"""`ferry shell` against the Ferry server, driven through a real pseudo-terminal (pexpect):
several commands on one line, the question before `rm`, Tab completion of a remote path,
progress bars and the verified summary of a big download, history kept across runs, and one
clear line for each failure (missing file, unknown command, missing argument, unreachable
host, wrong password) after which the shell goes on. Without a terminal: commands from stdin,
`-c LINE`, and the exit code of the last failing command.

The server's certificate is passed with --ca-file, so every session is FTPS; these tests do
not use the chat (--no-chat; test_chat_client.py does)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from client_e2e import (EXIT_AUTH, EXIT_CONN, EXIT_REFUSED, EXIT_USAGE, ShellPty, run_shell,
                        url)
from ferry_e2e import sha256_file, write_random

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def work(tmp_path) -> Path:
    """The shell's local directory."""
    w = tmp_path / "work"
    w.mkdir()
    return w


@pytest.fixture
def shell(srv, home, work):
    """Starts `ferry shell` on a pty as alice (password in the environment), waits for the
    prompt; closed at the end of the test."""
    started: list[ShellPty] = []

    def start(*extra: str, password: str | None = None, path: str = "", connect: bool = True,
              env: dict | None = None) -> ShellPty:
        args = ["--no-chat", "--ca-file", str(srv.ferry.tls_cert), *extra]
        if connect:
            args.insert(0, url("ftp", srv.server.port, "alice", path=path))
        e = {"FERRY_PASSWORD": password or srv.alice.password}
        e.update(env or {})
        sh = ShellPty(home, *args, env=e, cwd=work)
        started.append(sh)
        sh.prompt()
        return sh

    yield start
    for sh in started:
        sh.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def error_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith("ferry: ")]


def test_several_commands_on_one_line_make_a_directory_upload_and_list(shell, srv, work, uniq):
    (work / "f.txt").write_bytes(b"one line\n")
    sh = shell()
    out = sh.run(f"mkdir {uniq}; cd {uniq}; put f.txt; ls")
    assert f"put f.txt: 9 B in " in out and "SHA-256 verified" in out, out
    assert re.search(r"^-\s+9 B\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+f\.txt$", out, re.M), out
    assert (srv.alice.home / uniq / "f.txt").read_bytes() == b"one line\n"
    assert sh.run("pwd").strip() == f"/{uniq}"
    # a quoted ; is part of a name, not a separator
    (work / "a;b.txt").write_bytes(b"x")
    out = sh.run("put 'a;b.txt'; ls")
    assert "a;b.txt" in out and "unknown command" not in out, out
    assert (srv.alice.home / uniq / "a;b.txt").exists()
    assert sh.quit() == 0


def test_rm_asks_first_no_keeps_yes_deletes_f_does_not_ask(shell, srv, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    for n in ("keep.txt", "gone.txt", "forced.txt"):
        (d / n).write_bytes(b"data")
    sh = shell(path=uniq)
    sh.send("rm keep.txt\r")
    sh.expect(r"delete keep\.txt\? \[y/N\] ")
    out = sh.run("n")
    assert "kept keep.txt" in out, out
    assert (d / "keep.txt").exists()

    sh.send("rm gone.txt\r")
    sh.expect(r"delete gone\.txt\? \[y/N\] ")
    sh.run("y")
    assert not (d / "gone.txt").exists()

    out = sh.run("rm -f forced.txt")
    assert "delete" not in out, out
    assert not (d / "forced.txt").exists()
    assert (d / "keep.txt").exists()


def test_rm_without_a_terminal_does_not_delete(srv, home, uniq):
    d = srv.alice.home / uniq
    d.mkdir()
    (d / "x.txt").write_bytes(b"data")
    p = run_shell(home, url("ftp", srv.server.port, "alice", srv.alice.password, path=uniq),
                  "--no-chat", "--ca-file", str(srv.ferry.tls_cert), script="rm x.txt\n")
    assert p.returncode == EXIT_USAGE, (p.returncode, p.stdout, p.stderr)
    assert "not deleted" in p.stderr and "rm -f" in p.stderr, p.stderr
    assert (d / "x.txt").exists()
    p = run_shell(home, url("ftp", srv.server.port, "alice", srv.alice.password, path=uniq),
                  "--no-chat", "--ca-file", str(srv.ferry.tls_cert), script="rm -f x.txt\n")
    assert p.returncode == 0, p.stderr
    assert not (d / "x.txt").exists()


def test_tab_completes_a_remote_path_and_the_command_works(shell, srv, work, uniq):
    d = srv.alice.home / uniq
    (d / "subdir").mkdir(parents=True)
    (d / "subdir" / "completion-target-42.bin").write_bytes(b"complete me")
    (d / "other.txt").write_bytes(b"not this one")
    sh = shell(path=uniq)
    sh.send("get sub\t")
    sh.expect(r"get subdir/")  # a directory completes with its slash
    sh.send("compl\t")
    sh.expect(r"completion-target-42\.bin")
    out = sh.run("")
    assert "get subdir/completion-target-42.bin: 11 B in " in out, out
    assert "SHA-256 verified" in out, out
    assert (work / "completion-target-42.bin").read_bytes() == b"complete me"


def test_a_big_download_shows_a_progress_bar_then_the_verified_summary(shell, srv, work, uniq):
    src = srv.alice.home / f"{uniq}.bin"
    digest = write_random(src, 128 << 20)
    sh = shell()
    sh.send(f"get {uniq}.bin\r")
    bar = sh.expect(r"MiB/s ETA", timeout=60)
    assert "MiB/s ETA" in bar
    out = sh.prompt(timeout=90)
    assert re.search(rf"get {re.escape(uniq)}\.bin: 128\.0 MiB in [\d.]+ s \([\d.]+ [KMG]iB/s\), "
                     r"SHA-256 verified", out), out
    screen = sh.text()
    assert screen.index("MiB/s ETA") < screen.index("SHA-256 verified"), screen[-2000:]
    assert sha256_file(work / f"{uniq}.bin") == digest


def test_history_is_kept_across_runs_without_passwords(srv, home, work, uniq):
    ca = ["--no-chat", "--ca-file", str(srv.ferry.tls_cert)]
    env = {"FERRY_PASSWORD": srv.alice.password}
    first = ShellPty(home, *ca, env=env, cwd=work)
    try:
        first.prompt()
        secret_url = url("ftp", srv.server.port, "alice", srv.alice.password)
        first.run(f"open {secret_url}")
        first.run(f"mkdir hist-{uniq}")
        assert first.quit() == 0
    finally:
        first.close()
    history = (home / ".config" / "ferry" / "history").read_text()
    assert f"mkdir hist-{uniq}" in history, history
    assert srv.alice.password not in history, history
    assert f"open ftp://alice@127.0.0.1:{srv.server.port}/" in history, history

    second = ShellPty(home, url("ftp", srv.server.port, "alice"), *ca, env=env, cwd=work)
    try:
        second.prompt()
        second.send("\x1b[A")  # Up: the last line of the first run
        second.expect(r"> quit")
        second.send("\x1b[A")  # and the one before
        second.expect(rf"mkdir hist-{re.escape(uniq)}")
        out = second.run("")
        # it ran again: the directory exists now, so MKD is refused
        assert f"hist-{uniq}" in out and "550" in out, out
        assert second.quit() == EXIT_REFUSED  # the exit code of the last failure
    finally:
        second.close()


def test_error_replies_are_one_line_and_the_shell_goes_on(shell, srv, work, uniq):
    sh = shell()
    out = sh.run(f"get missing-{uniq}.txt; cd no-such-dir-{uniq}; pwd")
    errors = error_lines(out)
    assert len(errors) == 2, out
    assert f"missing-{uniq}.txt" in errors[0] and "550" in errors[0], errors
    assert f"no-such-dir-{uniq}" in errors[1] and "550" in errors[1], errors
    assert out.strip().splitlines()[-1] == "/", out  # pwd still ran
    assert not (work / f"missing-{uniq}.txt").exists()
    assert "panicked" not in sh.text()


def test_unknown_command_and_missing_argument_say_what_to_do(shell):
    sh = shell()
    out = sh.run("frobnicate x")
    assert error_lines(out) == ["ferry: frobnicate: unknown command (help lists them)"], out
    out = sh.run("mkdir")
    assert error_lines(out) == ["ferry: mkdir: missing argument (usage: mkdir [OPTIONS] <DIR>...)"], out
    out = sh.run("get --bogus x")
    lines = error_lines(out)
    assert len(lines) == 1 and "--bogus" in lines[0] and "usage: get" in lines[0], out
    out = sh.run("put 'unterminated")
    lines = error_lines(out)
    assert len(lines) == 1 and "unterminated quote" in lines[0], out
    out = sh.run("help")
    for name in ("ls", "cd", "get", "put", "rm", "open", "say", "who", "quit"):
        assert re.search(rf"^  {name}\b", out, re.M), (name, out)
    assert sh.run("pwd").strip() == "/"


def test_open_of_an_unreachable_host_says_so_and_the_shell_goes_on(shell, srv):
    port = closed_port()
    sh = shell(connect=False)
    out = sh.run("ls")
    assert error_lines(out) == ["ferry: ls: not connected: open ftp://user@host:port first"], out
    out = sh.run(f"open ftp://alice@127.0.0.1:{port}/")
    lines = error_lines(out)
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "refused" in lines[0].lower(), out
    out = sh.run(f"open {url('ftp', srv.server.port, 'alice')}")
    assert "connected to" in out, out
    assert sh.run("pwd").strip() == "/"


def test_wrong_password_is_one_line_then_open_works(shell, srv):
    sh = shell(password="wrong-password")
    first = error_lines(sh.text())
    assert len(first) == 1 and "login as alice refused" in first[0], sh.text()
    out = sh.run(f"open {url('ftp', srv.server.port, 'alice', srv.alice.password)}")
    assert "connected to" in out, out
    assert sh.run("pwd").strip() == "/"


def test_script_exit_code_is_that_of_the_last_failing_command(srv, home, work, uniq):
    base = ["--no-chat", "--ca-file", str(srv.ferry.tls_cert)]
    u = url("ftp", srv.server.port, "alice", srv.alice.password)
    (work / "s.txt").write_bytes(b"script")
    p = run_shell(home, u, *base, cwd=work,
                  script=f"mkdir {uniq}\ncd {uniq}\nput s.txt\nget nope-{uniq}\nls\n")
    assert p.returncode == EXIT_REFUSED, (p.returncode, p.stdout, p.stderr)
    assert "s.txt" in p.stdout and "SHA-256 verified" in p.stdout, p.stdout
    assert len(error_lines(p.stderr)) == 1, p.stderr
    p = run_shell(home, u, *base, "-c", f"cd {uniq}; ls", cwd=work)
    assert p.returncode == 0 and "s.txt" in p.stdout, (p.returncode, p.stdout, p.stderr)
    p = run_shell(home, u, *base, "-c", "frobnicate", cwd=work)
    assert p.returncode == EXIT_USAGE, p.stderr
    wrong = url("ftp", srv.server.port, "alice", "wrong-password")
    p = run_shell(home, wrong, *base, script="ls\n")
    assert p.returncode == EXIT_AUTH, p.stderr
    assert len(error_lines(p.stderr)) == 1, p.stderr
    p = run_shell(home, f"ftp://alice:x@127.0.0.1:{closed_port()}/", *base, script="ls\n")
    assert p.returncode == EXIT_CONN, p.stderr
    p = run_shell(home, *base, script="ls\n")
    assert p.returncode == EXIT_CONN and "not connected: open ftp://" in p.stderr, p.stderr


def test_ctrl_c_stops_a_transfer_and_the_shell_goes_on(home, work, tmp_path):
    """Against a throttled pyftpdlib: Ctrl-C during a download returns to the prompt, the session
    is opened again, and `get -c` resumes the partial file."""
    from client_e2e import start_pyftpd, wait_size
    ftpd = start_pyftpd(tmp_path / "ftpd", tmp_path / "ftpd.log", rate=512 << 10)
    try:
        digest = write_random(ftpd.home / "slow.bin", 3 << 20)
        sh = ShellPty(home, ftpd.url(), "--no-chat", cwd=work)
        try:
            sh.prompt()
            sh.send("get slow.bin\r")
            sh.expect(r"ETA", timeout=30)
            wait_size(work / "slow.bin", 1 << 20, 30)  # the first buffer is on disk
            sh.send("\x03")  # Ctrl-C
            out = sh.prompt(timeout=30)
            assert "ferry: get: interrupted" in out, out
            assert (1 << 20) <= (work / "slow.bin").stat().st_size < 3 << 20
            assert sh.run("pwd").strip() == "/"  # the session works again
            out = sh.run("get -c slow.bin", timeout=60)
            assert "resumed at" in out and "size checked" in out, out  # pyftpdlib has no HASH
            assert sha256_file(work / "slow.bin") == digest
            assert sh.quit() == 130  # the interrupted command was the last failure
        finally:
            sh.close()
    finally:
        ftpd.stop()
