"""The chat service (DESIGN §8) spoken to with raw IRC lines: registration (PASS, SASL PLAIN,
CAP), the registration burst, rooms, messages, queries, history, timeouts and TLS.

Tests here share one server (module fixture); each uses its own room names, and looks at
nicks as the server assigned them (a second connection of an account is `alice2`)."""

from __future__ import annotations

import re
import signal
import ssl
import time
from types import SimpleNamespace

import pytest

from ferry_e2e import (
    HOST,
    IrcConn,
    db_execute,
    db_query,
    lines_where,
    sasl_plain,
)

pytestmark = pytest.mark.timeout(60)

SERVER_PREFIX = "ferry"
NOTICE_FROM = "ferry!ferry@ferry"


def disable_chat(ferry, name: str):
    """Turn the chat permission off (bit 32 of users.perms): the CLI has no switch for it."""
    assert db_execute(ferry, "UPDATE users SET perms = perms & ~32 WHERE name = ?", (name,)) == 1


@pytest.fixture(scope="module")
def chat(make_ferry):
    f = make_ferry("chat")
    users = {n: f.add_user(n) for n in ("alice", "bob", "carol", "dave")}
    nochat = f.add_user("nochat")
    disable_chat(f, "nochat")
    s = f.serve("limits.failed_login_delay_ms=50")
    s.wait_chat()
    yield SimpleNamespace(ferry=f, server=s, nochat=nochat, **users)
    s.stop(timeout=15)


def connect(chat, closing, user=None, how="pass", **kw) -> IrcConn:
    c = closing(chat.server.irc())
    if user is not None:
        c.register(user, how=how, **kw)
    return c


def nicks_of_353(msgs) -> list[str]:
    out = []
    for m in msgs:
        if m.command == "353":
            out += m.text.split()
    return out


# --------------------------------------------------------------------------- registration


def test_registration_burst_with_pass(chat, closing):
    c = connect(chat, closing)
    c.send(f"PASS alice:{chat.alice.password}")
    c.send("NICK somebody-else")
    c.send("USER whatever 0 * :Alice Liddell")
    w = c.expect("001")
    assert w.prefix == SERVER_PREFIX, w
    nick = w.param(0)
    assert re.fullmatch(r"alice\d*", nick), f"the nick is the account name whatever NICK says: {w}"
    for code in ("002", "003", "004"):
        c.expect(code)
    mark = c.mark()
    c.expect("251")
    isupport = [m for m in c.since(mark) if m.command == "005"]
    assert isupport, c.recent()
    tokens = " ".join(" ".join(m.params[1:-1]) for m in isupport).split()
    for token in ("CASEMAPPING=", "CHANTYPES=", "PREFIX=", "NICKLEN=", "CHANNELLEN=", "TOPICLEN=",
                  "NETWORK="):
        assert any(t.startswith(token) for t in tokens), f"005 lacks {token}: {tokens}"
    assert "UTF8ONLY" in tokens, tokens
    assert "CHANTYPES=#" in tokens and "NETWORK=Ferry" in tokens, tokens
    for code in ("254", "255", "422"):
        c.expect(code)
    join = c.expect("JOIN")
    assert join.nick == nick and join.param(0) == "#lobby", join
    names = c.expect("353")
    assert names.param(2) == "#lobby" and any(n.lstrip("@+") == nick for n in names.text.split()), names
    end = c.expect("366")
    assert end.param(1) == "#lobby", end
    # everything numeric came from the server, addressed to the nick
    numerics = [m for m in c.log if m.command.isdigit()]
    assert all(m.param(0) == nick and m.prefix == SERVER_PREFIX for m in numerics), c.recent(40)


def test_pass_password_with_nick_as_account(chat, closing):
    c = connect(chat, closing)
    c.send(f"PASS {chat.bob.password}")
    c.send("NICK bob")
    c.send("USER b 0 * :Bob")
    w = c.wait_for(lambda m: m.command in ("001", "464", "ERROR"), what="001")
    assert w.command == "001" and re.fullmatch(r"bob\d*", w.param(0)), w


def test_cap_ls_without_302_has_no_values(chat, closing):
    c = connect(chat, closing)
    c.send("CAP LS")
    ls = c.expect("CAP")
    assert ls.params == ["*", "LS", "sasl multi-prefix userhost-in-names"], ls
    c.send("CAP LS 302")
    ls = c.expect("CAP")
    assert ls.param(1) == "LS", ls
    caps = ls.text.split()
    assert "sasl=PLAIN" in caps or any(x.startswith("sasl=") and "PLAIN" in x for x in caps), ls
    assert "multi-prefix" in caps and "userhost-in-names" in caps, ls


