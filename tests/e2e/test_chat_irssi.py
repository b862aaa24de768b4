"""irssi, unmodified, under tmux against the chat service, on plaintext and on TLS: it logs in
with SASL PLAIN (no server password configured, guests off: SASL is the only way in), joins,
sends, receives (room and private), and quits. Driven with `tmux send-keys`; read back through
irssi's autolog files, `tmux capture-pane`, and its raw protocol log (`/rawlog save`), which
also shows the server answered everything irssi asked on its own (MODE, WHO, ...) without
`421`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ferry_e2e import HOST, lines_where, parse_irc, wait_until

pytestmark = pytest.mark.timeout(120)


def need_tools():
    missing = [t for t in ("irssi", "tmux") if shutil.which(t) is None]
    if missing:
        raise AssertionError(f"not installed: {' '.join(missing)} (apt-get install -y irssi tmux)")


IRSSI_CONFIG = """
servers = (
  {{
    address = "{host}";
    chatnet = "ferry";
    port = "{port}";
    use_tls = "{tls}";
    tls_verify = "no";
    autoconnect = "yes";
  }}
);
chatnets = {{
  ferry = {{
    type = "IRC";
    sasl_mechanism = "PLAIN";
    sasl_username = "{user}";
    sasl_password = "{password}";
  }};
}};
settings = {{
  core = {{
    real_name = "Irssi {user}";
    user_name = "{user}";
    nick = "{user}";
    rawlog_lines = "5000";
  }};
  "fe-common/core" = {{
    autolog = "yes";
    autolog_path = "{logs}/$tag/$0.log";
    beep_when_away = "no";
  }};
}};
"""


class Irssi:
    """irssi in a detached tmux session on a private tmux socket, with a temporary HOME."""

    def __init__(self, port: int, user, tls: bool):
        need_tools()
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-irssi-"))
        self.home = self.dir / "home"
        (self.home / ".irssi").mkdir(parents=True)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        (self.home / ".irssi" / "config").write_text(IRSSI_CONFIG.format(
            host=HOST, port=port, tls="yes" if tls else "no", user=user.name, password=user.password,
            logs=self.logs))
        self.sock = str(self.dir / "tmux.sock")
        self.env = dict(os.environ, HOME=str(self.home), TERM="screen", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        self.tmux("new-session", "-d", "-s", "irc", "-x", "200", "-y", "50",
                  f"exec irssi --home={self.home / '.irssi'}")

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", self.sock, *args], env=self.env, capture_output=True, text=True,
                              timeout=20, check=check, stdin=subprocess.DEVNULL)

    def type(self, text: str):
        """Type a line into irssi and press Enter."""
        self.tmux("send-keys", "-t", "irc", "-l", text)
        self.tmux("send-keys", "-t", "irc", "Enter")

    def screen(self) -> str:
        p = self.tmux("capture-pane", "-p", "-t", "irc", "-S", "-200", check=False)
        return p.stdout

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "irc", check=False).returncode == 0

    def log_text(self) -> str:
        out = []
        for p in sorted(self.logs.rglob("*.log")):
            out.append(f"== {p.relative_to(self.logs)}\n{p.read_text('utf-8', 'replace')}")
        return "\n".join(out)

    def wait_log(self, needle: str, timeout: float = 20) -> str:
        try:
            return wait_until(lambda: needle in self.log_text() and self.log_text(), timeout, 0.1,
                              f"{needle!r} in irssi's logs")
        except AssertionError:
            raise AssertionError(f"{needle!r} not in irssi's logs within {timeout}s\nlogs:\n{self.log_text()}"
                                 f"\nscreen:\n{self.screen()}") from None

    def wait_screen(self, needle: str, timeout: float = 20) -> str:
        try:
            return wait_until(lambda: needle in self.screen() and self.screen(), timeout, 0.1,
                              f"{needle!r} on irssi's screen")
        except AssertionError:
            raise AssertionError(f"{needle!r} not on irssi's screen within {timeout}s\n{self.screen()}") from None

    def rawlog(self) -> tuple[list[str], list]:
        """`/rawlog save`: (lines irssi sent, messages it received) so far."""
        path = self.dir / f"raw-{time.monotonic_ns()}.log"
        self.type(f"/rawlog save {path}")
        wait_until(lambda: path.exists() and path.stat().st_size > 0, 20, 0.05, "irssi's raw log")
        time.sleep(0.2)
        raw = path.read_text("utf-8", "replace").splitlines()
        # ">> " what it received, "<< " what it sent
        return [l[3:] for l in raw if l.startswith("<< ")], [parse_irc(l[3:]) for l in raw if l.startswith(">> ")]

    def close(self):
        if self.running():
            self.tmux("kill-server", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_irssi_sasl_join_send_receive_quit(make_ferry, closing, uniq, tls):
    need_tools()
    f = make_ferry("chatirssi")
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve(extra_args=("--chat-listen-tls", f"{HOST}:0"))
    port = s.wait_chat(tls=tls)
    b = closing(s.irc())
    b.register(bob)

    irssi = closing(Irssi(port, alice, tls))
    # logged in (SASL: no password is configured otherwise) and auto-joined to #lobby
    b.wait_for(lambda m: m.command == "JOIN" and m.nick == "alice" and m.param(0) == "#lobby", 30,
               "irssi's JOIN #lobby")
    irssi.wait_screen("SASL authentication succeeded")
    irssi.wait_log("has joined #lobby")

    room = "#irssi-" + ("tls" if tls else "plain")
    irssi.type(f"/join {room}")

    def alice_in_room():
        mark = b.mark()
        b.send(f"NAMES {room}")
        b.expect("366")
        return " ".join(m.text for m in b.since(mark) if m.command == "353" and m.param(2) == room).split()

    names = wait_until(alice_in_room, 20, 0.2, f"irssi in {room}")
    assert names == ["@alice"], names
    b.send(f"JOIN {room}")
    b.expect("366")

    # send (irssi's window is the room now)
    irssi.type(f"hello from irssi {uniq}")
    m = b.wait_for(lambda m: m.command == "PRIVMSG", 20, "irssi's message")
    assert m.nick == "alice" and m.param(0) == room and m.text == f"hello from irssi {uniq}", m

    # receive: room and private
    b.send(f"PRIVMSG {room} :hello from bob {uniq}")
    b.send(f"PRIVMSG alice :private from bob {uniq}")
    irssi.wait_log(f"hello from bob {uniq}")
    logs = irssi.wait_log(f"private from bob {uniq}")
    room_log = (irssi.logs / "ferry" / f"{room}.log")
    assert room_log.exists(), logs
    assert f"hello from bob {uniq}" in room_log.read_text(), logs
    assert f"private from bob {uniq}" not in room_log.read_text(), logs

    # a private message from irssi
    irssi.type(f"/msg bob psst {uniq}")
    m = b.wait_for(lambda m: m.command == "PRIVMSG", 20, "irssi's /msg")
    assert m.nick == "alice" and m.param(0) == "bob" and m.text == f"psst {uniq}", m

    # irssi syncs the channels it joined by itself, slowly (a query every few seconds): MODE
    # #room, WHO #room, MODE #room b, after MODE alice +i. On plaintext, wait for all of them;
    # either way, nothing it sent after registration got 421 (unknown) or another error.
    wanted = [f"MODE {room}", f"WHO {room}", f"MODE {room} b"] if not tls else []

    # The answers that end those queries (its raw log shows a query before the reply to it).
    answers = {"324", "352", "315", "368"} if wanted else set()

    def answered(inc):
        return {m.command for m in inc if room in m.params}

    def raw_when_synced():
        out, inc = irssi.rawlog()
        return (out, inc) if all(w in out for w in wanted) and answers <= answered(inc) else None

    try:
        outgoing, incoming = wait_until(raw_when_synced, 60, 1.0, "irssi's channel sync queries")
    except AssertionError:
        out, inc = irssi.rawlog()
        raise AssertionError(
            f"irssi did not send {wanted} and get {sorted(answers)}; it sent {out}; "
            f"answers about {room}: {sorted(answered(inc))}") from None
    assert "MODE alice +i" in outgoing, outgoing
    welcome = next(i for i, m in enumerate(incoming) if m.command == "001")
    # (before registration irssi sends "JOIN :" to provoke a 451; that one is expected)
    errors = [m for m in incoming[welcome:] if m.command in ("421", "461", "451", "472", "501", "502", "403")]
    assert not errors, f"irssi sent {outgoing}\nand got errors: {[m.raw for m in errors]}"

    # quit: bob sees it once, irssi exits
    mark = b.mark()
    irssi.type(f"/quit bye {uniq}")
    q = b.wait_for(lambda m: m.command == "QUIT" and m.nick == "alice", 20, "irssi's QUIT")
    assert q.text == f"Quit: bye {uniq}", q
    wait_until(lambda: not irssi.running(), 20, 0.1, "irssi to exit")
    b.sync()
    assert len(lines_where(b.since(mark), "QUIT")) == 1, b.since(mark)
    s.stop()
