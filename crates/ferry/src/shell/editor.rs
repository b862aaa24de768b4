//! The shell's line editor on a terminal: rustyline on a thread of its own (it blocks on the
//! terminal), driven by the shell loop with [`ToEditor`] requests. It keeps the history file,
//! completes command names, remote paths (it asks the loop for a listing, cached briefly),
//! local paths for `put`, `lcd` and `get -o`, and nicks for `msg`, and hands out rustyline's
//! `ExternalPrinter` so chat lines appear above the prompt without breaking the line being typed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter as _, Helper};
use tokio::sync::mpsc;

use super::line;

/// Lines the history file keeps.
pub const HISTORY_LINES: usize = 1000;
/// How long a remote listing serves completion before it is asked for again.
const LISTING_TTL: Duration = Duration::from_secs(5);
/// How long completion waits for a listing.
const LISTING_WAIT: Duration = Duration::from_secs(5);

/// What the loop asks the editor thread.
pub enum ToEditor {
    /// Read a command line with this prompt.
    Read(String),
    /// Ask a question (no history, no completion).
    Ask(String),
}

/// What the editor thread answers.
pub enum FromEditor {
    /// A line (for `Read` or `Ask`).
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D, or the terminal went away.
    Eof,
}

/// A completion's question to the loop.
pub enum Lookup {
    /// The names in a remote directory (`""`: the current one): (name, is a directory).
    Remote(String, std::sync::mpsc::SyncSender<Vec<(String, bool)>>),
    /// The nicks in the current chat room.
    Nicks(std::sync::mpsc::SyncSender<Vec<String>>),
}

/// Prints lines above the prompt (rustyline's external printer).
pub type Printer = Box<dyn FnMut(String) + Send>;

/// Which kind of argument a word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    Remote,
    Local,
    Nick,
    Nothing,
}

/// The kind of the next argument of `cmd` after the words `before` (the command included).
fn arg_kind(before: &[String]) -> ArgKind {
    let Some(cmd) = before.first() else {
        return ArgKind::Nothing;
    };
    let after_o = before.last().is_some_and(|w| w == "-o" || w == "--to") && before.len() > 1;
    match cmd.as_str() {
        "get" if after_o => ArgKind::Local,
        "put" if after_o => ArgKind::Remote,
        "put" | "lcd" => ArgKind::Local,
        "ls" | "cd" | "mkdir" | "rmdir" | "rm" | "mv" | "get" | "hash" => ArgKind::Remote,
        "msg" if before.len() == 1 => ArgKind::Nick,
        _ => ArgKind::Nothing,
    }
}

/// A remote listing kept for completion: the command generation and time it was fetched,
/// then (name, is a directory) pairs.
type Listing = (u64, Instant, Vec<(String, bool)>);

/// The rustyline helper: completion only.
pub struct ShellHelper {
    commands: Vec<String>,
    files: FilenameCompleter,
    lookups: mpsc::Sender<Lookup>,
    /// Bumped by the loop after every command: listings cached before are stale.
    generation: Arc<AtomicU64>,
    cache: RefCell<HashMap<String, Listing>>,
    asking: Cell<bool>,
}

impl ShellHelper {
    fn remote(&self, dir: &str) -> Vec<(String, bool)> {
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some((g, at, names)) = self.cache.borrow().get(dir) {
            if *g == generation && at.elapsed() < LISTING_TTL {
                return names.clone();
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self
            .lookups
            .blocking_send(Lookup::Remote(dir.to_string(), tx))
            .is_err()
        {
            return Vec::new();
        }
        // Only an answer is cached: after a timeout the next Tab asks again.
        let Ok(names) = rx.recv_timeout(LISTING_WAIT) else {
            return Vec::new();
        };
        self.cache
            .borrow_mut()
            .insert(dir.to_string(), (generation, Instant::now(), names.clone()));
        names
    }

    fn nicks(&self) -> Vec<String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.lookups.blocking_send(Lookup::Nicks(tx)).is_err() {
            return Vec::new();
        }
        rx.recv_timeout(LISTING_WAIT).unwrap_or_default()
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        text: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if self.asking.get() {
            return Ok((pos, Vec::new()));
        }
        let c = line::cursor(text, pos);
        let pair = |s: String| Pair {
            display: s.clone(),
            replacement: s,
        };
        if c.before.is_empty() {
            let mut names: Vec<Pair> = self
                .commands
                .iter()
                .filter(|n| n.starts_with(&c.word))
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: format!("{n} "),
                })
                .collect();
            names.sort_by(|a, b| a.display.cmp(&b.display));
            return Ok((c.start, names));
        }
        match arg_kind(&c.before) {
            ArgKind::Nothing => Ok((pos, Vec::new())),
            ArgKind::Local => self.files.complete(text, pos, ctx),
            ArgKind::Nick => {
                let mut nicks: Vec<Pair> = self
                    .nicks()
                    .into_iter()
                    .filter(|n| n.starts_with(&c.word))
                    .map(|n| pair(format!("{n} ")))
                    .collect();
                nicks.sort_by(|a, b| a.display.cmp(&b.display));
                Ok((c.start, nicks))
            }
            ArgKind::Remote => {
                if c.word.starts_with('-') {
                    return Ok((pos, Vec::new()));
                }
                let (dir, prefix) = match c.word.rfind('/') {
                    Some(i) => (&c.word[..=i], &c.word[i + 1..]),
                    None => ("", c.word.as_str()),
                };
                let mut out: Vec<Pair> = self
                    .remote(dir)
                    .into_iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, is_dir)| {
                        let full = format!("{dir}{name}");
                        Pair {
                            display: if is_dir { format!("{name}/") } else { name },
                            replacement: if is_dir {
                                format!("{}/", line::escape(&full))
                            } else {
                                format!("{} ", line::escape(&full))
                            },
                        }
                    })
                    .collect();
                out.sort_by(|a, b| a.display.cmp(&b.display));
                Ok((c.start, out))
            }
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// The history file: `$XDG_CONFIG_HOME/ferry/history`, else `~/.config/ferry/history`.
pub fn history_path() -> Option<PathBuf> {
    ferry_client::known_hosts::default_path().map(|p| p.with_file_name("history"))
}

