"""The chat service with an unmodified IRC client library (the Python `irc` package, jaraco):
two and then fifty clients register (SASL PLAIN for one, PASS for the others), join, list
names, broadcast to a room (each message reaches every other member exactly once), send a
private message, and see each other quit; file activity over FTP (upload, delete, rename)
shows up as NOTICEs in #lobby; `SITE WHO` on the FTP side lists chat users."""

from __future__ import annotations

import ftplib
import functools
import io
import re
import sqlite3
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

irc_client = pytest.importorskip("irc.client", reason="pip install irc")
import irc.connection  # noqa: E402

from ferry_e2e import (  # noqa: E402
    HOST,
    ftp_try,
    tls_client_context,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

NOTICE_FROM = "ferry!ferry@ferry"
SIZE_RE = r"\(\d+(\.\d+)? ?[KMGTPE]?i?B\)"


class LibClient:
    """One `irc` library connection with its own reactor, processed by a thread; every event
    is recorded as (type, source, target, arguments)."""

    def __init__(self, port: int, nick: str, password: str | None = None, sasl_login: str | None = None,
                 tls: bool = False, username: str | None = None):
        self.reactor = irc_client.Reactor()
        self.events: list[SimpleNamespace] = []
        self.raw: list[str] = []
        self.reactor.add_global_handler("all_raw_messages", self._on_raw, -100)
        self.reactor.add_global_handler("all_events", self._on_event, -100)
        if tls:
            ctx = tls_client_context()
            factory = irc.connection.Factory(wrapper=functools.partial(ctx.wrap_socket, server_hostname=HOST))
        else:
            factory = irc.connection.Factory()
        self.conn = self.reactor.server().connect(HOST, port, nick, password=password, username=username,
                                                  sasl_login=sasl_login, connect_factory=factory)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.reactor.process_once(0.05)
            except Exception:  # noqa: BLE001 (a closed socket at the end)
                if self._stop.is_set() or not self.conn.is_connected():
                    return
                raise

    def _on_raw(self, conn, event):
        self.raw.append(event.arguments[0])

    def _on_event(self, conn, event):
        if event.type == "all_raw_messages":
            return
        self.events.append(SimpleNamespace(type=event.type, source=str(event.source or ""),
                                           nick=(event.source.nick if hasattr(event.source, "nick") else ""),
                                           target=event.target, args=list(event.arguments or [])))

    def do(self, fn, *args):
        with self.reactor.mutex:
            return fn(*args)

    @property
    def nick(self) -> str:
        return self.conn.get_nickname()

    def of(self, type_: str, **where) -> list[SimpleNamespace]:
        out = []
        for e in list(self.events):
            if e.type == type_ and all(getattr(e, k) == v for k, v in where.items()):
                out.append(e)
        return out

    def wait(self, type_: str, timeout: float = 20, pred=lambda e: True, **where) -> SimpleNamespace:
        def find():
            for e in self.of(type_, **where):
                if pred(e):
                    return e
            return None
        try:
            return wait_until(find, timeout, 0.02, f"{type_} {where}")
        except AssertionError:
            tail = "\n  ".join(self.raw[-25:])
            raise AssertionError(f"{self.conn.real_nickname}: no {type_} {where} within {timeout}s; "
                                 f"last lines:\n  {tail}") from None

    def barrier(self, timeout: float = 20):
        """PING/PONG round trip: what the server queued for us before has arrived."""
        token = f"b{id(self)}-{time.monotonic_ns()}"
        self.do(self.conn.ping, token)
        self.wait("pong", timeout, lambda e: token in e.args or e.target == token)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        try:
            with self.reactor.mutex:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(scope="module")
def crowd(make_ferry):
    """A server and fifty accounts u00..u49."""
    f = make_ferry("chatlib")
    users = [f.add_user(f"u{i:02d}") for i in range(50)]
    s = f.serve("limits.failed_login_delay_ms=50")
    s.wait_chat()
    yield SimpleNamespace(ferry=f, server=s, users=users)
    s.stop(timeout=15)


def connect_clients(srv, users, closing) -> list[LibClient]:
    """users[0] over SASL PLAIN, odd ones with PASS account:password, the other even ones
    with PASS password and NICK = account."""
    port = srv.server.wait_chat()
    clients = []
    for i, u in enumerate(users):
        if i == 0:
            c = LibClient(port, u.name, password=u.password, sasl_login=u.name)
        elif i % 2:
            c = LibClient(port, "whoever", password=f"{u.name}:{u.password}")
        else:
            c = LibClient(port, u.name, password=u.password)
        clients.append(closing(c))
    for c, u in zip(clients, users):
        c.wait("welcome", 30)
        assert c.nick == u.name, (c.nick, u.name)
        c.wait("endofnames", 30, lambda e: e.args and e.args[0] == "#lobby")
    return clients


@pytest.mark.parametrize("n", [2, 50])
def test_clients_register_join_talk_quit(crowd, closing, uniq, n):
    users = crowd.users[:n]
    clients = connect_clients(crowd, users, closing)
    assert clients[0].of("login_failed") == [], clients[0].of("login_failed")
    room = f"#talk{n}"

    # join, one after the other: everyone sees itself and those after it join
    for c in clients:
        c.do(c.conn.join, room)
        c.wait("endofnames", 30, lambda e: e.args and e.args[0].lower() == room)
    for i, c in enumerate(clients):
        for other in clients[i:]:
            c.wait("join", 30, nick=other.nick, target=room)
        assert not [e for e in c.of("join", target=room) if e.nick in {o.nick for o in clients[:i]}]

    # NAMES: all n, the first joiner as @
    last = clients[-1]
    start = len(last.events)
    last.do(last.conn.names, [room])
    wait_until(lambda: any(e.type == "endofnames" and e.args[0].lower() == room for e in last.events[start:]),
               20, 0.02, "366 for NAMES")
    names = set()
    for e in last.events[start:]:
        if e.type == "namreply" and e.args[1].lower() == room:
            names.update(e.args[2].split())
    assert {x.lstrip("@+") for x in names} == {u.name for u in users}, names
    assert f"@{users[0].name}" in names, names

    # broadcast: each message reaches every other member exactly once, never its sender
    for c in clients:
        c.do(c.conn.privmsg, room, f"from {c.nick} {uniq}")
    for c in clients:
        wait_until(lambda c=c: len([e for e in c.of("pubmsg", target=room) if uniq in e.args[0]]) >= n - 1,
                   60, 0.05, f"{c.nick} to get {n - 1} room messages")
    for c in clients:
        c.barrier()
    for c in clients:
        got = Counter(e.args[0] for e in c.of("pubmsg", target=room) if uniq in e.args[0])
        want = Counter(f"from {o.nick} {uniq}" for o in clients if o is not c)
        assert got == want, f"{c.nick}: got {got}, want {want}"
        for e in c.of("pubmsg", target=room):
            assert e.args[0] == f"from {e.nick} {uniq}", e

    # private message: to one only
    a, z = clients[0], clients[-1]
    a.do(a.conn.privmsg, z.nick, f"just for you {uniq}")
    pm = z.wait("privmsg", 20, lambda e: uniq in e.args[0])
    assert pm.nick == a.nick and pm.target == z.nick and pm.args == [f"just for you {uniq}"], pm
    for c in clients:
        c.barrier()
    for c in clients[:-1]:
        assert not [e for e in c.of("privmsg") if uniq in e.args[0]], c.nick

    # an upload over FTP: a NOTICE in #lobby from the server pseudo-user, to everyone
    uploader = users[1 % n]
    ftp = crowd.server.ftp(uploader)
    try:
        ftp.storbinary(f"STOR up-{uniq}.txt", io.BytesIO(b"0123456789"))
    finally:
        ftp.quit()
    want = re.compile(rf"{uploader.name} uploaded /up-{re.escape(uniq)}\.txt {SIZE_RE}")
    for c in clients:
        e = c.wait("pubnotice", 30, lambda e: want.fullmatch(e.args[0]) is not None, target="#lobby")
        assert e.source == NOTICE_FROM, e

    # QUIT: the others see it once, with the reason
    q = clients[1]
    q.do(q.conn.quit, f"leaving {uniq}")
    for c in clients:
        if c is q:
            continue
        c.wait("quit", 20, nick=q.nick)
    for c in clients:
        if c is not q:
            c.barrier()
            quits = c.of("quit", nick=q.nick)
            assert len(quits) == 1, quits
            assert quits[0].args == [f"Quit: leaving {uniq}"], quits[0]
    for c in clients:
        c.close()


def test_sasl_wrong_password_reported_by_library(crowd, closing):
    u = crowd.users[0]
    c = closing(LibClient(crowd.server.wait_chat(), u.name, password="wrong-" + u.password, sasl_login=u.name))
    e = c.wait("login_failed", 20)
    assert "SASL authentication failed" in str(e.target) + str(e.args), e  # the 904's text
    assert [l for l in c.raw if " 904 " in l], c.raw
    assert not c.of("welcome")


def test_library_client_over_tls(make_ferry, closing, uniq):
    f = make_ferry("chatlibtls")
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve(extra_args=("--chat-listen-tls", f"{HOST}:0"))
    a = closing(LibClient(s.wait_chat(tls=True), "alice", password=alice.password, sasl_login="alice", tls=True))
    b = closing(LibClient(s.wait_chat(), "bob", password=f"bob:{bob.password}"))
    for c in (a, b):
        c.wait("welcome")
        c.wait("endofnames")
    b.do(b.conn.privmsg, "#lobby", f"hi {uniq}")
    e = a.wait("pubmsg", 20, lambda e: uniq in e.args[0])
    assert e.nick == "bob"
    a.do(a.conn.privmsg, "bob", f"secret {uniq}")
    e = b.wait("privmsg", 20, lambda e: uniq in e.args[0])
    assert e.nick == "alice"
    a.do(a.conn.quit, "tls done")
    assert b.wait("quit", 20, nick="alice").args == ["Quit: tls done"]
    s.stop()


# --------------------------------------------------------------------------- file activity


@pytest.fixture(scope="module")
def files(make_ferry):
    f = make_ferry("chatfiles")
    alice, bob, quiet = f.add_user("alice"), f.add_user("bob"), f.add_user("quiet")
    reader = f.add_user("reader", None, "--read-only")
    s = f.serve()
    # per-user opt-out, while the server runs
    f.user_cmd("announce", "quiet", "off")
    s.wait_chat()
    yield SimpleNamespace(ferry=f, server=s, alice=alice, bob=bob, quiet=quiet, reader=reader)
    s.stop(timeout=15)


def notices(conn, since: int) -> list[str]:
    return [m.text for m in conn.since(since) if m.command == "NOTICE" and m.prefix == NOTICE_FROM
            and m.param(0) == "#lobby"]


def test_upload_delete_rename_announced(files, closing, uniq):
    w = closing(files.server.irc())
    w.register(files.bob)
    mark = w.mark()
    ftp = files.server.ftp(files.alice)
    try:
        ftp.mkd(f"dir-{uniq}")
        ftp.storbinary(f"STOR dir-{uniq}/a.bin", io.BytesIO(b"x" * 3000))
        ftp.rename(f"dir-{uniq}/a.bin", f"dir-{uniq}/b.bin")
        ftp.delete(f"dir-{uniq}/b.bin")
        ftp.storbinary(f"APPE app-{uniq}.txt", io.BytesIO(b"abc"))
    finally:
        ftp.quit()
    w.wait_for(lambda m: m.command == "NOTICE" and f"app-{uniq}" in m.text, 20, "the APPE notice")
    w.sync()
    got = [t for t in notices(w, mark) if uniq in t]
    assert len(got) == 4, got
    assert re.fullmatch(rf"alice uploaded /dir-{uniq}/a\.bin {SIZE_RE}", got[0]), got[0]
    assert "2.9 KiB" in got[0] or "3000" in got[0] or "3.0 KB" in got[0], got[0]
    assert got[1] == f"alice renamed /dir-{uniq}/a.bin to /dir-{uniq}/b.bin", got[1]
    assert got[2] == f"alice deleted /dir-{uniq}/b.bin", got[2]
    assert re.fullmatch(rf"alice uploaded /app-{uniq}\.txt {SIZE_RE}", got[3]), got[3]


def test_a_burst_of_uploads_is_announced_in_order_and_logged_in_full(files, closing, uniq):
    # More uploads than one chat-log insert takes (256), within a few announcement windows.
    w = closing(files.server.irc())
    w.register(files.bob)
    mark = w.mark()
    n = 300
    ftp = files.server.ftp(files.alice)
    try:
        ftp.mkd(f"burst-{uniq}")
        for i in range(n):
            ftp.storbinary(f"STOR burst-{uniq}/f{i:03}.bin", io.BytesIO(b"b"))
    finally:
        ftp.quit()
    w.wait_for(lambda m: m.command == "NOTICE" and f"burst-{uniq}/f{n - 1:03}" in m.text, 30, "the last notice")
    w.sync()
    got = [t for t in notices(w, mark) if f"burst-{uniq}/" in t]
    assert [re.search(r"/f(\d{3})\.bin", t).group(1) for t in got] == [f"{i:03}" for i in range(n)]

    def logged():
        with sqlite3.connect(f"file:{files.ferry.data_dir / 'ferry.db'}?mode=ro", uri=True, timeout=10) as db:
            return db.execute("SELECT count(*) FROM chat_log WHERE text LIKE ?",
                              (f"alice uploaded /burst-{uniq}/%",)).fetchone()[0]

    wait_until(lambda: logged() == n, 10, what=f"{n} lines in the chat log")


def test_failed_upload_not_announced_and_opt_out(files, closing, uniq):
    w = closing(files.server.irc())
    w.register(files.bob)
    mark = w.mark()
    # refused upload (read-only account): nothing to announce
    ftp = files.server.ftp(files.reader)
    try:
        with pytest.raises(ftplib.error_perm):
            ftp.storbinary(f"STOR ro-{uniq}.txt", io.BytesIO(b"no"))
    finally:
        ftp.quit()
    # the opted-out user's upload: not announced
    ftp = files.server.ftp(files.quiet)
    try:
        ftp.storbinary(f"STOR quiet-{uniq}.txt", io.BytesIO(b"shh"))
        ftp.delete(f"quiet-{uniq}.txt")
    finally:
        ftp.quit()
    # then one that is: it arrives, and nothing before it
    ftp = files.server.ftp(files.alice)
    try:
        ftp.storbinary(f"STOR loud-{uniq}.txt", io.BytesIO(b"hey"))
    finally:
        ftp.quit()
    w.wait_for(lambda m: m.command == "NOTICE" and f"loud-{uniq}" in m.text, 20, "alice's notice")
    w.sync()
    got = [t for t in notices(w, mark) if uniq in t]
    assert len(got) == 1 and got[0].startswith("alice uploaded"), got


def test_file_notices_in_history(files, closing, uniq):
    live = closing(files.server.irc())
    live.register(files.bob)
    ftp = files.server.ftp(files.alice)
    try:
        ftp.storbinary(f"STOR hist-{uniq}.txt", io.BytesIO(b"h"))
    finally:
        ftp.quit()
    live.wait_for(lambda m: m.command == "NOTICE" and f"hist-{uniq}" in m.text, 20, "the live notice")
    time.sleep(0.3)  # it is written to the chat log right after it is sent
    w = closing(files.server.irc())
    w.register(files.bob)
    hist = [m.text for m in w.log if m.command == "NOTICE" and m.prefix == NOTICE_FROM and f"hist-{uniq}" in m.text]
    assert len(hist) == 1, hist
    assert re.fullmatch(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}\] <ferry> alice uploaded /hist-" + re.escape(uniq)
                        + r"\.txt " + SIZE_RE, hist[0]), hist[0]


def test_site_who_lists_ftp_and_chat_users(files, closing):
    w = closing(files.server.irc())
    w.register(files.bob)
    ftp = files.server.ftp(files.alice)
    try:
        code, text = ftp_try(ftp, "SITE WHO")
    finally:
        ftp.quit()
    assert 200 <= code < 300, f"SITE WHO: {text}"
    assert "alice" in text and "bob" in text, text
    lines = text.splitlines()
    assert len(lines) > 1, f"expected a multi-line reply: {text}"
    chat_lines = [l for l in lines if "bob" in l]
    ftp_lines = [l for l in lines if "alice" in l]
    assert chat_lines and ftp_lines, text
