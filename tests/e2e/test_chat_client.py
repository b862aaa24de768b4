"""Ferry's chat clients against the real chat service, with an unmodified IRC library client
(the Python `irc` package) on the other side: `ferry chat` (stdin and stdout as pipes) says and
hears room lines, private messages both ways, `/who`, the NOTICE of an FTP upload, IRC over TLS
(trust on first use, and --ca-file); and the chat inside `ferry shell` on a pty: `say`, `who`,
a room line printed above the prompt while a half-typed line stays intact, and a shell whose
chat cannot be reached. Bad input: a wrong password (exit 4), an unreachable port (exit 3)."""

from __future__ import annotations

import ftplib
import io
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from client_e2e import (EXIT_AUTH, EXIT_CONN, EXIT_USAGE, ChatProc, ShellPty, one_line_error,
                        run_client, run_shell, url)
from ferry_e2e import HOST
from test_chat_clients import LibClient

pytestmark = pytest.mark.timeout(120)

TIME = r"\d\d:\d\d"


@pytest.fixture(scope="module")
def room(make_ferry):
    """A server with a plain and a TLS chat listener, and accounts alice, bob, carol."""
    f = make_ferry("chatclient")
    users = {n: f.add_user(n) for n in ("alice", "bob", "carol")}
    s = f.serve("limits.failed_login_delay_ms=50", extra_args=("--chat-listen-tls", f"{HOST}:0"))
    port, tls_port = s.wait_chat(), s.wait_chat(tls=True)
    yield SimpleNamespace(ferry=f, server=s, port=port, tls_port=tls_port, **users)
    s.stop(timeout=15)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def lib_client(room, closing, name: str = "bob") -> LibClient:
    """The irc library, logged in (PASS account:password), in #lobby."""
    u = getattr(room, name)
    c = closing(LibClient(room.port, name, password=f"{name}:{u.password}"))
    c.wait("welcome", 30)
    c.wait("endofnames", 30, lambda e: e.args and e.args[0] == "#lobby")
    return c


def ferry_chat(room, home, closing, *extra: str, user: str = "alice") -> ChatProc:
    """`ferry chat irc://alice@…` (password from the environment), in #lobby."""
    u = getattr(room, user)
    c = closing(ChatProc(home, f"irc://{user}@127.0.0.1:{room.port}", *extra,
                         env={"FERRY_PASSWORD": u.password}))
    c.wait_line(rf"^{TIME} \* {user} joined #lobby$", 30)
    return c


def test_ferry_chat_and_an_irc_library_client_talk_in_the_room(room, home, closing, uniq):
    chat = ferry_chat(room, home, closing)
    bob = lib_client(room, closing)
    chat.wait_line(rf"^{TIME} \* bob joined #lobby$")
    bob.do(bob.conn.privmsg, "#lobby", f"hi alice {uniq}")
    chat.wait_line(rf"^{TIME} <bob> hi alice {re.escape(uniq)}$")
    chat.send(f"hello bob {uniq}")
    e = bob.wait("pubmsg", 20, lambda e: uniq in e.args[0], target="#lobby")
    assert e.nick == "alice" and e.args == [f"hello bob {uniq}"], e
    chat.send("/quit done for today")
    assert bob.wait("quit", 20, nick="alice").args == ["Quit: done for today"]
    assert chat.finish() == 0


def test_ferry_chat_private_messages_both_ways(room, home, closing, uniq):
    chat = ferry_chat(room, home, closing)
    bob = lib_client(room, closing)
    chat.send(f"/msg bob psst {uniq}")
    e = bob.wait("privmsg", 20, lambda e: uniq in e.args[0])
    assert (e.nick, e.target, e.args) == ("alice", "bob", [f"psst {uniq}"]), e
    chat.wait_line(rf"^{TIME} -> \*bob\* psst {re.escape(uniq)}$")
    bob.do(bob.conn.privmsg, "alice", f"back at you {uniq}")
    chat.wait_line(rf"^{TIME} \*bob\* back at you {re.escape(uniq)}$")
    chat.send(f"/msg nobody-{uniq[-6:]} anyone?")
    line = chat.wait_line(r"No such nick", err=True)
    assert line.startswith("ferry: ") and "(401)" in line, line
    assert chat.finish() == 0