def test_sasl_plain_login_then_cap_end(chat, closing):
    c = connect(chat, closing)
    c.send("CAP LS 302")
    c.send("NICK carol")
    c.send("USER carol 0 * :Carol")
    c.expect("CAP")
    c.send("CAP REQ :sasl")
    ack = c.expect("CAP")
    assert ack.param(1) == "ACK" and ack.text.strip() == "sasl", ack
    c.send("AUTHENTICATE PLAIN")
    assert c.expect("AUTHENTICATE").params == ["+"]
    c.send(f"AUTHENTICATE {sasl_plain('carol', chat.carol.password)}")
    logged = c.expect("900")
    assert "carol" in logged.params, logged
    c.expect("903")
    # registration waits for CAP END
    early = c.sync()
    assert not lines_where(early, "001"), f"001 before CAP END: {early}"
    c.send("CAP END")
    w = c.expect("001")
    assert re.fullmatch(r"carol\d*", w.param(0)), w


def test_sasl_with_authzid_equal_to_account(chat, closing):
    c = connect(chat, closing)
    c.send("CAP LS")
    c.expect("CAP")
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send(f"AUTHENTICATE {sasl_plain('dave', chat.dave.password, authzid='dave')}")
    c.expect("903")
    c.send("NICK x")
    c.send("USER x 0 * :x")
    c.send("CAP END")
    assert re.fullmatch(r"dave\d*", c.expect("001").param(0))


def test_sasl_wrong_password_904_then_retry(chat, closing):
    c = connect(chat, closing)
    c.send("CAP LS 302")
    c.expect("CAP")
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send(f"AUTHENTICATE {sasl_plain('alice', 'wrong-' + chat.alice.password)}")
    r = c.wait_for(lambda m: m.command in ("903", "904", "900"), what="904")
    assert r.command == "904", r
    # the connection stays; a correct attempt succeeds
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send(f"AUTHENTICATE {sasl_plain('alice', chat.alice.password)}")
    c.expect("903")
    c.send("NICK alice")
    c.send("USER alice 0 * :A")
    c.send("CAP END")
    c.expect("001")


def test_pass_wrong_password_464_error_close(chat, closing):
    c = connect(chat, closing)
    c.send(f"PASS alice:not-{chat.alice.password}")
    c.send("NICK alice")
    c.send("USER alice 0 * :A")
    r = c.wait_for(lambda m: m.command in ("001", "464"), what="464")
    assert r.command == "464", r
    assert c.closed(10), f"connection kept after a wrong PASS:\n{c.recent()}"
    assert lines_where(c.log, "ERROR"), f"no ERROR before the close:\n{c.recent()}"
    assert not lines_where(c.log, "001")


def test_unknown_account_464(chat, closing):
    c = connect(chat, closing)
    c.send("PASS nobody-here:secret")
    c.send("NICK nobody-here")
    c.send("USER n 0 * :n")
    r = c.wait_for(lambda m: m.command in ("001", "464"), what="464")
    assert r.command == "464", r
    assert c.closed(10)


def test_no_password_refused_without_guests(chat, closing):
    c = connect(chat, closing)
    c.send("NICK someguest")
    c.send("USER g 0 * :Guest")
    r = c.wait_for(lambda m: m.command in ("001", "464"), what="464")
    assert r.command == "464", r
    assert c.closed(10), c.recent()
    assert lines_where(c.log, "ERROR"), c.recent()


def test_account_without_chat_permission_refused(chat, closing):
    c = connect(chat, closing)
    c.send(f"PASS nochat:{chat.nochat.password}")
    c.send("NICK nochat")
    c.send("USER n 0 * :n")
    r = c.wait_for(lambda m: m.command in ("001", "464", "ERROR"), what="a refusal")
    assert r.command != "001", r
    assert c.closed(10), c.recent()
    assert not lines_where(c.log, "001")
    # and over SASL
    c = connect(chat, closing)
    c.send("CAP LS")
    c.expect("CAP")
    c.send("CAP REQ :sasl")
    c.expect("CAP")
    c.send("AUTHENTICATE PLAIN")
    c.expect("AUTHENTICATE")
    c.send(f"AUTHENTICATE {sasl_plain('nochat', chat.nochat.password)}")
    r = c.wait_for(lambda m: m.command in ("903", "904", "ERROR"), what="904")
    assert r.command != "903", r
    try:  # the server may close right after 904
        c.send("NICK nochat")
        c.send("USER n 0 * :n")
        c.send("CAP END")
    except OSError:
        pass
    c.closed(5)
    assert not lines_where(c.log, "001"), c.recent()


