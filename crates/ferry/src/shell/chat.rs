//! The chat inside `ferry shell`: a connection to the FTP server's chat (or `--chat URL`)
//! opened in the background so the shell never waits for it, room lines printed above the
//! prompt as they arrive ([`Printer`]), and `say`, `msg`, `who` on top. If the chat cannot be
//! reached the shell works on and `say` tells why.

use std::sync::{Arc, Mutex};

use ferry_client::{Chat, ChatEvent, ChatUrl, Error};
use indicatif::MultiProgress;
use tokio::task::JoinHandle;

use super::editor;
use crate::chat::{format_event, format_own, open_chat, ChatConnArgs, DEFAULT_ROOM};
use crate::client::connect::Login;

/// Prints lines that arrive while the user types: above the prompt on a terminal (rustyline's
/// external printer keeps the half-typed line intact), around progress bars while a transfer
/// shows them, else plainly on stdout.
#[derive(Clone)]
pub struct Printer {
    external: Option<Arc<Mutex<editor::Printer>>>,
    bars: Arc<Mutex<Option<MultiProgress>>>,
}

fn stdout_line(text: &str) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

impl Printer {
    /// A printer using rustyline's external printer, if there is one.
    pub fn new(external: Option<editor::Printer>) -> Printer {
        Printer {
            external: external.map(|p| Arc::new(Mutex::new(p))),
            bars: Arc::new(Mutex::new(None)),
        }
    }

    /// While a command shows progress bars, lines are printed around them.
    pub fn set_bars(&self, bars: Option<MultiProgress>) {
        if let Ok(mut b) = self.bars.lock() {
            *b = bars;
        }
    }

    /// Prints one line.
    pub fn line(&self, text: &str) {
        let bars = self.bars.lock().ok().and_then(|b| b.clone());
        if let Some(m) = bars {
            m.suspend(|| stdout_line(text));
            return;
        }
        if let Some(ext) = &self.external {
            if let Ok(mut print) = ext.lock() {
                print(format!("{text}\n"));
                return;
            }
        }
        stdout_line(text);
    }
}

/// The state of the shell's chat.
enum State {
    /// Not wanted (`--no-chat`, or no session to take the host from).
    Off(String),
    /// Being opened in the background.
    Connecting(JoinHandle<Result<Chat, Error>>),
    /// Connected.
    Up(Chat),
    /// Could not be opened, or lost.
    Down(String),
}

/// The shell's chat connection.
pub struct ChatLink {
    state: State,
    printer: Printer,
    args: ChatConnArgs,
    /// `--chat URL`: used instead of the FTP server's host.
    fixed: Option<ChatUrl>,
    /// `--no-chat`.
    disabled: bool,
    /// Print room lines as they arrive (on a terminal).
    show: bool,
}

/// What `say`, `msg` and `who` need when the chat is not there.
fn unavailable(why: &str) -> Error {
    Error::Connection(format!("not connected to the chat: {why}"))
}

impl ChatLink {
    /// No connection yet.
    pub fn new(
        printer: Printer,
        args: ChatConnArgs,
        fixed: Option<ChatUrl>,
        disabled: bool,
        show: bool,
    ) -> ChatLink {
        let why = if disabled {
            "--no-chat was given".to_string()
        } else {
            "no session yet: open ftp://… first".to_string()
        };
        ChatLink {
            state: State::Off(why),
            printer,
            args,
            fixed,
            disabled,
            show,
        }
    }

    /// The room `say` talks to.
    fn room(&self) -> String {
        self.fixed
            .as_ref()
            .and_then(|u| u.room.clone())
            .unwrap_or_else(|| DEFAULT_ROOM.to_string())
    }

    /// Whether the chat is wanted and not connected or connecting.
    pub fn wants_connection(&self) -> bool {
        !self.disabled && !matches!(self.state, State::Up(_) | State::Connecting(_))
    }