def test_ferry_chat_who_lists_both(room, home, closing):
    chat = ferry_chat(room, home, closing)
    lib_client(room, closing, "carol")
    chat.wait_line(rf"^{TIME} \* carol joined #lobby$")
    chat.send("/who")
    line = chat.wait_line(r"^#lobby: ")
    assert {"alice", "carol"} <= set(line.split(": ", 1)[1].split()), line
    assert chat.finish() == 0


def test_an_ftp_upload_is_announced_in_ferry_chat(room, home, closing, uniq):
    chat = ferry_chat(room, home, closing)
    ftp = room.server.ftp(room.bob)
    try:
        ftp.storbinary(f"STOR up-{uniq}.txt", io.BytesIO(b"0123456789"))
    finally:
        ftp.quit()
    chat.wait_line(rf"^{TIME} <ferry> bob uploaded /up-{re.escape(uniq)}\.txt \(10 B\)$")
    assert chat.finish() == 0


def test_ferry_chat_over_tls_trusts_on_first_use_or_a_ca_file(room, home, tmp_path, closing, uniq):
    bob = lib_client(room, closing)
    tls_url = f"ircs://alice@127.0.0.1:{room.tls_port}"
    env = {"FERRY_PASSWORD": room.alice.password}
    # first contact without a terminal to ask: refused, with the fingerprint and what to do
    p = run_client(home, "chat", tls_url, env=env)
    line = one_line_error(p, EXIT_CONN)
    assert "not signed by a trusted authority" in line and "--accept-new-cert" in line, line
    chat = closing(ChatProc(home, tls_url, "--accept-new-cert", env=env))
    chat.wait_line(rf"^{TIME} \* alice joined #lobby$", 30)
    chat.wait_line(r"trusting the certificate of 127\.0\.0\.1:\d+ \(sha256 ", err=True)
    chat.send(f"over tls {uniq}")
    assert bob.wait("pubmsg", 20, lambda e: uniq in e.args[0]).nick == "alice"
    assert chat.finish() == 0
    known = (home / ".config" / "ferry" / "known_hosts").read_text()
    assert f"127.0.0.1:{room.tls_port} sha256 " in known, known
    # with only the server's certificate as CA, in a fresh home
    other = tmp_path / "other-home"
    other.mkdir()
    chat = closing(ChatProc(other, tls_url, "--ca-file", str(room.ferry.tls_cert), env=env))
    chat.wait_line(rf"^{TIME} \* alice joined #lobby$", 30)
    assert chat.finish() == 0


def test_ferry_chat_bad_input(room, home):
    env = {"FERRY_PASSWORD": "wrong-password"}
    line = one_line_error(run_client(home, "chat", f"irc://alice@127.0.0.1:{room.port}", env=env),
                          EXIT_AUTH)
    assert "refused" in line and "alice" in line, line
    port = closed_port()
    line = one_line_error(run_client(home, "chat", f"irc://alice:pw@127.0.0.1:{port}"), EXIT_CONN)
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower(), line
    line = one_line_error(run_client(home, "chat", "http://127.0.0.1/"), EXIT_USAGE)
    assert "irc://" in line, line
    line = one_line_error(run_client(home, "chat", f"irc://127.0.0.1:{room.port}"), EXIT_USAGE)
    assert "no user name" in line, line
    line = one_line_error(run_client(home, "chat"), EXIT_USAGE)
    assert "chat needs a URL" in line, line


# --------------------------------------------------------------------------- in ferry shell


@pytest.fixture
def shell(room, home, tmp_path, closing):
    """`ferry shell` on a pty as alice, with the chat of the test server; waits until the chat
    is connected."""
    work = tmp_path / "work"
    work.mkdir()

    def start(chat_url: str | None = None, wait_chat: bool = True) -> ShellPty:
        chat_url = chat_url or f"irc://127.0.0.1:{room.port}"
        sh = closing(ShellPty(home, url("ftp", room.server.port, "alice"), "--chat", chat_url,
                              "--ca-file", str(room.ferry.tls_cert),
                              env={"FERRY_PASSWORD": room.alice.password}, cwd=work))
        sh.work = work
        sh.prompt()
        if wait_chat:
            sh.wait_text(r"chat: connected to 127\.0\.0\.1:\d+ as alice, in #lobby")
        return sh

    return start


