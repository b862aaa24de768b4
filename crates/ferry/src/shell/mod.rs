//! `ferry shell [URL]`: commands over one FTP session (DESIGN §9), with the chat room beside
//! it. On a terminal: a line editor with history, completion of commands and paths, a question
//! before `rm`, and chat lines above the prompt. Without one (a script on stdin, or `-c LINE`):
//! the same commands, one line at a time, and the exit code of the last command that failed.
//! Every failure is one line and the shell goes on.

mod chat;
mod commands;
mod editor;
pub mod input;
mod line;

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_client::{ChatUrl, Client, Error, FtpUrl};
use tokio::sync::mpsc;

use crate::chat::ChatConnArgs;
use crate::client::connect::{open_login, open_with, Login};
use crate::client::output::Out;
use crate::client::{exit_code, parse_url, ConnArgs, EXIT_CODES};
use chat::{one_line, ChatLink, Printer};
use editor::{FromEditor, Lookup, ToEditor};

/// Exit code after Ctrl-C ends a script (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: i32 = 130;

/// After `ferry shell --help`.
const SHELL_HELP: &str = "\
Commands: ls cd pwd lcd lpwd mkdir rmdir rm mv get put hash quota open close say msg who \
help quit (type help in the shell). Several on one line: mkdir d; cd d; put f. Paths are quoted \
like in a POSIX shell; say and msg take the rest of the line as typed.

Without a terminal the shell reads commands from stdin, one per line, and exits with the code \
of the last command that failed (below); rm then deletes only with -f. The chat is the FTP \
server's host, port 6667 (--chat irc://host:port or ircs://host:6697 to choose, --no-chat to \
skip); without a terminal it is opened only for say, msg and who.

History: $XDG_CONFIG_HOME/ferry/history (default ~/.config/ferry/history), the last 1000 lines, \
passwords in URLs left out.";

/// `ferry shell`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{SHELL_HELP}\n\n{EXIT_CODES}"))]
pub struct ShellArgs {
    /// The server to open: ftp://, ftpes:// or ftps://user@host:port/dir (or later: open URL)
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    /// Run this line (commands separated by ;) and exit
    #[arg(short = 'c', long = "command", value_name = "LINE")]
    pub command: Option<String>,
    /// The chat to join: irc://host:6667 or ircs://host:6697 (default: the server's host, 6667)
    #[arg(long, value_name = "URL")]
    pub chat: Option<String>,
    /// Do not join the chat
    #[arg(long, conflicts_with = "chat")]
    pub no_chat: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// What the loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Quit,
}

/// The shell's logged-in FTP session.
struct Session {
    /// The server and user (no password, no path).
    url: FtpUrl,
    /// The credentials, to reconnect and to log in to the chat.
    login: Login,
    client: Client,
    /// The login directory.
    home: String,
    /// The remote directory, as PWD last said.
    cwd: String,
}

/// Where command lines come from.
enum Io {
    /// A terminal, through the line editor's thread.
    Editor {
        to: std::sync::mpsc::SyncSender<ToEditor>,
        from: mpsc::Receiver<FromEditor>,
        lookups: mpsc::Receiver<Lookup>,
    },
    /// Lines from stdin.
    Script(mpsc::Receiver<Result<String, String>>),
    /// `-c LINE`.
    Once(Option<String>),
}

/// The shell.
pub struct Shell {
    conn: ConnArgs,
    session: Option<Session>,
    chat: ChatLink,
    io: Io,
    printer: Printer,
    /// Bumped after each command: completion's cached listings are then stale.
    generation: Arc<AtomicU64>,
    last_failure: Option<i32>,
    interactive: bool,
}

/// Prints command output on stdout (a trailing newline is added if missing).
fn print(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = o.write_all(b"\n");
    }
    let _ = o.flush();
}

/// The session, or the error that says to open one.
fn need(session: &mut Option<Session>) -> Result<&mut Session, Error> {
    session
        .as_mut()
        .ok_or_else(|| Error::Connection("not connected: open ftp://user@host:port first".into()))
}

/// Answers a completion's question.
async fn serve_lookup(session: &mut Option<Session>, chat: &mut ChatLink, lookup: Lookup) {
    match lookup {
        Lookup::Remote(dir, reply) => {
            let names = match session {
                Some(s) => commands::completion_names(&mut s.client, &dir).await,
                None => Vec::new(),
            };
            let _ = reply.try_send(names);
        }
        Lookup::Nicks(reply) => {
            let _ = reply.try_send(chat.nicks().await);
        }
    }
}