    /// Starts connecting (in the background) to the chat of `host` as `login`: `--chat URL`
    /// if given, else `irc://host:6667`. A previous connection is closed.
    pub fn start(&mut self, host: &str, login: &Login) {
        if self.disabled {
            return;
        }
        self.stop();
        let url = match &self.fixed {
            Some(u) => u.clone(),
            None => ChatUrl {
                tls: false,
                user: None,
                password: None,
                host: host.to_string(),
                port: ferry_client::chat::IRC_PORT,
                room: None,
            },
        };
        let login = Login {
            user: url.user.clone().unwrap_or_else(|| login.user.clone()),
            password: url
                .password
                .clone()
                .unwrap_or_else(|| login.password.clone()),
        };
        if login.user.eq_ignore_ascii_case("anonymous") || login.user.eq_ignore_ascii_case("ftp") {
            self.state = State::Off("an anonymous session has no chat account".into());
            return;
        }
        let args = self.args.clone();
        let printer = self.printer.clone();
        let room = self.room();
        let show = self.show;
        self.state = State::Connecting(tokio::spawn(async move {
            match open_chat(&url, &login, &args, false).await {
                Ok((chat, mut events)) => {
                    chat.join(&room).await?;
                    chat.wait_ready(&room, std::time::Duration::from_secs(15))
                        .await?;
                    if show {
                        printer.line(&format!(
                            "chat: connected to {} as {}, in {room} (say, msg, who)",
                            chat.host_port(),
                            chat.nick()
                        ));
                    }
                    let host_port = chat.host_port().to_string();
                    let nick = chat.nick().to_string();
                    // The events are printed by a thread of their own: rustyline's printer
                    // may block briefly, and must not hold up the runtime.
                    let spawned = std::thread::Builder::new()
                        .name("ferry-chat-print".into())
                        .spawn(move || {
                            while let Some(ev) = events.blocking_recv() {
                                if let ChatEvent::Closed { reason } = &ev {
                                    if reason != "quit" && reason != "closed by the client" {
                                        printer.line(&format!(
                                            "chat: the connection to {host_port} ended: {reason}"
                                        ));
                                    }
                                    return;
                                }
                                if let ChatEvent::Joined { me: true, .. } = &ev {
                                    continue; // our own join: the connected line said it
                                }
                                // Without a terminal only refusals are shown (a script's
                                // `msg nobody …` must not look like it worked).
                                if !show && !matches!(ev, ChatEvent::Refused { .. }) {
                                    continue;
                                }
                                let shown = match &ev {
                                    ChatEvent::Message(m) if m.from == nick => None,
                                    ev => format_event(ev, Some(&room)),
                                };
                                if let Some(text) = shown {
                                    printer.line(&text);
                                }
                            }
                        });
                    if let Err(e) = spawned {
                        return Err(Error::Local(format!("cannot start the chat printer: {e}")));
                    }
                    Ok(chat)
                }
                Err(e) => {
                    if show {
                        printer.line(&format!(
                            "chat: {} (the shell works without it; --no-chat skips it)",
                            one_line(&e)
                        ));
                    }
                    Err(e)
                }
            }
        }));
    }

    /// Closes the chat connection (QUIT in the background).
    pub fn stop(&mut self) {
        let old = std::mem::replace(
            &mut self.state,
            State::Off("no session: open ftp://… first".into()),
        );
        match old {
            State::Up(chat) => {
                tokio::spawn(async move { chat.quit("bye").await });
            }
            State::Connecting(task) => task.abort(),
            _ => {}
        }
    }

    /// Leaves the chat, waiting a little for the server.
    pub async fn shutdown(&mut self) {
        let old = std::mem::replace(&mut self.state, State::Off("closed".into()));
        match old {
            State::Up(chat) => chat.quit("bye").await,
            State::Connecting(task) => task.abort(),
            _ => {}
        }
    }

    /// The connection, waiting for it if it is being opened.
    async fn chat(&mut self) -> Result<&Chat, Error> {
        if let State::Connecting(task) = &mut self.state {
            self.state = match task.await {
                Ok(Ok(chat)) => State::Up(chat),
                Ok(Err(e)) => State::Down(one_line(&e)),
                Err(e) => State::Down(format!("the connection attempt failed: {e}")),
            };
        }
        match &self.state {
            State::Up(chat) => Ok(chat),
            State::Off(why) | State::Down(why) => Err(unavailable(why)),
            State::Connecting(_) => Err(unavailable("still connecting")),
        }
    }

    /// `say TEXT`: to the room; the line is shown as sent.
    pub async fn say(&mut self, text: &str) -> Result<(), Error> {
        let room = self.room();
        let chat = self.chat().await?;
        chat.say(&room, text).await?;
        let nick = chat.nick().to_string();
        self.printer
            .line(&format_own(&nick, &room, Some(&room), text));
        Ok(())
    }

    /// `msg NICK TEXT`: to one person.
    pub async fn msg(&mut self, nick: &str, text: &str) -> Result<(), Error> {
        let room = self.room();
        let chat = self.chat().await?;
        chat.say(nick, text).await?;
        let me = chat.nick().to_string();
        self.printer.line(&format_own(&me, nick, Some(&room), text));
        Ok(())
    }

    /// `who`: the members of the room.
    pub async fn who(&mut self) -> Result<String, Error> {
        let room = self.room();
        let chat = self.chat().await?;
        match chat.members(&room).await? {
            Some(names) => Ok(format!("{room}: {}", names.join(" "))),
            None => Err(unavailable(&format!("not in {room}"))),
        }
    }

    /// The nicks of the room, for completion (nothing if the chat is not up).
    pub async fn nicks(&mut self) -> Vec<String> {
        let room = self.room();
        match &self.state {
            State::Up(chat) => chat.members(&room).await.ok().flatten().unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// An error as one line.
pub fn one_line(e: &Error) -> String {
    e.to_string().replace(['\r', '\n'], " ")
}