def test_caps_userhost_in_names_and_nak(chat, closing):
    c = connect(chat, closing)
    c.send("CAP LS 302")
    c.expect("CAP")
    c.send("CAP REQ :no-such-cap")
    nak = c.expect("CAP")
    assert nak.param(1) == "NAK" and nak.text.strip() == "no-such-cap", nak
    c.send("CAP REQ :multi-prefix userhost-in-names")
    ack = c.expect("CAP")
    assert ack.param(1) == "ACK" and sorted(ack.text.split()) == ["multi-prefix", "userhost-in-names"], ack
    c.send(f"PASS dave:{chat.dave.password}")
    c.send("NICK dave")
    c.send("USER dave 0 * :Dave")
    c.send("CAP END")
    c.expect("001")
    c.expect("366")
    names = nicks_of_353(c.log)
    mine = [n for n in names if n.lstrip("@+").startswith("dave")]
    assert mine and all(re.fullmatch(r"[@+]*dave\d*!dave@127\.0\.0\.1", n) for n in mine), names
    c.send("CAP LIST")
    lst = c.expect("CAP")
    assert lst.param(1) == "LIST" and sorted(lst.text.split()) == ["multi-prefix", "userhost-in-names"], lst


def test_guests_when_allowed(make_ferry, closing, uniq):
    f = make_ferry("chatguests")
    alice = f.add_user("alice")
    s = f.serve("chat.allow_guests=true")
    g = closing(s.irc())
    g.send("NICK visitor")
    g.send("USER visitor 0 * :A visitor")
    w = g.wait_for(lambda m: m.command in ("001", "464", "ERROR"), what="001")
    assert w.command == "001" and w.param(0) == "visitor", w
    g.expect("366")
    # a guest cannot take an account's name
    h = closing(s.irc())
    h.send("NICK alice")
    h.send("USER alice 0 * :not alice")
    r = h.wait_for(lambda m: m.command.isdigit(), what="433")
    assert r.command in ("433", "432"), r
    h.send("NICK alice-not")
    assert h.expect("001").param(0) == "alice-not"
    # accounts still log in, and are told apart in WHOIS
    a = closing(s.irc())
    a.register(alice)
    a.send("WHOIS visitor")
    a.expect("318")
    assert not lines_where(a.log, "330"), a.recent()
    a.send("WHOIS alice")
    a.expect("318")
    assert lines_where(a.log, "330"), a.recent()
    a.send(f"PRIVMSG #lobby :hello guests {uniq}")
    assert g.wait_for(lambda m: m.command == "PRIVMSG").text == f"hello guests {uniq}"
    s.stop()


def test_second_connection_of_an_account_gets_suffix(chat, closing):
    a = connect(chat, closing, chat.bob)
    b = connect(chat, closing, chat.bob)
    assert a.nick != b.nick, (a.nick, b.nick)
    assert re.fullmatch(r"bob\d*", a.nick) and re.fullmatch(r"bob\d+", b.nick), (a.nick, b.nick)
    b.send("NAMES #lobby")
    b.expect("366")
    names = [n.lstrip("@+") for n in nicks_of_353(b.log)]
    assert a.nick in names and b.nick in names, names


def test_nick_change_refused(chat, closing):
    c = connect(chat, closing, chat.carol)
    c.send("NICK mallory")
    got = c.sync()
    assert not lines_where(got, "NICK"), got
    assert any(m.command in ("432", "433", "484", "435", "447") for m in got), got


def test_commands_after_registration_that_belong_before(chat, closing):
    c = connect(chat, closing, chat.carol)
    c.send(f"PASS carol:{chat.carol.password}")
    c.send("USER x 0 * :x")
    got = c.sync()
    assert [m.command for m in got] == ["462", "462"], got


# --------------------------------------------------------------------------- rooms


