//! The shell's commands: their arguments (clap, the same way the one-shot commands take
//! theirs), help, and what each does with the session. `get` and `put` are the one-shot
//! commands' transfers (progress bars, resume, the digest check and its summary line).

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use ferry_client::{Client, Error, FtpUrl, Kind};

use super::{need, Flow, Shell};
use crate::client::output::Out;
use crate::client::transfer::{self, Sessions, TransferOpts};
use crate::client::{format_listing, format_quota};

/// One shell command line, as clap reads it.
#[derive(Debug, Parser)]
#[command(
    name = "ferry shell",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    subcommand_required = true,
    color = clap::ColorChoice::Never
)]
struct ShellLine {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The flags of `get` and `put`.
#[derive(Debug, Clone, clap::Args)]
struct Moves {
    /// Directories recursively
    #[arg(short, long)]
    recursive: bool,
    /// Resume partial files (checked with RANG+HASH first)
    #[arg(short = 'c', long = "continue")]
    resume: bool,
    /// Skip the digest check after each transfer
    #[arg(long)]
    no_verify: bool,
    /// Where to: a directory (or, for one file, its new name)
    #[arg(short = 'o', long = "to", value_name = "DEST")]
    to: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List remote directories (default: the current one)
    Ls {
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
    },
    /// Change the remote directory (default: the login directory)
    Cd {
        #[arg(value_name = "DIR")]
        dir: Option<String>,
    },
    /// Show the remote directory
    Pwd,
    /// Change the local directory (default: your home directory)
    Lcd {
        #[arg(value_name = "DIR")]
        dir: Option<String>,
    },
    /// Show the local directory
    Lpwd,
    /// Create remote directories (-p: with their parents)
    Mkdir {
        /// Create missing parents too, and accept directories that exist
        #[arg(short, long)]
        parents: bool,
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<String>,
    },
    /// Remove empty remote directories
    Rmdir {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<String>,
    },
    /// Delete remote files (asks first; -f deletes without asking)
    Rm {
        /// Do not ask
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Rename or move a remote file or directory
    Mv {
        #[arg(value_name = "FROM")]
        from: String,
        #[arg(value_name = "TO")]
        to: String,
    },
    /// Download remote files (-r: directories) here, or to -o DEST
    Get {
        #[command(flatten)]
        moves: Moves,
        #[arg(required = true, value_name = "REMOTE")]
        paths: Vec<String>,
    },
    /// Upload local files (-r: directories) to the remote directory, or to -o DEST
    Put {
        #[command(flatten)]
        moves: Moves,
        #[arg(required = true, value_name = "LOCAL")]
        paths: Vec<String>,
    },
    /// Show the server's digest (SHA-256 where offered) of remote files
    Hash {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
    },
    /// Show the account's disk usage, quota and free space
    Quota,
    /// Connect to a server (closing the current session)
    Open {
        /// ftp://, ftpes:// or ftps://user@host:port/dir
        #[arg(value_name = "URL")]
        url: String,
    },
    /// Close the session
    Close,
    /// Say TEXT in the chat room (the rest of the line, as typed)
    Say {
        #[arg(required = true, allow_hyphen_values = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Send TEXT to one person in the chat
    Msg {
        #[arg(value_name = "NICK")]
        nick: String,
        #[arg(required = true, allow_hyphen_values = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Show who is in the chat room
    Who,
    /// List the commands, or show the options of one
    Help {
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Leave the shell (also: exit)
    #[command(alias = "exit")]
    Quit,
}

/// The command names (for completion), aliases included.
pub fn names() -> Vec<String> {
    let cmd = ShellLine::command();
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        out.push(sub.get_name().to_string());
        out.extend(sub.get_all_aliases().map(str::to_string));
    }
    out
}

/// `Usage: rm [OPTIONS] <FILE>...` without the `Usage: `.
fn usage_of(name: &str) -> String {
    let mut cmd = ShellLine::command();
    match cmd.find_subcommand_mut(name) {
        Some(sub) => {
            let u = sub.render_usage().to_string();
            u.trim()
                .trim_start_matches("Usage:")
                .trim()
                .trim_start_matches("ferry shell ")
                .to_string()
        }
        None => name.to_string(),
    }
}

/// The text of `help`.
fn help_text() -> String {
    let cmd = ShellLine::command();
    let mut text = String::from("Commands (several on one line: mkdir d; cd d):\n");
    for sub in cmd.get_subcommands() {
        let usage = usage_of(sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        text.push_str(&format!("  {usage:<40} {about}\n"));
    }
    text.push_str(
        "Remote paths are relative to the remote directory, local ones to the local one.\n\
         Tab completes commands and paths; help COMMAND shows a command's options.\n",
    );
    text
}

/// Parses one command's words; `Ok(None)` when clap printed help instead.
fn parse(words: &[String]) -> Result<Option<Cmd>, Error> {
    let Some(name) = words.first() else {
        return Ok(None);
    };
    if !names().iter().any(|n| n == name) {
        return Err(Error::Usage(format!(
            "{name}: unknown command (help lists them)"
        )));
    }
    match ShellLine::try_parse_from(words) {
        Ok(l) => Ok(Some(l.cmd)),
        Err(e) => {
            use clap::error::ErrorKind as K;
            match e.kind() {
                K::DisplayHelp | K::DisplayHelpOnMissingArgumentOrSubcommand => {
                    super::print(&e.render().to_string());
                    Ok(None)
                }
                K::MissingRequiredArgument => Err(Error::Usage(format!(
                    "missing argument (usage: {})",
                    usage_of(name)
                ))),
                _ => {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    Err(Error::Usage(format!(
                        "{} (usage: {})",
                        first.trim_start_matches("error: "),
                        usage_of(name)
                    )))
                }
            }
        }
    }
}

/// The shell's one session, for the transfers.
struct One<'a>(&'a mut Client);

impl Sessions for One<'_> {
    async fn session(&mut self, _url: &FtpUrl) -> Result<&mut Client, Error> {
        Ok(&mut *self.0)
    }
}

/// A remote path argument: `.` and `./` are the current directory (by its full name, so a
/// download gets the directory's name).
fn remote_arg(path: &str, cwd: &str) -> String {
    match path {
        "" | "." | "./" => cwd.to_string(),
        p => p.to_string(),
    }
}

fn yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

impl Shell {
    /// Runs one command (its words).
    pub(super) async fn exec(&mut self, words: &[String]) -> Result<Flow, Error> {
        let Some(cmd) = parse(words)? else {
            return Ok(Flow::Go);
        };
        match cmd {
            Cmd::Ls { paths } => {
                let s = need(&mut self.session)?;
                let paths = if paths.is_empty() {
                    vec![String::new()]
                } else {
                    paths
                };
                let many = paths.len() > 1;
                for p in &paths {
                    let entries = s.client.list(p).await?;
                    let mut text = String::new();
                    if many {
                        text.push_str(&format!("{p}:\n"));
                    }
                    text.push_str(&format_listing(entries));
                    super::print(&text);
                }
            }
            Cmd::Cd { dir } => {
                let s = need(&mut self.session)?;
                let dir = dir.unwrap_or_else(|| s.home.clone());
                s.client.cwd(&dir).await?;
                s.cwd = s.client.pwd().await.unwrap_or(dir);
            }
            Cmd::Pwd => {
                let s = need(&mut self.session)?;
                s.cwd = s.client.pwd().await?;
                super::print(&s.cwd);
            }
            Cmd::Lcd { dir } => {
                let dir = match dir {
                    Some(d) => PathBuf::from(d),
                    None => std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| {
                        Error::Usage("lcd needs a directory: $HOME is not set".into())
                    })?,
                };
                std::env::set_current_dir(&dir).map_err(|e| Error::local(&dir, &e))?;
            }
            Cmd::Lpwd => {
                let here = std::env::current_dir()
                    .map_err(|e| Error::Local(format!("the local directory: {e}")))?;
                super::print(&here.display().to_string());
            }
            Cmd::Mkdir { parents, dirs } => {
                let s = need(&mut self.session)?;
                for d in &dirs {
                    if parents {
                        s.client.mkdirs(d).await?;
                    } else {
                        s.client.mkd(d).await?;
                    }
                }
            }
            Cmd::Rmdir { dirs } => {
                let s = need(&mut self.session)?;
                for d in &dirs {
                    s.client.rmd(d).await?;
                }
            }
            Cmd::Rm { force, files } => {
                need(&mut self.session)?;
                for f in &files {
                    if !force {
                        match self.ask(&format!("delete {f}? [y/N] ")).await {
                            Some(a) if yes(&a) => {}
                            Some(_) => {
                                super::print(&format!("kept {f}"));
                                continue;
                            }
                            None => {
                                return Err(Error::Usage(format!(
                                    "{f} not deleted: there is no terminal to confirm it; rm -f deletes without asking"
                                )))
                            }
                        }
                    }
                    need(&mut self.session)?.client.dele(f).await?;
                }
            }
            Cmd::Mv { from, to } => {
                need(&mut self.session)?.client.rename(&from, &to).await?;
            }
            Cmd::Get { moves, paths } => {
                let s = need(&mut self.session)?;
                let urls: Vec<FtpUrl> = paths
                    .iter()
                    .map(|p| s.url.with_path(&remote_arg(p, &s.cwd)))
                    .collect();
                let out = Out::new(self.conn.quiet);
                self.printer.set_bars(out.bars());
                let result = transfer::get_urls(
                    &mut One(&mut s.client),
                    &urls,
                    moves.to.clone().map(PathBuf::from),
                    &opts(&moves),
                    &out,
                )
                .await;
                self.printer.set_bars(None);
                result?;
            }
            Cmd::Put { moves, paths } => {
                let locals = transfer::local_sources(&paths, moves.recursive)?;
                let s = need(&mut self.session)?;
                let out = Out::new(self.conn.quiet);
                self.printer.set_bars(out.bars());
                let remote = moves.to.clone().unwrap_or_default();
                let result =
                    transfer::put_to(&mut s.client, &locals, &remote, &opts(&moves), &out).await;
                self.printer.set_bars(None);
                result?;
            }
            Cmd::Hash { paths } => {
                let s = need(&mut self.session)?;
                for p in &paths {
                    match s.client.remote_digest(p, None).await? {
                        Some(d) => super::print(&format!("{} {}  {p}", d.algo.name(), d.hex)),
                        None => {
                            return Err(Error::Usage(format!(
                                "{}: the server offers no way to hash files (HASH, XSHA256, XSHA1, XMD5)",
                                s.client.host_port()
                            )))
                        }
                    }
                }
            }
            Cmd::Quota => {
                let s = need(&mut self.session)?;
                let q = s.client.quota().await?;
                super::print(&format_quota(&q));
            }
            Cmd::Open { url } => self.open(&url).await?,
            Cmd::Close => {
                if self.session.is_none() {
                    return Err(Error::Usage("not connected".into()));
                }
                self.close().await;
            }
            Cmd::Say { text } => {
                self.chat_wanted();
                self.chat.say(&text.join(" ")).await?;
            }
            Cmd::Msg { nick, text } => {
                self.chat_wanted();
                self.chat.msg(&nick, &text.join(" ")).await?;
            }
            Cmd::Who => {
                self.chat_wanted();
                let line = self.chat.who().await?;
                super::print(&line);
            }
            Cmd::Help { command } => match command {
                None => super::print(&help_text()),
                Some(c) => {
                    let mut cmd = ShellLine::command();
                    match cmd.find_subcommand_mut(&c) {
                        Some(sub) => super::print(&sub.render_help().to_string()),
                        None => {
                            return Err(Error::Usage(format!(
                                "{c}: unknown command (help lists them)"
                            )))
                        }
                    }
                }
            },
            Cmd::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Go)
    }
}

/// The transfer options of `get`/`put` flags.
fn opts(m: &Moves) -> TransferOpts {
    TransferOpts {
        recursive: m.recursive,
        resume: m.resume,
        verify: !m.no_verify,
        prefix: "",
    }
}

/// The names in a remote directory for completion: (name, is a directory).
pub async fn completion_names(client: &mut Client, dir: &str) -> Vec<(String, bool)> {
    match client.list(dir).await {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.name != "." && e.name != ".." && !e.name.contains('/'))
            .map(|e| {
                let is_dir = e.kind == Kind::Dir;
                (e.name, is_dir)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn commands_parse_with_their_flags() {
        match parse(&words("get -r -c --no-verify a b -o d")).unwrap() {
            Some(Cmd::Get { moves, paths }) => {
                assert!(moves.recursive && moves.resume && moves.no_verify);
                assert_eq!(moves.to.as_deref(), Some("d"));
                assert_eq!(paths, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&words("rm -f x")).unwrap(),
            Some(Cmd::Rm { force: true, .. })
        ));
        assert!(matches!(parse(&words("exit")).unwrap(), Some(Cmd::Quit)));
        let say = vec!["say".to_string(), "-- -x hi".to_string()];
        assert!(matches!(parse(&say).unwrap(), Some(Cmd::Say { .. })));
    }

    #[test]
    fn bad_commands_are_one_line_usage_errors() {
        let e = parse(&words("frobnicate x")).unwrap_err().to_string();
        assert_eq!(e, "frobnicate: unknown command (help lists them)");
        let e = parse(&words("mkdir")).unwrap_err().to_string();
        assert!(e.starts_with("missing argument (usage: mkdir"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse(&words("get --bogus x")).unwrap_err().to_string();
        assert!(e.contains("--bogus") && e.contains("usage: get"), "{e}");
        let e = parse(&words("mv a")).unwrap_err().to_string();
        assert!(e.starts_with("missing argument"), "{e}");
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text();
        for n in [
            "ls", "cd", "pwd", "lcd", "lpwd", "mkdir", "rmdir", "rm", "mv", "get", "put", "hash",
            "quota", "open", "close", "say", "msg", "who", "help", "quit",
        ] {
            assert!(
                h.lines().any(|l| l.trim_start().starts_with(n)),
                "{n} in\n{h}"
            );
        }
        assert!(names().contains(&"exit".to_string()));
    }

    #[test]
    fn dot_is_the_current_directory() {
        assert_eq!(remote_arg(".", "/a/b"), "/a/b");
        assert_eq!(remote_arg("x", "/a/b"), "x");
    }
}
