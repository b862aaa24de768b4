//! `ferry chat irc://user@host:6667`: a line-based client for the chat room. Lines typed (or
//! read from stdin when it is not a terminal) are said in the current room; `/msg`, `/who`,
//! `/join`, `/part`, `/quit` do the rest. What happens in the room is printed as
//! `HH:MM <sender> text`, one line each. Credentials and certificates are found like the FTP
//! commands find them. The formatting here is shared with `ferry shell`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ferry_client::chat::plain_text;
use ferry_client::proto::irc;
use ferry_client::{Chat, ChatEvent, ChatOptions, ChatTimeouts, ChatUrl, Error};
use tokio::sync::mpsc;

use crate::client::connect::{credentials_for, trust_of, trusting, Login};
use crate::client::finish;

/// The room joined when the URL names none.
pub const DEFAULT_ROOM: &str = "#lobby";

/// Help after `ferry chat --help`.
const CHAT_HELP: &str = "\
Type a line to say it in the current room. Commands: /msg NICK TEXT (private message), \
/who [#room] (who is there), /join #room, /part [#room], /quit [reason], /help. A line \
starting with // is said as typed, with one / less.

Exit codes: 0 quit or end of input, 2 usage error, 3 connection, TLS or certificate problem \
(also when the server closes the connection), 4 login refused.