/// The editor thread's handles, for the loop.
pub struct EditorHandle {
    /// Requests to the editor thread.
    pub to: std::sync::mpsc::SyncSender<ToEditor>,
    /// Its answers.
    pub from: mpsc::Receiver<FromEditor>,
    /// Completion's questions.
    pub lookups: mpsc::Receiver<Lookup>,
    /// Prints above the prompt, if the terminal allows.
    pub printer: Option<Printer>,
    /// A problem with the history file, to tell the user once.
    pub history_problem: Option<String>,
}

/// Starts the editor on its thread. `commands` are the names to complete.
pub fn start(commands: Vec<String>, generation: Arc<AtomicU64>) -> std::io::Result<EditorHandle> {
    let config = Config::builder()
        .max_history_size(HISTORY_LINES)
        .map_err(std::io::Error::other)?
        .history_ignore_dups(true)
        .map_err(std::io::Error::other)?
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::with_config(config).map_err(std::io::Error::other)?;
    let (lookup_tx, lookups) = mpsc::channel(4);
    editor.set_helper(Some(ShellHelper {
        commands,
        files: FilenameCompleter::new(),
        lookups: lookup_tx,
        generation,
        cache: RefCell::new(HashMap::new()),
        asking: Cell::new(false),
    }));
    let history = history_path();
    let mut history_problem = None;
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                history_problem = Some(format!("history not kept: {}: {e}", dir.display()));
            }
        }
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                history_problem = Some(format!("cannot read the history {}: {e}", path.display()))
            }
        }
    }
    let printer: Option<Printer> = editor.create_external_printer().ok().map(|mut p| {
        Box::new(move |line: String| {
            let _ = p.print(line);
        }) as Printer
    });
    let (to, requests) = std::sync::mpsc::sync_channel(1);
    let (answers, from) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("ferry-editor".into())
        .spawn(move || run(editor, requests, answers, history))?;
    Ok(EditorHandle {
        to,
        from,
        lookups,
        printer,
        history_problem,
    })
}

/// The editor thread: one request, one answer, until the loop hangs up.
fn run(
    mut editor: Editor<ShellHelper, FileHistory>,
    requests: std::sync::mpsc::Receiver<ToEditor>,
    answers: mpsc::Sender<FromEditor>,
    history: Option<PathBuf>,
) {
    let mut history_failed = false;
    while let Ok(req) = requests.recv() {
        let (prompt, asking) = match req {
            ToEditor::Read(p) => (p, false),
            ToEditor::Ask(q) => (q, true),
        };
        if let Some(h) = editor.helper_mut() {
            h.asking.set(asking);
        }
        let answer = match editor.readline(&prompt) {
            Ok(text) => {
                if !asking && !text.trim().is_empty() {
                    let _ = editor.add_history_entry(line::redact(text.trim_end()));
                    if let (Some(path), false) = (&history, history_failed) {
                        if let Err(e) = editor.append_history(path) {
                            history_failed = true;
                            eprintln!("ferry: history not saved in {}: {e}", path.display());
                        }
                    }
                }
                FromEditor::Line(text)
            }
            Err(ReadlineError::Interrupted) => FromEditor::Interrupted,
            Err(_) => FromEditor::Eof,
        };
        if answers.blocking_send(answer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn argument_kinds() {
        assert_eq!(arg_kind(&words("get")), ArgKind::Remote);
        assert_eq!(arg_kind(&words("get -r a -o")), ArgKind::Local);
        assert_eq!(arg_kind(&words("put")), ArgKind::Local);
        assert_eq!(arg_kind(&words("put a --to")), ArgKind::Remote);
        assert_eq!(arg_kind(&words("lcd")), ArgKind::Local);
        assert_eq!(arg_kind(&words("rm -f")), ArgKind::Remote);
        assert_eq!(arg_kind(&words("msg")), ArgKind::Nick);
        assert_eq!(arg_kind(&words("msg bob")), ArgKind::Nothing);
        assert_eq!(arg_kind(&words("open")), ArgKind::Nothing);
        assert_eq!(arg_kind(&[]), ArgKind::Nothing);
    }
}