/// `ferry shell`.
pub async fn run(args: ShellArgs) -> anyhow::Result<()> {
    let code = run_shell(args).await;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

async fn run_shell(args: ShellArgs) -> i32 {
    let chat_url = match args.chat.as_deref().map(ChatUrl::parse) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            eprintln!("ferry: --chat: {e}");
            return 2;
        }
    };
    let terminal = std::io::stdin().is_terminal();
    let interactive = args.command.is_none() && terminal;
    let generation = Arc::new(AtomicU64::new(0));
    let mut external = None;
    let io = if let Some(line) = args.command.clone() {
        Io::Once(Some(line))
    } else if interactive {
        match editor::start(commands::names(), generation.clone()) {
            Ok(h) => {
                if let Some(problem) = h.history_problem {
                    eprintln!("ferry: {problem}");
                }
                external = h.printer;
                Io::Editor {
                    to: h.to,
                    from: h.from,
                    lookups: h.lookups,
                }
            }
            Err(e) => {
                eprintln!("ferry: no line editor ({e}); reading plain lines");
                Io::Script(input::stdin_lines())
            }
        }
    } else {
        Io::Script(input::stdin_lines())
    };
    let printer = Printer::new(external);
    let chat_args = ChatConnArgs {
        ca_file: args.conn.ca_file.clone(),
        accept_new_cert: args.conn.accept_new_cert,
        allow_plaintext: args.conn.allow_plaintext,
        timeout: args.conn.timeout.min(15),
        verbose: args.conn.verbose,
    };
    let mut shell = Shell {
        conn: args.conn.clone(),
        session: None,
        chat: ChatLink::new(
            printer.clone(),
            chat_args,
            chat_url,
            args.no_chat,
            interactive,
        ),
        io,
        printer,
        generation,
        last_failure: None,
        interactive,
    };
    if let Some(url) = &args.url {
        if let Err(e) = shell.open(url).await {
            shell.fail("open", &e);
            if !interactive {
                return exit_code(&e);
            }
        }
    } else if interactive {
        eprintln!("ferry: not connected: open ftp://user@host:port (help lists the commands)");
    }
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    loop {
        // On a terminal the editor reads Ctrl-C as a key; a script waiting for its next line
        // gets the signal, and ends as a shell would.
        let next = match (&mut sigint, shell.interactive) {
            (Some(sig), false) => tokio::select! {
                line = shell.read_line() => line,
                _ = sig.recv() => {
                    eprintln!("ferry: interrupted");
                    shell.shutdown().await;
                    return EXIT_INTERRUPTED;
                }
            },
            _ => shell.read_line().await,
        };
        let Some(line) = next else {
            break;
        };
        let flow = shell.run_line(&line, &mut sigint).await;
        shell.generation.fetch_add(1, Ordering::Relaxed);
        match flow {
            Ok(Flow::Go) => {}
            Ok(Flow::Quit) => break,
            Err(code) => {
                shell.shutdown().await;
                return code;
            }
        }
    }
    shell.shutdown().await;
    shell.last_failure.unwrap_or(0)
}

impl Shell {
    /// The prompt: `ferry alice@host /dir> `.
    fn prompt(&self) -> String {
        match &self.session {
            Some(s) => format!("ferry {}@{} {}> ", s.login.user, s.url.host, s.cwd),
            None => "ferry> ".to_string(),
        }
    }

    /// The next command line; `None` at the end of input.
    async fn read_line(&mut self) -> Option<String> {
        let prompt = self.prompt();
        let Shell {
            io,
            session,
            chat,
            last_failure,
            ..
        } = self;
        match io {
            Io::Once(line) => line.take(),
            Io::Script(lines) => match lines.recv().await? {
                Ok(line) => Some(line),
                Err(problem) => {
                    eprintln!("ferry: {problem}");
                    *last_failure = Some(2);
                    Some(String::new())
                }
            },
            Io::Editor { to, from, lookups } => {
                if to.send(ToEditor::Read(prompt)).is_err() {
                    return None;
                }
                loop {
                    tokio::select! {
                        answer = from.recv() => return match answer {
                            Some(FromEditor::Line(l)) => Some(l),
                            Some(FromEditor::Interrupted) => Some(String::new()),
                            Some(FromEditor::Eof) | None => None,
                        },
                        Some(lookup) = lookups.recv() => serve_lookup(session, chat, lookup).await,
                    }
                }
            }
        }
    }

    /// Asks a yes/no question on the terminal; `None` when there is none to ask.
    async fn ask(&mut self, question: &str) -> Option<String> {
        match &mut self.io {
            Io::Editor { to, from, .. } => {
                to.send(ToEditor::Ask(question.to_string())).ok()?;
                match from.recv().await? {
                    FromEditor::Line(l) => Some(l),
                    FromEditor::Interrupted | FromEditor::Eof => Some(String::new()),
                }
            }
            Io::Once(_) if std::io::stdin().is_terminal() => {
                let question = question.to_string();
                tokio::task::spawn_blocking(move || {
                    use std::io::BufRead as _;
                    eprint!("{question}");
                    let _ = std::io::stderr().flush();
                    let mut answer = String::new();
                    std::io::stdin().lock().read_line(&mut answer).ok()?;
                    Some(answer)
                })
                .await
                .ok()
                .flatten()
            }
            _ => None,
        }
    }