Passwords: from the URL, ~/.netrc (machine/login/password), $FERRY_PASSWORD, else asked for.
Certificates (ircs://): system roots, --ca-file, or trust on first use (~/.config/ferry/known_hosts).";

/// Options of a chat connection (`ferry chat`, and `ferry shell`'s chat).
#[derive(Debug, Clone, clap::Args)]
pub struct ChatConnArgs {
    /// Trust only the certificates (CAs or the server's own) in this PEM file
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Trust a certificate seen for the first time without asking, and remember it
    #[arg(long)]
    pub accept_new_cert: bool,
    /// Send the password without TLS to a host that is not this machine
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Seconds to wait for the connection and the login
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Show the IRC dialogue on stderr (passwords hidden)
    #[arg(short, long)]
    pub verbose: bool,
}

/// `ferry chat`.
#[derive(Debug, clap::Args)]
#[command(after_help = CHAT_HELP)]
pub struct ChatArgs {
    /// irc://user@host:6667 or ircs://user@host:6697 (TLS), optionally with a room: …/lobby
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub conn: ChatConnArgs,
}

static LOCAL_OFFSET: OnceLock<time::UtcOffset> = OnceLock::new();

/// Reads the local time zone offset. Call before other threads start: the offset cannot be
/// read safely once the process has several threads (then times are shown in UTC).
pub fn init_local_time() {
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

/// `HH:MM` of `at` in local time.
pub fn hhmm(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at)
        .to_offset(LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC));
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// Whether two room names are the same room.
pub fn same_room(a: &str, b: &str) -> bool {
    irc::fold(a) == irc::fold(b)
}

/// One line for an event, or `None` for those not shown. Messages to `room` (the current
/// room) are `HH:MM <sender> text`; to another room `HH:MM #room <sender> text`; private ones
/// `HH:MM *sender* text`; notices (the server's announcements) like messages.
pub fn format_event(ev: &ChatEvent, room: Option<&str>) -> Option<String> {
    let now = || hhmm(SystemTime::now());
    Some(match ev {
        ChatEvent::Message(m) => {
            let when = hhmm(m.at);
            let from = plain_text(&m.from);
            let text = plain_text(&m.text);
            let place = if m.private || room.is_some_and(|r| same_room(r, &m.target)) {
                String::new()
            } else {
                format!("{} ", plain_text(&m.target))
            };
            match (m.private, m.action) {
                (true, false) => format!("{when} *{from}* {text}"),
                (true, true) => format!("{when} * {from} {text} (private)"),
                (false, true) => format!("{when} {place}* {from} {text}"),
                (false, false) => format!("{when} {place}<{from}> {text}"),
            }
        }
        ChatEvent::Joined { room, nick, .. } => {
            format!(
                "{} * {} joined {}",
                now(),
                plain_text(nick),
                plain_text(room)
            )
        }
        ChatEvent::Parted {
            room, nick, reason, ..
        } => format!(
            "{} * {} left {}{}",
            now(),
            plain_text(nick),
            plain_text(room),
            reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({})", plain_text(r)))
                .unwrap_or_default()
        ),
        ChatEvent::Quit { nick, reason } => format!(
            "{} * {} quit{}",
            now(),
            plain_text(nick),
            reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({})", plain_text(r)))
                .unwrap_or_default()
        ),
        ChatEvent::Nick { old, new } => {
            format!("{} * {} is now {}", now(), plain_text(old), plain_text(new))
        }
        ChatEvent::Refused { code, text } => {
            format!("{} ! {} ({code})", now(), plain_text(text))
        }
        ChatEvent::Closed { .. } => return None,
    })
}

/// How one of our own messages is shown.
pub fn format_own(nick: &str, target: &str, room: Option<&str>, text: &str) -> String {
    let when = hhmm(SystemTime::now());
    let text = plain_text(text);
    if target.starts_with('#') {
        let place = if room.is_some_and(|r| same_room(r, target)) {
            String::new()
        } else {
            format!("{target} ")
        };
        format!("{when} {place}<{nick}> {text}")
    } else {
        format!("{when} -> *{target}* {text}")
    }
}

/// Connects to the chat at `url` as `login`. `may_ask`: a certificate seen for the first time
/// may be asked about on the terminal.
pub async fn open_chat(
    url: &ChatUrl,
    login: &Login,
    args: &ChatConnArgs,
    may_ask: bool,
) -> Result<(Chat, mpsc::Receiver<ChatEvent>), Error> {
    let secs = Duration::from_secs(args.timeout.max(1));
    let trace: Option<ferry_client::client::Trace> = args.verbose.then(|| {
        Arc::new(|sent: bool, line: &str| {
            eprintln!("{} {line}", if sent { ">" } else { "<" });
        }) as ferry_client::client::Trace
    });
    let opts = ChatOptions {
        host: url.host.clone(),
        port: url.port,
        tls: url.tls,
        trust: trust_of(args.ca_file.as_deref(), args.accept_new_cert),
        user: login.user.clone(),
        password: login.password.clone(),
        allow_plaintext: args.allow_plaintext,
        timeouts: ChatTimeouts {
            connect: secs,
            register: secs,
            ..ChatTimeouts::default()
        },
        trace,
    };
    if !may_ask {
        return Chat::connect(&opts).await;
    }
    trusting(opts.trust.clone(), |trust| {
        let opts = ChatOptions {
            trust,
            ..opts.clone()
        };
        async move { Chat::connect(&opts).await }
    })
    .await
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn note(line: &str) {
    eprintln!("ferry: {line}");
}

/// `ferry chat URL`.
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    finish(run_inner(args).await)
}

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Say(&'a str),
    Msg(&'a str, &'a str),
    Who(Option<&'a str>),
    Join(&'a str),
    Part(Option<&'a str>),
    Quit(&'a str),
    Help,
    Nothing,
}

/// Reads one typed line.
fn parse_input(line: &str) -> Result<Input<'_>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Nothing);
    }
    if line.starts_with("//") {
        return Ok(Input::Say(&line[1..]));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Say(line));
    };
    let (verb, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(v, r)| (v, r.trim()));
    let arg = (!rest.is_empty()).then_some(rest);
    match verb.to_ascii_lowercase().as_str() {
        "msg" | "query" => match rest.split_once(char::is_whitespace) {
            Some((nick, text)) if !text.trim().is_empty() => Ok(Input::Msg(nick, text.trim())),
            _ => Err("usage: /msg NICK TEXT".into()),
        },
        "who" | "names" => Ok(Input::Who(arg)),
        "join" => arg.map(Input::Join).ok_or_else(|| "usage: /join #room".into()),
        "part" | "leave" => Ok(Input::Part(arg)),
        "quit" | "exit" => Ok(Input::Quit(rest)),
        "help" => Ok(Input::Help),
        other => Err(format!(
            "unknown command /{other}: /msg /who /join /part /quit /help (// to say a line starting with /)"
        )),
    }
}

async fn run_inner(args: ChatArgs) -> Result<(), Error> {
    let Some(raw) = args.url.as_deref() else {
        return Err(Error::Usage(
            "chat needs a URL: ferry chat irc://user@host:6667 (or ircs://user@host:6697)".into(),
        ));
    };
    let url = ChatUrl::parse(raw).map_err(|e| Error::Usage(e.to_string()))?;
    let login = credentials_for(
        &url.host,
        &url.host_port(),
        url.user.as_deref(),
        url.password.as_deref(),
        None,
    )
    .await?;
    let (chat, mut events) = open_chat(&url, &login, &args.conn, true).await?;
    if let (Some(fp), Some(path)) = (
        chat.new_certificate(),
        ferry_client::known_hosts::default_path(),
    ) {
        note(&format!(
            "trusting the certificate of {} (sha256 {fp}), remembered in {}",
            chat.host_port(),
            path.display()
        ));
    }
    let wanted = url.room.clone().unwrap_or_else(|| DEFAULT_ROOM.to_string());
    note(&format!(
        "connected to {} as {}; joining {wanted} (/help for commands)",
        chat.host_port(),
        chat.nick()
    ));
    chat.join(&wanted).await?;
    let joined = wait_joined(&chat, &mut events, &wanted).await?;
    chat.wait_ready(&joined, Duration::from_secs(15)).await?;
    let mut room = Some(joined);
    let mut input = crate::shell::input::stdin_lines();
    loop {
        tokio::select! {
            line = input.recv() => match line {
                None => return leave(&chat, &mut events, "end of input", room.as_deref()).await,
                Some(Err(problem)) => note(&problem),
                Some(Ok(line)) => {
                    if let Some(reason) = handle_line(&chat, &line, &mut room).await? {
                        return leave(&chat, &mut events, &reason, room.as_deref()).await;
                    }
                }
            },
            ev = events.recv() => {
                let Some(ev) = ev else {
                    return Err(Error::Connection(format!("the chat connection to {} ended", chat.host_port())));
                };
                if let ChatEvent::Closed { reason } = &ev {
                    return Err(Error::Connection(format!(
                        "the chat connection to {} ended: {reason}",
                        chat.host_port()
                    )));
                }
                match &ev {
                    ChatEvent::Joined { room: r, me: true, .. } => room = Some(r.clone()),
                    ChatEvent::Parted { room: r, me: true, .. }
                        if room.as_deref().is_some_and(|c| same_room(c, r)) =>
                    {
                        room = chat.rooms().await.ok().and_then(|rs| rs.into_iter().next());
                    }
                    _ => {}
                }
                show(&ev, room.as_deref());
            },
        }
    }
}

/// Shows an event: refusals as notes on stderr, the rest on stdout.
fn show(ev: &ChatEvent, room: Option<&str>) {
    if let ChatEvent::Refused { code, text } = ev {
        note(&format!("{} ({code})", plain_text(text)));
    } else if let Some(line) = format_event(ev, room) {
        out(&line);
    }
}

/// Waits until this connection is in `wanted` (the server's own auto-join may come first),
/// showing what arrives meanwhile. A refusal of the join is an error.
async fn wait_joined(
    chat: &Chat,
    events: &mut mpsc::Receiver<ChatEvent>,
    wanted: &str,
) -> Result<String, Error> {
    let limit = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = match tokio::time::timeout_at(limit, events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                return Err(Error::Connection(format!(
                    "the chat connection to {} ended",
                    chat.host_port()
                )))
            }
            Err(_) => {
                return Err(Error::Connection(format!(
                    "{} did not let {} join {wanted} within 30 s",
                    chat.host_port(),
                    chat.nick()
                )))
            }
        };
        match &ev {
            ChatEvent::Joined { room, me: true, .. } if same_room(room, wanted) => {
                show(&ev, Some(room));
                return Ok(room.clone());
            }
            ChatEvent::Refused { text, code } if text.starts_with(wanted) => {
                return Err(Error::Refused {
                    context: format!("join {wanted}"),
                    reply: ferry_client::proto::ftp::Reply::new(
                        code.parse().unwrap_or(500),
                        plain_text(text),
                    ),
                })
            }
            ChatEvent::Closed { reason } => {
                return Err(Error::Connection(format!(
                    "the chat connection to {} ended: {reason}",
                    chat.host_port()
                )))
            }
            _ => show(&ev, Some(wanted)),
        }
    }
}

