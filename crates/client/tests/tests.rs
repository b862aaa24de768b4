//! Integration tests of the client library against scripted servers on 127.0.0.1:0: the
//! behaviour that real servers rarely show on demand (a hostile PASV address, no EPSV, replies
//! that never end or never come); the chat client likewise (`chat`: no SASL, silence, PING).

mod chat;

use std::time::Duration;

use ferry_client::{Client, ConnectOptions, Error, Security, Timeouts};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn options(port: u16, timeout: Duration) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        security: Security::Plain,
        trust: Default::default(),
        timeouts: Timeouts {
            connect: timeout,
            reply: timeout,
            data: timeout,
            long_reply: timeout,
        },
        trace: None,
    }
}

/// A scripted control connection: reads command lines, answers with `respond`.
async fn serve_one(
    listener: TcpListener,
    greeting: &'static [u8],
    mut respond: impl FnMut(&str, &mut TcpStream) -> Vec<u8> + Send + 'static,
) {
    let (sock, _) = listener.accept().await.unwrap();
    let mut reader = BufReader::new(sock);
    reader.get_mut().write_all(greeting).await.unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let out = respond(&cmd, reader.get_mut());
        if reader.get_mut().write_all(&out).await.is_err() {
            return;
        }
    }
}

fn login_replies(cmd: &str) -> Option<Vec<u8>> {
    let r: &[u8] = match cmd.split(' ').next().unwrap_or("") {
        "USER" => b"331 password please\r\n",
        "PASS" => b"230 in\r\n",
        "FEAT" => b"211 no features\r\n",
        "TYPE" => b"200 binary\r\n",
        "QUIT" => b"221 bye\r\n",
        _ => return None,
    };
    Some(r.to_vec())
}

#[tokio::test]
async fn pasv_address_is_ignored_and_epsv_refusal_falls_back_to_pasv() {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data_port = data.local_addr().unwrap().port();
    let data_task = tokio::spawn(async move {
        let (mut s, peer) = data.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
        s.write_all(
            b"-rw-r--r-- 1 ftp ftp 3 Jan 02 03:04 a.txt\r\ndrwxr-xr-x 2 ftp ftp 4096 Jan 02 2024 sub\r\n",
        )
        .await
        .unwrap();
    });
    let server = tokio::spawn(serve_one(control, b"220 hi\r\n", move |cmd, _| {
        if let Some(r) = login_replies(cmd) {
            return r;
        }
        match cmd {
            "EPSV" => b"500 EPSV not understood\r\n".to_vec(),
            // A hostile or NATed address: the client must connect to the control peer instead.
            "PASV" => format!(
                "227 Entering Passive Mode (10,9,9,9,{},{})\r\n",
                data_port >> 8,
                data_port & 0xff
            )
            .into_bytes(),
            // The final reply may arrive before the data ends: the client reads it afterwards.
            "LIST" => b"150 here\r\n226 done\r\n".to_vec(),
            _ => b"502 no\r\n".to_vec(),
        }
    }));
    let mut c = Client::connect(&options(port, Duration::from_secs(5)))
        .await
        .unwrap();
    c.login("u", "p").await.unwrap();
    let entries = tokio::time::timeout(Duration::from_secs(10), c.list(""))
        .await
        .unwrap()
        .unwrap();
    data_task.await.unwrap();
    let names: Vec<(&str, ferry_client::Kind, Option<u64>)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.size))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a.txt", ferry_client::Kind::File, Some(3)),
            ("sub", ferry_client::Kind::Dir, Some(4096))
        ]
    );
    server.abort();
}

#[tokio::test]
async fn a_silent_server_times_out_as_a_connection_error() {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (_s, _) = control.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = std::time::Instant::now();
    let r = Client::connect(&options(port, Duration::from_millis(300))).await;
    assert!(
        matches!(r, Err(Error::Connection(ref m)) if m.contains("did not reply")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn an_endless_reply_line_is_refused() {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = control.accept().await.unwrap();
        let chunk = vec![b'2'; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let r = Client::connect(&options(port, Duration::from_secs(5))).await;
    assert!(
        matches!(r, Err(Error::Connection(ref m)) if m.contains("longer than")),
        "{r:?}"
    );
    server.abort();
}

#[tokio::test]
async fn an_endless_multi_line_reply_is_refused() {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = control.accept().await.unwrap();
        let _ = s.write_all(b"220-welcome\r\n").await;
        for _ in 0..100_000 {
            if s.write_all(b" and more and more and more\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let r = Client::connect(&options(port, Duration::from_secs(5))).await;
    assert!(
        matches!(r, Err(Error::Connection(ref m)) if m.contains("multi-line")),
        "{r:?}"
    );
    server.abort();
}

#[tokio::test]
async fn login_refusal_is_an_auth_error_and_421_a_connection_error() {
    for (pass_reply, want_auth) in [
        (&b"530 Login incorrect\r\n"[..], true),
        (&b"421 Too many\r\n"[..], false),
    ] {
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = control.local_addr().unwrap().port();
        let server = tokio::spawn(serve_one(control, b"220 hi\r\n", move |cmd, _| {
            if cmd.starts_with("PASS") {
                return pass_reply.to_vec();
            }
            login_replies(cmd).unwrap_or_else(|| b"502 no\r\n".to_vec())
        }));
        let mut c = Client::connect(&options(port, Duration::from_secs(5)))
            .await
            .unwrap();
        let r = c.login("u", "p").await;
        if want_auth {
            assert!(
                matches!(r, Err(Error::Auth(ref m)) if m.contains("530")),
                "{r:?}"
            );
        } else {
            assert!(
                matches!(r, Err(Error::Connection(ref m)) if m.contains("421")),
                "{r:?}"
            );
        }
        server.abort();
    }
}

#[tokio::test]
async fn a_reply_after_auth_tls_before_the_handshake_is_refused() {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = control.local_addr().unwrap().port();
    // 234 and a pipelined plaintext reply in the same segment: the STARTTLS injection shape.
    let server = tokio::spawn(serve_one(control, b"220 hi\r\n", |cmd, _| {
        if cmd == "AUTH TLS" {
            b"234 go ahead\r\n230 injected\r\n".to_vec()
        } else {
            b"502 no\r\n".to_vec()
        }
    }));
    let mut opts = options(port, Duration::from_secs(5));
    opts.security = Security::Explicit { required: true };
    let r = Client::connect(&opts).await;
    assert!(
        matches!(r, Err(Error::Tls(ref m)) if m.contains("before the TLS handshake")),
        "{r:?}"
    );
    server.abort();
}