    /// Runs the commands of one line. `Err(code)`: the shell must end now with `code`.
    async fn run_line(
        &mut self,
        line: &str,
        sigint: &mut Option<tokio::signal::unix::Signal>,
    ) -> Result<Flow, i32> {
        let commands = match line::commands(line) {
            Ok(c) => c,
            Err(e) => {
                self.fail("", &Error::Usage(e));
                return Ok(Flow::Go);
            }
        };
        for words in commands {
            let name = words[0].clone();
            let outcome = match sigint {
                Some(sig) => tokio::select! {
                    r = self.exec(&words) => Some(r),
                    _ = sig.recv() => None,
                },
                None => Some(self.exec(&words).await),
            };
            match outcome {
                Some(Ok(Flow::Quit)) => return Ok(Flow::Quit),
                Some(Ok(Flow::Go)) => {}
                Some(Err(e)) => self.fail(&name, &e),
                None => {
                    self.printer.set_bars(None);
                    eprintln!("ferry: {name}: interrupted");
                    if !self.interactive {
                        return Err(EXIT_INTERRUPTED);
                    }
                    self.last_failure = Some(EXIT_INTERRUPTED);
                    self.reconnect().await;
                    return Ok(Flow::Go);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// Reports a failed command in one line and remembers its exit code; a session whose
    /// connection broke is closed.
    fn fail(&mut self, name: &str, e: &Error) {
        let text = one_line(e);
        let shown = if name.is_empty()
            || text.starts_with(&format!("{name} "))
            || text.starts_with(&format!("{name}:"))
        {
            text
        } else {
            format!("{name}: {text}")
        };
        eprintln!("ferry: {shown}");
        self.last_failure = Some(exit_code(e));
        if self.session.as_ref().is_some_and(|s| s.client.is_broken()) {
            if let Some(s) = self.session.take() {
                eprintln!(
                    "ferry: the connection to {} is lost: open {} to connect again",
                    s.url.host_port(),
                    s.url
                );
                self.chat.stop();
            }
        }
    }

    /// `open URL`: closes the session, opens the new one, and the chat beside it.
    async fn open(&mut self, raw: &str) -> Result<(), Error> {
        let url = parse_url(raw)?;
        self.close().await;
        let out = Out::new(self.conn.quiet);
        let (mut client, login) = open_login(&url, &self.conn, &out).await?;
        let home = client.pwd().await.unwrap_or_else(|_| "/".to_string());
        let mut cwd_error = None;
        if !url.path.is_empty() {
            if let Err(e) = client.cwd(&url.path).await {
                cwd_error = Some(e);
            }
        }
        let cwd = client.pwd().await.unwrap_or_else(|_| home.clone());
        let host = url.host.clone();
        let url = FtpUrl {
            password: None,
            path: String::new(),
            ..url
        };
        if self.interactive && !self.conn.quiet {
            eprintln!(
                "ferry: connected to {} as {}{}",
                url.host_port(),
                login.user,
                if client.is_secure() { " (TLS)" } else { "" }
            );
        }
        if self.interactive {
            self.chat.start(&host, &login);
        }
        self.session = Some(Session {
            url,
            login,
            client,
            home,
            cwd,
        });
        match cwd_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `close`: QUIT, and the chat too.
    async fn close(&mut self) {
        self.chat.stop();
        if let Some(s) = self.session.take() {
            s.client.quit().await;
        }
    }

    /// Opens the chat for `say`, `msg`, `who` if it is wanted and not there.
    fn chat_wanted(&mut self) {
        if self.chat.wants_connection() {
            if let Some(s) = &self.session {
                self.chat.start(&s.url.host, &s.login);
            }
        }
    }

    /// After Ctrl-C stopped a command mid-way: the control connection is in an unknown state,
    /// so the session is opened again (same server, user and directory).
    async fn reconnect(&mut self) {
        let Some(old) = self.session.take() else {
            return;
        };
        drop(old.client);
        let out = Out::new(self.conn.quiet);
        match open_with(&old.url, &self.conn, &out, &old.login).await {
            Ok(mut client) => {
                let _ = client.cwd(&old.cwd).await;
                let cwd = client.pwd().await.unwrap_or_else(|_| old.cwd.clone());
                self.session = Some(Session {
                    url: old.url,
                    login: old.login,
                    client,
                    home: old.home,
                    cwd,
                });
            }
            Err(e) => {
                eprintln!(
                    "ferry: reconnecting to {} failed: {} (open {} to try again)",
                    old.url.host_port(),
                    one_line(&e),
                    old.url
                );
                self.chat.stop();
            }
        }
    }

    /// Ends the session and the chat.
    async fn shutdown(&mut self) {
        self.chat.shutdown().await;
        if let Some(s) = self.session.take() {
            s.client.quit().await;
        }
    }
}