/// Leaves with QUIT, showing the replies that still arrive, until the connection is closed.
async fn leave(
    chat: &Chat,
    events: &mut mpsc::Receiver<ChatEvent>,
    reason: &str,
    room: Option<&str>,
) -> Result<(), Error> {
    chat.send_quit(reason).await;
    let limit = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(ev)) = tokio::time::timeout_at(limit, events.recv()).await {
        if matches!(ev, ChatEvent::Closed { .. }) {
            break;
        }
        show(&ev, room);
    }
    Ok(())
}

/// Acts on one typed line; `Ok(Some(reason))` to leave.
async fn handle_line(
    chat: &Chat,
    line: &str,
    room: &mut Option<String>,
) -> Result<Option<String>, Error> {
    let input = match parse_input(line) {
        Ok(i) => i,
        Err(problem) => {
            note(&problem);
            return Ok(None);
        }
    };
    let said = |r: Result<(), Error>| -> Result<(), Error> {
        match r {
            Err(e @ Error::Connection(_)) => Err(e),
            Err(e) => {
                note(&e.to_string());
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    };
    match input {
        Input::Nothing => {}
        Input::Say(text) => match room.as_deref() {
            Some(r) => said(
                chat.say(r, text)
                    .await
                    .map(|()| out(&format_own(chat.nick(), r, Some(r), text))),
            )?,
            None => note("not in a room: /join #room first"),
        },
        Input::Msg(nick, text) => said(
            chat.say(nick, text)
                .await
                .map(|()| out(&format_own(chat.nick(), nick, room.as_deref(), text))),
        )?,
        Input::Who(which) => {
            let Some(r) = which.map(str::to_string).or_else(|| room.clone()) else {
                note("not in a room: /join #room first");
                return Ok(None);
            };
            match chat.members(&r).await? {
                Some(names) => out(&format!("{r}: {}", names.join(" "))),
                None => note(&format!("not in {r}: /join {r} first")),
            }
        }
        Input::Join(r) => said(chat.join(r).await)?,
        Input::Part(which) => {
            let Some(r) = which.map(str::to_string).or_else(|| room.clone()) else {
                note("not in a room");
                return Ok(None);
            };
            said(chat.part(&r).await)?;
        }
        Input::Quit(reason) => {
            return Ok(Some(
                if reason.is_empty() { "bye" } else { reason }.to_string(),
            ));
        }
        Input::Help => out(CHAT_HELP.split("\n\n").next().unwrap_or(CHAT_HELP)),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines() {
        assert_eq!(parse_input("hello there"), Ok(Input::Say("hello there")));
        assert_eq!(
            parse_input("/msg bob hi you"),
            Ok(Input::Msg("bob", "hi you"))
        );
        assert!(parse_input("/msg bob").is_err());
        assert!(parse_input("/msg").is_err());
        assert_eq!(parse_input("/who"), Ok(Input::Who(None)));
        assert_eq!(parse_input("/WHO #dev"), Ok(Input::Who(Some("#dev"))));
        assert_eq!(parse_input("/join #dev"), Ok(Input::Join("#dev")));
        assert!(parse_input("/join").is_err());
        assert_eq!(parse_input("/quit see you"), Ok(Input::Quit("see you")));
        assert_eq!(parse_input("/part"), Ok(Input::Part(None)));
        assert_eq!(parse_input("   "), Ok(Input::Nothing));
        assert_eq!(
            parse_input("//etc/passwd is a path"),
            Ok(Input::Say("/etc/passwd is a path"))
        );
        assert!(parse_input("/frobnicate")
            .unwrap_err()
            .contains("unknown command /frobnicate"));
    }

    #[test]
    fn messages_are_shown_with_time_and_sender() {
        let at = SystemTime::now();
        let m = |target: &str, private: bool, notice: bool| {
            ChatEvent::Message(ferry_client::ChatMessage {
                at,
                from: "bob".into(),
                target: target.into(),
                text: "hi \x02there\x02\x1b[2J".into(),
                notice,
                private,
                action: false,
            })
        };
        let when = hhmm(at);
        assert_eq!(
            format_event(&m("#lobby", false, false), Some("#Lobby")).unwrap(),
            format!("{when} <bob> hi there?[2J")
        );
        assert_eq!(
            format_event(&m("#dev", false, true), Some("#lobby")).unwrap(),
            format!("{when} #dev <bob> hi there?[2J")
        );
        assert_eq!(
            format_event(&m("alice", true, false), Some("#lobby")).unwrap(),
            format!("{when} *bob* hi there?[2J")
        );
        assert!(format_event(&ChatEvent::Closed { reason: "x".into() }, None).is_none());
        assert_eq!(hhmm(at).len(), 5);
    }
}
