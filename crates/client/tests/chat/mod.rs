//! The chat client against scripted IRC servers on 127.0.0.1:0, for what Ferry's own chat
//! never shows: a server without SASL (the password goes as `PASS account:password`), a SASL
//! refusal, PING from the server, a server that falls silent, an over-long line, a server that
//! never welcomes.

use std::time::Duration;

use ferry_client::{Chat, ChatEvent, ChatOptions, ChatTimeouts, Error};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn options(port: u16, limit: Duration) -> ChatOptions {
    ChatOptions {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        trust: Default::default(),
        user: "alice".into(),
        password: "pw".into(),
        allow_plaintext: false,
        timeouts: ChatTimeouts {
            connect: limit,
            register: limit,
            ping_after: Duration::from_secs(60),
            pong: Duration::from_secs(60),
            write: limit,
        },
        trace: None,
    }
}

/// The server's side of one connection.
struct Peer {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    w: OwnedWriteHalf,
}

impl Peer {
    async fn accept(l: &TcpListener) -> Peer {
        let (s, _) = l.accept().await.unwrap();
        let (r, w) = s.into_split();
        Peer {
            lines: BufReader::new(r).lines(),
            w,
        }
    }

    /// The next line the client sent (within 5 s).
    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("the client sent nothing for 5 s")
            .unwrap()
            .expect("the client closed the connection")
    }

    /// Reads lines until one starts with `prefix`; returns it.
    async fn until(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line().await;
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).await.unwrap();
    }
}

async fn next_event(events: &mut mpsc::Receiver<ChatEvent>) -> ChatEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no event for 5 s")
        .expect("the event channel closed")
}

#[tokio::test]
async fn without_sasl_the_password_goes_as_pass_and_pings_are_answered() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        assert_eq!(p.line().await, "CAP LS 302");
        p.send(":srv CAP * LS :multi-prefix away-notify\r\n").await;
        assert_eq!(p.until("PASS").await, "PASS alice:pw");
        assert_eq!(p.until("CAP").await, "CAP END");
        p.send(":srv 001 alice :Welcome\r\n:srv 422 alice :MOTD File is missing\r\n")
            .await;
        p.send(":alice!alice@h JOIN #lobby\r\n:srv 353 alice = #lobby :@bob alice\r\n:srv 366 alice #lobby :End\r\n")
            .await;
        p.send("PING :tok-1\r\n").await;
        assert_eq!(p.until("PONG").await, "PONG tok-1");
        p.send(":bob!bob@h PRIVMSG #lobby :hi \x02there\x02\r\n")
            .await;
        assert_eq!(p.until("PRIVMSG").await, "PRIVMSG #lobby :hello bob");
        p
    });
    let (chat, mut events) = Chat::connect(&options(port, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(chat.nick(), "alice");
    assert!(matches!(
        next_event(&mut events).await,
        ChatEvent::Joined { ref room, me: true, .. } if room == "#lobby"
    ));
    chat.wait_ready("#lobby", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        chat.members("#lobby").await.unwrap().unwrap(),
        ["alice", "bob"]
    );
    match next_event(&mut events).await {
        ChatEvent::Message(m) => {
            assert_eq!((m.from.as_str(), m.target.as_str()), ("bob", "#lobby"));
            assert_eq!(ferry_client::chat::plain_text(&m.text), "hi there");
            assert!(!m.private && !m.notice);
        }
        other => panic!("{other:?}"),
    }
    chat.say("#lobby", "hello bob").await.unwrap();
    let _peer = server.await.unwrap();
}

#[tokio::test]
async fn a_sasl_refusal_is_an_authentication_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        assert_eq!(p.line().await, "CAP LS 302");
        p.send(":srv CAP * LS * :multi-prefix\r\n:srv CAP * LS :sasl=PLAIN,EXTERNAL\r\n")
            .await;
        assert_eq!(p.until("CAP REQ").await, "CAP REQ sasl");
        p.send(":srv CAP * ACK :sasl\r\n").await;
        assert_eq!(p.line().await, "AUTHENTICATE PLAIN");
        p.send("AUTHENTICATE +\r\n").await;
        // base64("\0alice\0pw")
        assert_eq!(p.line().await, "AUTHENTICATE AGFsaWNlAHB3");
        p.send(":srv 904 * :SASL authentication failed\r\n").await;
        p
    });
    let r = Chat::connect(&options(port, Duration::from_secs(5))).await;
    match r {
        Err(Error::Auth(m)) => assert!(m.contains("SASL authentication failed (904)"), "{m}"),
        other => panic!("{other:?}"),
    }
    let _peer = server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_falls_silent_is_pinged_then_given_up() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.until("USER").await;
        p.send(":srv CAP * LS :\r\n").await;
        p.until("CAP END").await;
        p.send(":srv 001 alice :Welcome\r\n").await;
        let ping = p.until("PING").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        (p, ping)
    });
    let mut opts = options(port, Duration::from_secs(5));
    opts.timeouts.ping_after = Duration::from_millis(300);
    opts.timeouts.pong = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let (chat, mut events) = Chat::connect(&opts).await.unwrap();
    match next_event(&mut events).await {
        ChatEvent::Closed { reason } => assert!(reason.contains("no answer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let e = chat.say("#lobby", "anyone?").await.unwrap_err();
    assert!(
        matches!(e, Error::Connection(ref m) if m.contains("no answer")),
        "{e:?}"
    );
    let (_peer, ping) = server.await.unwrap();
    assert!(ping.starts_with("PING "), "{ping}");
}

#[tokio::test]
async fn an_overlong_line_is_skipped_and_the_connection_goes_on() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.until("USER").await;
        p.send(":srv CAP * LS :\r\n").await;
        p.until("CAP END").await;
        p.send(":srv 001 alice :Welcome\r\n").await;
        let long = format!(":bob!b@h PRIVMSG #lobby :{}\r\n", "x".repeat(100_000));
        p.send(&long).await;
        p.send(":bob!b@h PRIVMSG alice :after the long one\r\n")
            .await;
        p
    });
    let (_chat, mut events) = Chat::connect(&options(port, Duration::from_secs(5)))
        .await
        .unwrap();
    match next_event(&mut events).await {
        ChatEvent::Message(m) => {
            assert_eq!(m.text, "after the long one");
            assert!(m.private);
        }
        other => panic!("{other:?}"),
    }
    let _peer = server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_welcomes_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let p = Peer::accept(&l).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        p
    });
    let started = std::time::Instant::now();
    let r = Chat::connect(&options(port, Duration::from_millis(300))).await;
    assert!(
        matches!(r, Err(Error::Connection(ref m)) if m.contains("did not complete the chat login")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    server.abort();
}