def test_shell_say_reaches_an_irc_library_client(shell, room, closing, uniq):
    bob = lib_client(room, closing)
    sh = shell()
    out = sh.run(f"say hello from the shell, it's {uniq}; really")
    assert re.search(rf"{TIME} <alice> hello from the shell, it's {re.escape(uniq)}; really", out), out
    e = bob.wait("pubmsg", 20, lambda e: uniq in e.args[0], target="#lobby")
    assert e.nick == "alice" and e.args == [f"hello from the shell, it's {uniq}; really"], e
    sh.run(f"msg bob private {uniq}")
    e = bob.wait("privmsg", 20, lambda e: uniq in e.args[0])
    assert (e.nick, e.args) == ("alice", [f"private {uniq}"]), e


def test_a_room_line_appears_above_the_prompt_and_the_half_typed_line_stays(shell, room, closing,
                                                                            uniq):
    sh = shell()
    bob = lib_client(room, closing)
    sh.wait_text(r"\* bob joined #lobby")
    mark = sh.mark()
    sh.send("lp")  # half of `lpwd`, no Enter
    sh.wait_text(r"lp$", since=mark)  # echoed
    bob.do(bob.conn.privmsg, "#lobby", f"while you type {uniq}")
    # the line where the prompt was (the editor clears that row first), then the prompt drawn
    # again below it with the half-typed line
    sh.wait_text(rf"{TIME} <bob> while you type {re.escape(uniq)}\nferry [^\n]*> lp$", since=mark)
    out = sh.run("wd")  # finishes the line
    assert str(sh.work) in out, out  # the command that ran is the whole line, `lpwd`
    assert "unknown command" not in sh.text(), sh.text()[-2000:]
    screen = sh.text()
    assert screen.index(f"<bob> while you type {uniq}") < screen.rindex(str(sh.work)), screen[-2000:]


def test_shell_who_lists_the_room(shell, room, closing):
    lib_client(room, closing, "carol")
    sh = shell()
    out = sh.run("who")
    line = next((l for l in out.splitlines() if l.startswith("#lobby: ")), None)
    assert line and {"alice", "carol"} <= set(line.split(": ", 1)[1].split()), out


def test_shell_without_a_reachable_chat_still_works_and_say_explains(shell, room, home):
    port = closed_port()
    sh = shell(f"irc://127.0.0.1:{port}", wait_chat=False)
    sh.wait_text(rf"chat: cannot connect to 127\.0\.0\.1:{port}")
    assert sh.run("pwd").strip().splitlines()[-1] == "/"
    out = sh.run("say anyone there?")
    lines = [l for l in out.splitlines() if l.startswith("ferry: ")]
    assert len(lines) == 1 and "not connected to the chat" in lines[0] and f"127.0.0.1:{port}" in lines[0], out
    # without a terminal: the same explanation, exit code 3
    p = run_shell(home, url("ftp", room.server.port, "alice", room.alice.password),
                  "--chat", f"irc://127.0.0.1:{port}", "--ca-file", str(room.ferry.tls_cert),
                  script="pwd\nsay hello\n")
    assert p.returncode == EXIT_CONN and "not connected to the chat" in p.stderr, (p.returncode, p.stderr)
    assert p.stdout.strip() == "/", p.stdout


def test_shell_script_says_without_a_terminal(room, home, closing, uniq):
    bob = lib_client(room, closing)
    p = run_shell(home, url("ftp", room.server.port, "alice", room.alice.password),
                  "--chat", f"irc://127.0.0.1:{room.port}", "--ca-file", str(room.ferry.tls_cert),
                  script=f"say scripted {uniq}\nwho\n")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert re.search(r"^#lobby: .*\bbob\b", p.stdout, re.M), p.stdout
    e = bob.wait("pubmsg", 20, lambda e: uniq in e.args[0])
    assert e.nick == "alice", e