def test_join_part_names_topic_modes(chat, closing, uniq):
    room = "#r" + uniq[-20:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    a.send(f"JOIN {room}")
    j = a.wait_for(lambda m: m.command == "JOIN" and m.nick == a.nick, what="own JOIN")
    assert j.nick == a.nick and j.param(0).lower() == room.lower(), j
    a.expect("366")
    assert f"@{a.nick}" in nicks_of_353(a.log), f"first joiner is not @: {a.recent()}"
    # no topic yet: no 332 on join, 331 on query
    assert not lines_where(a.log, "332")
    a.send(f"TOPIC {room}")
    assert a.expect("331", "332").command == "331"

    b.send(f"JOIN {room}")
    b.expect("366")
    seen = a.wait_for(lambda m: m.command == "JOIN" and m.nick == b.nick, what="b's JOIN")
    assert seen.param(0).lower() == room.lower()
    names = nicks_of_353(b.since(0))
    assert f"@{a.nick}" in names and b.nick in names, names
    b.send(f"NAMES {room}")
    b.expect("366")

    # TOPIC set by a, seen by both
    a.send(f"TOPIC {room} :all about {uniq}")
    t = b.wait_for(lambda m: m.command == "TOPIC", what="TOPIC")
    assert t.nick == a.nick and t.text == f"all about {uniq}", t
    a.wait_for(lambda m: m.command == "TOPIC")
    b.send(f"TOPIC {room}")
    r = b.expect("332")
    assert r.text == f"all about {uniq}", r
    r = b.expect("333")
    assert r.param(2) == a.nick or r.param(2).startswith(a.nick + "!"), r
    assert r.param(3).isdigit(), r

    # a third joiner gets the topic on join
    c = connect(chat, closing, chat.carol)
    c.send(f"JOIN {room}")
    c.expect("332")
    c.expect("333")
    c.expect("366")

    # modes
    a.send(f"MODE {room}")
    m = a.expect("324")
    assert m.param(1).lower() == room.lower() and m.param(2).startswith("+") and "n" in m.param(2), m
    a.expect("329")
    a.send(f"MODE {room} b")
    assert a.expect("368").param(1).lower() == room.lower()
    a.send(f"MODE {room} +k secret")
    assert a.expect("472", "482", "501").command == "472"
    a.send(f"MODE {a.nick} +i")
    echo = a.expect("MODE")
    assert echo.param(0) == a.nick and echo.param(1) == "+i", echo
    a.send(f"MODE {a.nick}")
    assert "i" in a.expect("221").param(1)
    a.send(f"MODE {a.nick} +z")
    assert a.expect("501").command == "501"
    a.send(f"MODE {b.nick} +i")
    assert a.expect("502").command == "502"

    # PART: seen by the others, once
    mark_b, mark_c = b.mark(), c.mark()
    a.send(f"PART {room} :bye now")
    p = a.expect("PART")
    assert p.nick == a.nick
    b.wait_for(lambda m: m.command == "PART" and m.nick == a.nick, what="a's PART")
    c.wait_for(lambda m: m.command == "PART" and m.nick == a.nick, what="a's PART")
    b.sync()
    c.sync()
    assert len([m for m in b.since(mark_b) if m.command == "PART"]) == 1
    assert len([m for m in c.since(mark_c) if m.command == "PART"]) == 1
    b.send(f"NAMES {room}")
    b.expect("366")
    names = [n.lstrip("@+") for n in nicks_of_353(b.since(mark_b))]
    assert a.nick not in names and b.nick in names and c.nick in names, names
    # PART of a room one is not in
    a.send(f"PART {room}")
    assert a.expect("442", "403").command == "442"


def test_room_names_case_insensitive(chat, closing, uniq):
    room = "#Case" + uniq[-12:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    a.send(f"JOIN {room}")
    a.expect("366")
    b.send(f"JOIN {room.lower()}")
    b.expect("366")
    b.send(f"PRIVMSG {room.upper()} :case {uniq}")
    got = a.wait_for(lambda m: m.command == "PRIVMSG", what="PRIVMSG")
    assert got.text == f"case {uniq}"


def test_messages_to_rooms_and_nicks(chat, closing, uniq):
    room = "#m" + uniq[-20:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    c = connect(chat, closing, chat.carol)
    outsider = connect(chat, closing, chat.dave)
    for x in (a, b, c):
        x.send(f"JOIN {room}")
        x.expect("366")
    marks = {id(x): x.mark() for x in (a, b, c, outsider)}
    a.send(f"PRIVMSG {room} :hello {uniq}")
    a.send(f"NOTICE {room} :notice {uniq}")
    a.sync()
    for x in (b, c):
        got = x.sync()
        pm = lines_where(x.since(marks[id(x)]), "PRIVMSG", f"hello {uniq}")
        nt = lines_where(x.since(marks[id(x)]), "NOTICE", f"notice {uniq}")
        assert len(pm) == 1 and len(nt) == 1, f"{x.nick} got {got}"
        assert pm[0].nick == a.nick and pm[0].param(0).lower() == room.lower()
        assert pm[0].prefix.startswith(f"{a.nick}!"), pm[0]
    assert not [m for m in a.since(marks[id(a)]) if uniq in m.text], "the sender got its own message back"
    outsider.sync()
    assert not [m for m in outsider.since(marks[id(outsider)]) if uniq in m.text], "a non-member got it"

    # private message: only to its target
    mark_c = c.mark()
    a.send(f"PRIVMSG {b.nick} :psst {uniq}")
    got = b.wait_for(lambda m: m.command == "PRIVMSG" and m.text == f"psst {uniq}", what="private message")
    assert got.param(0) == b.nick and got.nick == a.nick, got
    a.sync()
    c.sync()
    assert not [m for m in c.since(mark_c) if "psst" in m.text]

    # errors
    a.send(f"PRIVMSG nosuchnick{uniq[-6:]} :x")
    assert a.expect("401").command == "401"
    a.send("PRIVMSG #no-such-room-xyz :x")
    assert a.expect("403", "401").command in ("403", "401")
    outsider.send(f"PRIVMSG {room} :from outside")
    assert outsider.expect("404").param(1).lower() == room.lower()
    a.send(f"NOTICE nosuchnick{uniq[-6:]} :x")
    a.send("NOTICE #no-such-room-xyz :x")
    got = a.sync()
    assert not [m for m in got if m.command.isdigit()], f"NOTICE got an automatic reply: {got}"
    a.send(f"PRIVMSG {room}")
    assert a.expect("412", "461").command in ("412", "461")
    a.send("PRIVMSG")
    assert a.expect("411", "461").command in ("411", "461")


def test_away(chat, closing, uniq):
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    a.send("AWAY :gone fishing")
    a.expect("306")
    b.send(f"PRIVMSG {a.nick} :are you there {uniq}")
    r = b.expect("301")
    assert r.param(1) == a.nick and r.text == "gone fishing", r
    a.wait_for(lambda m: m.command == "PRIVMSG" and uniq in m.text, what="message while away")
    b.send(f"NOTICE {a.nick} :notice {uniq}")
    assert not lines_where(b.sync(), "301"), "301 for a NOTICE"
    b.send(f"WHOIS {a.nick}")
    b.expect("318")
    assert [m.text for m in b.log if m.command == "301"][-1] == "gone fishing"
    b.send(f"WHO {a.nick}")
    w = b.expect("352")
    assert w.param(6).startswith("G"), w
    a.send("AWAY")
    a.expect("305")
    b.send(f"PRIVMSG {a.nick} :back? {uniq}")
    assert not lines_where(b.sync(), "301")


def test_who_whois_list_ison(chat, closing, uniq):
    room = "#w" + uniq[-20:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    for x in (a, b):
        x.send(f"JOIN {room}")
        x.expect("366")
    a.send(f"TOPIC {room} :topic {uniq}")
    a.expect("TOPIC")
    mark = b.mark()
    b.send(f"WHO {room}")
    end = b.expect("315")
    assert end.param(1).lower() == room.lower()
    who = lines_where(b.since(mark), "352")
    assert sorted(m.param(5) for m in who) == sorted([a.nick, b.nick]), who
    for m in who:
        assert m.param(1).lower() == room.lower(), m
        assert m.param(4) == SERVER_PREFIX or m.param(4), m
    ops = [m for m in who if m.param(5) == a.nick]
    assert "@" in ops[0].param(6), f"the first joiner's WHO flags lack @: {ops[0]}"

    mark = b.mark()
    b.send(f"WHOIS {a.nick}")
    b.expect("318")
    codes = [m.command for m in b.since(mark)]
    for code in ("311", "319", "312", "330", "317", "318"):
        assert code in codes, f"WHOIS lacks {code}: {codes}"
    r311 = lines_where(b.since(mark), "311")[0]
    assert r311.param(1) == a.nick, r311
    r319 = lines_where(b.since(mark), "319")[0]
    assert room.lower() in [r.lstrip("@+").lower() for r in r319.text.split()], r319
    r330 = lines_where(b.since(mark), "330")[0]
    assert r330.param(2) == "alice", r330

    mark = b.mark()
    b.send(f"WHOIS nobody{uniq[-6:]}")
    b.expect("318")
    assert "401" in [m.command for m in b.since(mark)]

    mark = b.mark()
    b.send("LIST")
    b.expect("323")
    rows = {m.param(1).lower(): m for m in lines_where(b.since(mark), "322")}
    assert room.lower() in rows, rows.keys()
    assert rows[room.lower()].param(2) == "2" and rows[room.lower()].text == f"topic {uniq}", rows[room.lower()]
    assert "#lobby" in rows

    b.send(f"ISON {a.nick} nobody{uniq[-6:]} {b.nick}")
    on = b.expect("303").text.split()
    assert sorted(on) == sorted([a.nick, b.nick]), on


def test_ping_pong_and_lusers(chat, closing):
    c = connect(chat, closing, chat.dave)
    c.send("PING :are-you-there")
    p = c.expect("PONG")
    assert p.text == "are-you-there", p
    c.send("PING token2")
    assert c.expect("PONG").text == "token2"
    c.send("LUSERS")
    c.expect("251")
    c.expect("255")
    c.send("MOTD")
    assert c.expect("422", "375").command in ("422", "375")


def test_ping_before_registration_is_answered(chat, closing):
    c = connect(chat, closing)
    c.send("PING :early")
    assert c.expect("PONG").text == "early"


def test_quit_seen_by_others_once(chat, closing, uniq):
    room = "#q" + uniq[-20:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    b = connect(chat, closing, chat.bob)
    c = connect(chat, closing, chat.carol)
    for x in (a, b, c):
        x.send(f"JOIN {room}")
        x.expect("366")
    # b and c share two rooms (#lobby and room) with a: still one QUIT each
    mb, mc = b.mark(), c.mark()
    a.send("QUIT :see you")
    assert a.closed(10), a.recent()
    assert lines_where(a.log, "ERROR"), a.recent()
    for x, mark in ((b, mb), (c, mc)):
        x.wait_for(lambda m: m.command == "QUIT" and m.nick == a.nick, what="a's QUIT")
        x.sync()
        quits = [m for m in x.since(mark) if m.command == "QUIT" and m.nick == a.nick]
        assert len(quits) == 1, quits
        assert quits[0].text == "Quit: see you", quits[0]
    # the nick is free
    b.send(f"ISON {a.nick}")
    assert a.nick not in b.expect("303").text.split()


def test_history_sent_to_joiner(chat, closing, uniq):
    room = "#h" + uniq[-20:].replace("-", "")
    a = connect(chat, closing, chat.alice)
    a.send(f"JOIN {room}")
    a.expect("366")
    texts = [f"line {i} of {uniq}" for i in range(3)]
    for t in texts:
        a.send(f"PRIVMSG {room} :{t}")
    a.sync()
    b = connect(chat, closing, chat.bob)
    b.send(f"JOIN {room}")
    b.expect("366")
    got = b.sync()
    hist = [m for m in got if m.command == "NOTICE" and m.param(0).lower() == room.lower()]
    assert len(hist) == 3, got
    for m, t in zip(hist, texts):
        assert m.prefix == NOTICE_FROM, m
        assert re.fullmatch(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}\] <" + re.escape(a.nick) + "> " + re.escape(t),
                            m.text), m
    # and in the chat log of the database
    rows = db_query(chat.ferry, "SELECT sender, text FROM chat_log WHERE lower(room) = lower(?) ORDER BY id",
                    (room,))
    assert [r[1] for r in rows] == texts, rows


# --------------------------------------------------------------------------- dedicated servers


def test_history_lines_limit(make_ferry, closing, uniq):
    f = make_ferry("chathist")
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve("chat.history_lines=2")
    a = closing(s.irc())
    a.register(alice)
    for i in range(5):
        a.send(f"PRIVMSG #lobby :msg {i}")
    a.sync()
    b = closing(s.irc())
    b.send(f"PASS bob:{bob.password}")
    b.send("NICK bob")
    b.send("USER bob 0 * :B")
    b.expect("366")
    got = b.sync()
    hist = [m.text for m in got if m.command == "NOTICE" and m.prefix == NOTICE_FROM]
    assert len(hist) == 2 and hist[0].endswith("<alice> msg 3") and hist[1].endswith("<alice> msg 4"), got
    s.stop()


def test_registration_timeout(make_ferry, closing):
    f = make_ferry("chatregto")
    f.add_user("alice")
    s = f.serve("chat.registration_timeout_secs=2")
    c = closing(s.irc())
    c.send("NICK alice")  # never completes registration
    t0 = time.monotonic()
    assert c.closed(15), c.recent()
    took = time.monotonic() - t0
    assert 1.0 <= took <= 10, took
    assert not lines_where(c.log, "001")
    s.stop()


def test_ping_timeout_disconnects_silent_client(make_ferry, closing):
    f = make_ferry("chatping")
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve("chat.ping_interval_secs=1", "chat.ping_timeout_secs=2")
    watcher = closing(s.irc())
    watcher.register(bob)
    watcher.start_reader()  # reads all the time, so it answers PINGs (auto_pong)
    silent = closing(s.irc())
    silent.register(alice)
    silent.auto_pong = False
    ping = silent.wait_for("PING", timeout=10)
    assert ping.command == "PING"
    t0 = time.monotonic()
    assert silent.closed(15), silent.recent()
    assert time.monotonic() - t0 >= 1.0
    q = watcher.poll_for(lambda m: m.command == "QUIT" and m.nick == silent.nick, 15, "the silent client's QUIT")
    assert "Ping timeout" in q.text, q
    err = lines_where(silent.log, "ERROR")
    assert err and "Ping timeout" in err[0].text, silent.recent()
    # the watcher, answering, is still here well past interval + timeout
    time.sleep(4)
    watcher.stop_reader()
    assert not watcher.eof, watcher.recent()
    assert lines_where(watcher.log, "PING"), "the watcher was never pinged"
    watcher.sync()
    s.stop()


def test_shutdown_tells_registered_and_registering_clients_and_closes_them(make_ferry, closing):
    """Registered clients are told by the chat's keeper task, one still registering by its own
    wait; neither holds up the exit (the grace period is long here)."""
    f = make_ferry("chatstop")
    alice = f.add_user("alice")
    s = f.serve("limits.shutdown_grace_secs=60")
    reg = closing(s.irc())
    reg.register(alice)
    half = closing(s.irc())
    half.send("NICK halfway")  # never completes registration
    time.sleep(0.3)
    t0 = time.monotonic()
    assert s.stop(signal.SIGTERM, timeout=30) == 0, s.stderr_tail()
    assert time.monotonic() - t0 < 15, "chat clients held up shutdown"
    for c in (reg, half):
        assert c.closed(10), c.recent()
        err = lines_where(c.log, "ERROR")
        assert err and "Server shutting down" in err[0].text, c.recent()


def test_chat_over_tls(make_ferry, closing, uniq):
    f = make_ferry("chattls")
    alice, bob = f.add_user("alice"), f.add_user("bob")
    s = f.serve(extra_args=("--chat-listen-tls", f"{HOST}:0"))
    port = s.wait_chat(tls=True)
    assert port != s.wait_chat()
    a = closing(s.irc(tls=True))
    der = a.sock.getpeercert(binary_form=True)
    assert der == ssl.PEM_cert_to_DER_cert(f.tls_cert.read_text()), "chat-tls does not use D/tls/cert.pem"
    a.register(alice, how="sasl")
    b = closing(s.irc())
    b.register(bob)
    b.send(f"PRIVMSG #lobby :plain {uniq}")
    got = a.wait_for(lambda m: m.command == "PRIVMSG", what="PRIVMSG over TLS")
    assert got.text == f"plain {uniq}" and got.nick == "bob", got
    a.send(f"PRIVMSG #lobby :secure {uniq}")
    got = b.wait_for(lambda m: m.command == "PRIVMSG", what="PRIVMSG from the TLS client")
    assert got.text == f"secure {uniq}" and got.nick == "alice", got
    a.send("QUIT :tls bye")
    q = b.wait_for(lambda m: m.command == "QUIT", what="QUIT")
    assert q.text == "Quit: tls bye", q
    # plaintext on the TLS port is not IRC
    raw = closing(IrcConn(HOST, port, timeout=5))
    raw.send("NICK x")
    raw.send("USER x 0 * :x")
    assert raw.closed(15) or not lines_where(raw.log, "001")
    assert not lines_where(raw.log, "001")
    s.stop()
