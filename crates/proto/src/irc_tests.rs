//! Tests of the IRC line codec: split and join tables modelled on the public IRC parser test
//! vectors, the length bounds, injection and truncation of encoded lines, name rules, and
//! never-panics / round-trip properties.

use super::*;
use proptest::prelude::*;

fn msg(
    tags: &[(&str, Option<&str>)],
    prefix: Option<&str>,
    command: &str,
    params: &[&str],
) -> Message {
    Message {
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect(),
        prefix: prefix.map(str::to_owned),
        command: command.to_owned(),
        params: params.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn parse_str(line: &str) -> Result<Message, IrcError> {
    parse(line.as_bytes())
}

#[test]
fn split_table() {
    let cases: Vec<(&str, Message)> = vec![
        // Simple commands and parameters; command letters are upper-cased.
        ("foo bar baz asdf", msg(&[], None, "FOO", &["bar", "baz", "asdf"])),
        ("COMMAND", msg(&[], None, "COMMAND", &[])),
        ("ping", msg(&[], None, "PING", &[])),
        // Prefixes.
        (
            ":coolguy foo bar baz asdf",
            msg(&[], Some("coolguy"), "FOO", &["bar", "baz", "asdf"]),
        ),
        (
            ":nick!user@host.example PRIVMSG #chan :hello there",
            msg(
                &[],
                Some("nick!user@host.example"),
                "PRIVMSG",
                &["#chan", "hello there"],
            ),
        ),
        (
            ":cool\tguy foo bar baz",
            msg(&[], Some("cool\tguy"), "FOO", &["bar", "baz"]),
        ),
        (
            ":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz",
            msg(
                &[],
                Some("coolguy!ag@net\x035w\x03ork.admin"),
                "PRIVMSG",
                &["foo", "bar baz"],
            ),
        ),
        (
            ":coolguy!~ag@n\x02et\x0305w\x0fork.admin PRIVMSG foo :bar baz",
            msg(
                &[],
                Some("coolguy!~ag@n\x02et\x0305w\x0fork.admin"),
                "PRIVMSG",
                &["foo", "bar baz"],
            ),
        ),
        // Trailing parameters: spaces, colons, empty.
        ("foo bar baz :asdf quux", msg(&[], None, "FOO", &["bar", "baz", "asdf quux"])),
        ("foo bar baz :", msg(&[], None, "FOO", &["bar", "baz", ""])),
        ("foo bar baz ::asdf", msg(&[], None, "FOO", &["bar", "baz", ":asdf"])),
        (
            ":coolguy foo bar baz :asdf quux",
            msg(&[], Some("coolguy"), "FOO", &["bar", "baz", "asdf quux"]),
        ),
        (
            ":coolguy foo bar baz :  asdf quux ",
            msg(&[], Some("coolguy"), "FOO", &["bar", "baz", "  asdf quux "]),
        ),
        (
            ":coolguy PRIVMSG bar :lol :) ",
            msg(&[], Some("coolguy"), "PRIVMSG", &["bar", "lol :) "]),
        ),
        (":coolguy foo bar baz :", msg(&[], Some("coolguy"), "FOO", &["bar", "baz", ""])),
        (
            ":coolguy foo bar baz :  ",
            msg(&[], Some("coolguy"), "FOO", &["bar", "baz", "  "]),
        ),
        (":src JOIN #chan", msg(&[], Some("src"), "JOIN", &["#chan"])),
        (":src JOIN :#chan", msg(&[], Some("src"), "JOIN", &["#chan"])),
        // Missing trailing, trailing spaces, runs of spaces.
        (":src AWAY", msg(&[], Some("src"), "AWAY", &[])),
        (":src AWAY ", msg(&[], Some("src"), "AWAY", &[])),
        (
            ":gravel.mozilla.org MODE #tckk +n ",
            msg(&[], Some("gravel.mozilla.org"), "MODE", &["#tckk", "+n"]),
        ),
        (
            ":services.esper.net MODE #foo-bar +o foobar  ",
            msg(
                &[],
                Some("services.esper.net"),
                "MODE",
                &["#foo-bar", "+o", "foobar"],
            ),
        ),
        ("  :src   PING   a    b", msg(&[], Some("src"), "PING", &["a", "b"])),
        // Numerics are kept as given.
        (
            ":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters",
            msg(
                &[],
                Some("gravel.mozilla.org"),
                "432",
                &["#momo", "Erroneous Nickname: Illegal characters"],
            ),
        ),
        (
            ":irc.example 001 alice :Welcome to Ferry",
            msg(&[], Some("irc.example"), "001", &["alice", "Welcome to Ferry"]),
        ),
        // A middle parameter may contain ':' after its first character.
        (
            "PRIVMSG #a:b c:d :e:f",
            msg(&[], None, "PRIVMSG", &["#a:b", "c:d", "e:f"]),
        ),
        (":SomeOp MODE #channel :+i", msg(&[], Some("SomeOp"), "MODE", &["#channel", "+i"])),
        (
            ":SomeOp MODE #channel +oo SomeUser :AnotherUser",
            msg(
                &[],
                Some("SomeOp"),
                "MODE",
                &["#channel", "+oo", "SomeUser", "AnotherUser"],
            ),
        ),
        // Tags.
        (
            "@a=b;c=32;k;rt=ql7 foo",
            msg(
                &[("a", Some("b")), ("c", Some("32")), ("k", None), ("rt", Some("ql7"))],
                None,
                "FOO",
                &[],
            ),
        ),
        (
            "@a=b\\\\and\\nk;c=72\\s45;d=gh\\:764 foo",
            msg(
                &[("a", Some("b\\and\nk")), ("c", Some("72 45")), ("d", Some("gh;764"))],
                None,
                "FOO",
                &[],
            ),
        ),
        (
            "@c;h=;a=b :quux ab cd",
            msg(
                &[("c", None), ("h", Some("")), ("a", Some("b"))],
                Some("quux"),
                "AB",
                &["cd"],
            ),
        ),
        (
            "@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4= :irc.example.com COMMAND param1 param2 :param3 param3",
            msg(
                &[
                    ("tag1", Some("value1")),
                    ("tag2", None),
                    ("vendor1/tag3", Some("value2")),
                    ("vendor2/tag4", Some("")),
                ],
                Some("irc.example.com"),
                "COMMAND",
                &["param1", "param2", "param3 param3"],
            ),
        ),
        (
            "@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4 COMMAND param1 param2 :param3 param3",
            msg(
                &[
                    ("tag1", Some("value1")),
                    ("tag2", None),
                    ("vendor1/tag3", Some("value2")),
                    ("vendor2/tag4", None),
                ],
                None,
                "COMMAND",
                &["param1", "param2", "param3 param3"],
            ),
        ),
        (
            "@+draft/reply=abc;time=2024-01-01T00:00:00.000Z :n!u@h TAGMSG #c",
            msg(
                &[("+draft/reply", Some("abc")), ("time", Some("2024-01-01T00:00:00.000Z"))],
                Some("n!u@h"),
                "TAGMSG",
                &["#c"],
            ),
        ),
        // Every escape, then the broken ones: unknown escapes and a lone final backslash.
        (
            "@foo=\\\\\\\\\\:\\\\s\\s\\r\\n COMMAND",
            msg(&[("foo", Some("\\\\;\\s \r\n"))], None, "COMMAND", &[]),
        ),
        ("@tag1=value\\\\ntest COMMAND", msg(&[("tag1", Some("value\\ntest"))], None, "COMMAND", &[])),
        ("@tag1=value\\1 COMMAND", msg(&[("tag1", Some("value1"))], None, "COMMAND", &[])),
        ("@tag1=value1\\ COMMAND", msg(&[("tag1", Some("value1"))], None, "COMMAND", &[])),
        ("@tag1=\\ COMMAND", msg(&[("tag1", Some(""))], None, "COMMAND", &[])),
        // Duplicate keys are all kept, in order (IRCv3: the last one wins).
        (
            "@tag1=1;tag2=3;tag3=4;tag1=5 COMMAND",
            msg(
                &[
                    ("tag1", Some("1")),
                    ("tag2", Some("3")),
                    ("tag3", Some("4")),
                    ("tag1", Some("5")),
                ],
                None,
                "COMMAND",
                &[],
            ),
        ),
        // Empty tag entries and empty keys are skipped; '=' may appear inside a value.
        (
            "@;a=b=c;;=x; PING",
            msg(&[("a", Some("b=c"))], None, "PING", &[]),
        ),
        ("@ PING", msg(&[], None, "PING", &[])),
        // A stray CR (or CRLF) at the end is tolerated; elsewhere it is data.
        ("PING :x\r", msg(&[], None, "PING", &["x"])),
        ("PING :x\r\n", msg(&[], None, "PING", &["x"])),
        ("PING x\r", msg(&[], None, "PING", &["x"])),
        ("PING :a\rb", msg(&[], None, "PING", &["a\rb"])),
        // An empty prefix is an empty prefix.
        (": PING", msg(&[], Some(""), "PING", &[])),
    ];
    for (line, want) in cases {
        assert_eq!(parse_str(line), Ok(want), "line {line:?}");
    }
}

#[test]
fn errors_table() {
    let cases: &[(&[u8], IrcError)] = &[
        (b"", IrcError::Empty),
        (b"\r", IrcError::Empty),
        (b"\r\n", IrcError::Empty),
        (b"    ", IrcError::Empty),
        (b":prefix", IrcError::NoCommand),
        (b":prefix   ", IrcError::NoCommand),
        (b"@a=b", IrcError::NoCommand),
        (b"@a=b ", IrcError::NoCommand),
        (b"@a=b :prefix ", IrcError::NoCommand),
        (b"PRIV1MSG #a", IrcError::BadCommand),
        (b"PRIV-MSG #a", IrcError::BadCommand),
        (b"12 x", IrcError::BadCommand),
        (b"1234 x", IrcError::BadCommand),
        (b"0a1", IrcError::BadCommand),
        (b" @a=b PING", IrcError::BadCommand),
        (b"PRIVMSG #a :\xff", IrcError::NotUtf8),
        (b"PRIVMSG #a :caf\xc3", IrcError::NotUtf8),
        (b"@a=\xff PING", IrcError::NotUtf8),
        (b":\xfe PING", IrcError::NotUtf8),
    ];
    for (line, want) in cases {
        assert_eq!(
            parse(line),
            Err(want.clone()),
            "line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn fifteen_params_parse_and_sixteen_do_not() {
    let fifteen = format!("CMD{}", " p".repeat(15));
    assert_eq!(parse_str(&fifteen).map(|m| m.params.len()), Ok(15));
    let fourteen_and_trailing = format!("CMD{} :a b", " p".repeat(14));
    assert_eq!(
        parse_str(&fourteen_and_trailing).map(|m| m.params.len()),
        Ok(15)
    );
    assert_eq!(
        parse_str(&format!("{fifteen} q")),
        Err(IrcError::TooManyParams)
    );
    assert_eq!(
        parse_str(&format!("{fifteen} :a b")),
        Err(IrcError::TooManyParams)
    );
    assert_eq!(
        parse_str(&format!("{fifteen} :")),
        Err(IrcError::TooManyParams)
    );
    // Trailing spaces are not a sixteenth parameter.
    assert_eq!(
        parse_str(&format!("{fifteen}    ")).map(|m| m.params.len()),
        Ok(15)
    );
}

#[test]
fn line_of_510_bytes_parses_and_511_is_too_long() {
    let fits = format!("PRIVMSG #a :{}", "x".repeat(MAX_LINE - 2 - 12));
    assert_eq!(fits.len(), 510);
    assert!(parse_str(&fits).is_ok());
    assert!(
        parse_str(&format!("{fits}\r")).is_ok(),
        "a stray CR does not count"
    );
    assert!(parse_str(&format!("{fits}\r\n")).is_ok());
    assert_eq!(parse_str(&format!("{fits}x")), Err(IrcError::TooLong));
    // Over-long is reported before (and instead of) bad UTF-8.
    let mut long = fits.into_bytes();
    long.push(0xff);
    assert_eq!(parse(&long), Err(IrcError::TooLong));
}

#[test]
fn tags_do_not_count_toward_max_line_and_have_their_own_bound() {
    let body = format!("PRIVMSG #a :{}", "x".repeat(MAX_LINE - 2 - 12));
    // "@k=" + value + " " is exactly MAX_TAGS bytes.
    let value = "v".repeat(MAX_TAGS - 4);
    let line = format!("@k={value} {body}");
    let parsed = parse_str(&line).expect("tags at the bound");
    assert_eq!(parsed.tags, vec![("k".to_owned(), Some(value.clone()))]);
    assert_eq!(parsed.params[1].len(), 498);
    assert_eq!(
        parse_str(&format!("@k={value}v {body}")),
        Err(IrcError::TagsTooLong)
    );
    assert_eq!(
        parse_str(&format!("@k={value}vv")),
        Err(IrcError::TagsTooLong)
    );
    assert_eq!(
        parse_str(&format!("@k={value} {body}y")),
        Err(IrcError::TooLong)
    );
}

#[test]
fn join_table() {
    let cases: Vec<(Message, &str)> = vec![
        (
            Message::new("foo", ["bar", "baz", "asdf"]),
            "FOO bar baz asdf\r\n",
        ),
        (
            Message::new("AWAY", Vec::<String>::new()).with_prefix("src"),
            ":src AWAY\r\n",
        ),
        (
            Message::new("foo", ["bar", "baz", "asdf quux"]),
            "FOO bar baz :asdf quux\r\n",
        ),
        (Message::new("foo", ["bar", "baz", ""]), "FOO bar baz :\r\n"),
        (
            Message::new("foo", ["bar", "baz", ":asdf"]),
            "FOO bar baz ::asdf\r\n",
        ),
        (
            Message::new("foo", ["bar", "baz", "a:sdf"]),
            "FOO bar baz a:sdf\r\n",
        ),
        (
            Message::new("foo", ["bar", "baz", "  asdf quux "]).with_prefix("coolguy"),
            ":coolguy FOO bar baz :  asdf quux \r\n",
        ),
        (
            Message::new("PRIVMSG", ["#chan", "hello"]).with_prefix("nick!user@host"),
            ":nick!user@host PRIVMSG #chan hello\r\n",
        ),
        (
            Message::new("001", ["alice", "Welcome to Ferry"]).with_prefix("irc.example"),
            ":irc.example 001 alice :Welcome to Ferry\r\n",
        ),
        // Non-last parameters that cannot be middles become '*'.
        (
            Message::new("X", ["", "a b", ":c", "d:e", "last"]),
            "X * * * d:e last\r\n",
        ),
        (
            msg(
                &[
                    ("a", Some("b")),
                    ("c", Some("32")),
                    ("k", None),
                    ("h", Some("")),
                ],
                None,
                "FOO",
                &[],
            ),
            "@a=b;c=32;k;h= FOO\r\n",
        ),
        (
            msg(
                &[
                    ("a", Some("b\\and\nk")),
                    ("c", Some("72 45")),
                    ("d", Some("gh;764")),
                    ("r", Some("\r\0")),
                ],
                Some("n!u@h"),
                "FOO",
                &["x"],
            ),
            "@a=b\\\\and\\nk;c=72\\s45;d=gh\\:764;r=\\r\\s :n!u@h FOO x\r\n",
        ),
        // Empty keys are skipped; unsafe key characters become '_'; no sendable tag, no '@'.
        (msg(&[("", Some("x"))], None, "PING", &[]), "PING\r\n"),
        (
            msg(&[("a b;c=d", Some("v"))], None, "PING", &[]),
            "@a_b_c_d=v PING\r\n",
        ),
        // Spaces in the prefix and command cannot split the line structure; no command is '*'.
        (
            msg(&[], Some("evil PRIVMSG"), "PING", &[]),
            ":evil_PRIVMSG PING\r\n",
        ),
        (msg(&[], None, "PING X", &["y"]), "PING_X y\r\n"),
        (msg(&[], None, "", &["y"]), "* y\r\n"),
        (msg(&[], Some(""), "PING", &[]), ": PING\r\n"),
    ];
    for (message, want) in cases {
        assert_eq!(message.to_line(), want, "message {message:?}");
        let mut out = b"before".to_vec();
        message.encode(&mut out);
        assert_eq!(out, [b"before", want.as_bytes()].concat(), "encode appends");
    }
}

#[test]
fn new_upper_cases_the_command_and_param_reads_by_index() {
    let m = Message::new("privmsg", vec!["#a".to_owned(), "hi".to_owned()]);
    assert_eq!(m.command, "PRIVMSG");
    assert_eq!(m.param(0), Some("#a"));
    assert_eq!(m.param(1), Some("hi"));
    assert_eq!(m.param(2), None);
    assert_eq!(m.prefix, None);
    assert!(m.tags.is_empty());
}

#[test]
fn crlf_in_a_param_stays_on_one_line() {
    let m = Message::new("PRIVMSG", ["#a", "hi\r\nQUIT :bye"]).with_prefix("alice");
    let line = m.to_line();
    assert_eq!(line, ":alice PRIVMSG #a :hi  QUIT :bye\r\n");
    assert_eq!(line.matches(['\r', '\n']).count(), 2, "only the final CRLF");
    let back = parse_str(&line).expect("one valid line");
    assert_eq!(back.command, "PRIVMSG");
    assert_eq!(back.params, ["#a", "hi  QUIT :bye"]);
}

#[test]
fn crlf_and_nul_anywhere_never_inject_a_second_line() {
    let evil = "x\r\nQUIT :pwned\n\0";
    let m = Message {
        tags: vec![(evil.to_owned(), Some(evil.to_owned()))],
        prefix: Some(evil.to_owned()),
        command: evil.to_owned(),
        params: vec![evil.to_owned(), evil.to_owned()],
    };
    let line = m.to_line();
    assert!(line.ends_with("\r\n"));
    let body = &line[..line.len() - 2];
    assert!(!body.contains(['\r', '\n', '\0']), "{line:?}");
    // The middle param became '*' and the last one is a single trailing param.
    assert!(body.ends_with(" * :x  QUIT :pwned  "), "{line:?}");
}

#[test]
fn newline_in_last_param_without_spaces_gets_a_colon() {
    let m = Message::new("PRIVMSG", ["#a", "hi\nQUIT"]);
    assert_eq!(m.to_line(), "PRIVMSG #a :hi QUIT\r\n");
    assert_eq!(
        parse_str(&m.to_line()).map(|m| m.params),
        Ok(vec!["#a".into(), "hi QUIT".into()])
    );
}

#[test]
fn long_line_is_cut_to_512_bytes_on_a_char_boundary() {
    // "PRIVMSG #abc " is 13 bytes; 497 bytes remain, so the 249th 'é' (2 bytes) cannot fit.
    let m = Message::new("PRIVMSG", ["#abc".to_owned(), "é".repeat(300)]);
    let line = m.to_line();
    assert_eq!(line.len(), 511);
    assert!(line.ends_with("é\r\n"));
    let back = parse_str(&line).expect("truncated line parses");
    assert_eq!(back.params[1], "é".repeat(248));

    // ASCII fills the 510 bytes exactly.
    let line = Message::new("PRIVMSG", ["#ab".to_owned(), "x".repeat(1000)]).to_line();
    assert_eq!(line.len(), MAX_LINE);
    assert!(parse_str(&line).is_ok());

    // A 4-byte char straddling the bound is dropped whole.
    let text = format!("{}🦀🦀", "x".repeat(495));
    let line = Message::new("PRIVMSG", ["#abc".to_owned(), text]).to_line();
    assert_eq!(line.len(), 13 + 495 + 2);
    assert!(std::str::from_utf8(line.as_bytes()).is_ok());
}

#[test]
fn truncation_does_not_count_tags() {
    let m = Message {
        tags: vec![("k".to_owned(), Some("v".repeat(1000)))],
        ..Message::new("PRIVMSG", ["#ab".to_owned(), "x".repeat(1000)])
    };
    let line = m.to_line();
    let tags_len = line.find(' ').expect("tags section") + 1;
    assert_eq!(tags_len, 1004);
    assert_eq!(line.len() - tags_len, MAX_LINE);
    assert_eq!(parse_str(&line).map(|m| m.tags), Ok(m.tags.clone()));
}

#[test]
fn tags_past_max_tags_are_dropped_on_encode() {
    let big = "v".repeat(MAX_TAGS - 10);
    let m = Message {
        tags: vec![
            ("a".to_owned(), Some(big.clone())),
            ("b".to_owned(), Some("12345678".to_owned())),
            ("c".to_owned(), None),
        ],
        ..Message::new("PING", ["x"])
    };
    let line = m.to_line();
    // "@a=" + big is MAX_TAGS - 7 bytes: ";b=12345678" does not fit, and "c" after it is dropped.
    assert_eq!(line, format!("@a={big} PING x\r\n"));
    // Escaping that grows a value is counted.
    let m = Message {
        tags: vec![("a".to_owned(), Some(" ".repeat(MAX_TAGS / 2)))],
        ..Message::new("PING", ["x"])
    };
    assert_eq!(m.to_line(), "PING x\r\n");
    // At the bound exactly, the tag is kept.
    let m = Message {
        tags: vec![("k".to_owned(), Some("v".repeat(MAX_TAGS - 4)))],
        ..Message::new("PING", ["x"])
    };
    let line = m.to_line();
    assert_eq!(line.find(' '), Some(MAX_TAGS - 1));
    assert_eq!(parse_str(&line), Ok(m));
}

#[test]
fn split_table_lines_round_trip_through_encode() {
    for line in [
        ":coolguy foo bar baz :  asdf quux ",
        "@a=b\\\\and\\nk;c=72\\s45;d=gh\\:764 foo",
        "@c;h=;a=b :quux ab cd",
        ":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters",
        "foo bar baz :",
    ] {
        let m = parse_str(line).expect("valid");
        assert_eq!(parse_str(&m.to_line()), Ok(m.clone()), "line {line:?}");
    }
}

#[test]
fn fold_table() {
    for (name, folded) in [
        ("Alice", "alice"),
        ("#Lobby", "#lobby"),
        ("Nick[a]", "nick{a}"),
        ("back\\slash~", "back|slash^"),
        ("{}|^", "{}|^"),
        ("[]\\~", "{}|^"),
        ("Émile", "Émile"),
        ("", ""),
    ] {
        assert_eq!(fold(name), folded, "name {name:?}");
    }
    assert_eq!(fold("FOO[]\\~"), fold("foo{}|^"));
    assert_ne!(fold("a"), fold("b"));
}

#[test]
fn nick_validity_table() {
    for good in [
        "a",
        "alice",
        "Alice_99",
        "[away]",
        "`tick",
        "^caret",
        "{brace}|pipe",
        "a-b",
        "bob.smith",
        "9lives",
        "0",
        &"n".repeat(32),
    ] {
        assert!(is_valid_nick(good), "{good:?} should be valid");
    }
    for bad in [
        "",
        "-dash",
        ".dot",
        "a b",
        "a,b",
        "a:b",
        "a!b",
        "a@b",
        "#chan",
        "émile",
        "a\0",
        &"n".repeat(33),
    ] {
        assert!(!is_valid_nick(bad), "{bad:?} should be invalid");
    }
}

#[test]
fn channel_validity_table() {
    for good in [
        "#a",
        "#lobby",
        "#foo-bar",
        "#Ünïcode",
        "##",
        &format!("#{}", "c".repeat(49)),
        &format!("#{}", "é".repeat(49)),
    ] {
        assert!(is_valid_channel(good), "{good:?} should be valid");
    }
    for bad in [
        "",
        "#",
        "lobby",
        "&local",
        "#a b",
        "#a,b",
        "#a\x07",
        "#a\0",
        "#a\r",
        "#a\n",
        "#a:b",
        &format!("#{}", "c".repeat(50)),
    ] {
        assert!(!is_valid_channel(bad), "{bad:?} should be invalid");
    }
}

#[test]
fn errors_read_lowercase_without_a_period() {
    for e in [
        IrcError::Empty,
        IrcError::TooLong,
        IrcError::TagsTooLong,
        IrcError::NoCommand,
        IrcError::BadCommand,
        IrcError::NotUtf8,
        IrcError::TooManyParams,
    ] {
        let text = e.to_string();
        assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }
}

/// Lines built from IRC-ish pieces, so that the parser's branches are actually reached.
fn ircish_line() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"@".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"  ".to_vec()),
        Just(b";".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\s".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"PRIVMSG".to_vec()),
        Just(b"001".to_vec()),
        Just(b"#chan".to_vec()),
        Just(b"nick!user@host".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(b"\xc3".to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
        "[a-z]{1,6}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn assert_reencodes(line: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(first) = parse(line) {
        let encoded = first.to_line();
        prop_assert!(encoded.ends_with("\r\n"));
        prop_assert_eq!(encoded.matches(['\r', '\n']).count(), 2);
        let second = parse(encoded.as_bytes());
        prop_assert!(
            second.is_ok(),
            "{:?} -> {:?} -> {:?}",
            first,
            encoded,
            second
        );
        let second = second.unwrap_or_else(|_| first.clone());
        // One round makes a message safe: from then on encode and parse are inverse.
        prop_assert_eq!(parse(second.to_line().as_bytes()), Ok(second));
    }
    Ok(())
}

/// Middle parameters: non-empty, no space/CR/LF/NUL, not starting with ':'.
fn middle() -> impl Strategy<Value = String> {
    "[^ \r\n\0:][^ \r\n\0]{0,12}"
}

/// A message whose every field encodes unchanged.
fn safe_message() -> impl Strategy<Value = Message> {
    let tags = prop::collection::vec(
        (
            "\\+?([a-z]{1,6}/)?[a-z0-9-]{1,10}",
            prop::option::of("[^\0]{0,16}"),
        ),
        0..5,
    );
    let prefix = prop::option::of("[^ \r\n\0]{0,20}");
    let command = prop_oneof!["[A-Z]{1,10}", "[0-9]{3}"];
    let params = (
        prop::collection::vec(middle(), 0..14),
        prop::option::of("[^\r\n\0]{0,40}"),
    )
        .prop_map(|(mut middles, last)| {
            middles.extend(last);
            middles
        });
    (tags, prefix, command, params).prop_map(|(tags, prefix, command, params)| Message {
        tags,
        prefix,
        command,
        params,
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(line in prop::collection::vec(any::<u8>(), 0..1200)) {
        let _ = parse(&line);
        assert_reencodes(&line)?;
    }

    #[test]
    fn parse_never_panics_on_ircish_lines(line in ircish_line()) {
        assert_reencodes(&line)?;
    }

    #[test]
    fn safe_messages_round_trip(m in safe_message()) {
        let mut out = Vec::new();
        m.encode(&mut out);
        let body_start = out.iter().position(|&b| b == b' ').filter(|_| out[0] == b'@').map_or(0, |i| i + 1);
        prop_assume!(out.len() - body_start <= MAX_LINE);
        prop_assert!(out.ends_with(b"\r\n"));
        let line = &out[..out.len() - 2];
        prop_assert_eq!(parse(line), Ok(m.clone()));
        // And with the CRLF still attached.
        prop_assert_eq!(parse(&out), Ok(m));
    }
}
