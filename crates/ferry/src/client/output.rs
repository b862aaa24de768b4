//! What the client shows while it works: indicatif progress bars on a terminal (one per file,
//! and an overall bar when there are several files), plain progress lines every few seconds
//! when stderr is not a terminal, nothing with `-q`. Errors are always shown.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use ferry_client::proto::units::format_size;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain (non-terminal) progress line is written for a long transfer.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The output of one command.
pub struct Out {
    quiet: bool,
    multi: Option<MultiProgress>,
    has_overall: std::sync::atomic::AtomicBool,
}

impl Out {
    /// Bars if stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Out {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Out {
            quiet,
            multi,
            has_overall: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The progress bars, if they are shown (to print around them).
    pub fn bars(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// `-q` was given.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Runs `f` with the bars hidden (for printing to the terminal).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    /// A notice on stderr (not with `-q`).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            self.suspend(|| eprintln!("ferry: {text}"));
        }
    }

    /// A summary line on stdout (not with `-q`).
    pub fn summary(&self, text: &str) {
        if !self.quiet {
            self.suspend(|| {
                use std::io::Write as _;
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{text}");
            });
        }
    }

    /// An overall bar for `files` files of `bytes` bytes in total (only on a terminal, and only
    /// for more than one file).
    pub fn overall(&self, files: usize, bytes: u64) -> Option<ProgressBar> {
        let m = self.multi.as_ref()?;
        if files < 2 {
            return None;
        }
        let pb = m.add(ProgressBar::new(bytes));
        pb.set_style(
            ProgressStyle::with_template(
                "total {msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_message(format!("0/{files} files"));
        self.has_overall
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Some(pb)
    }

    /// A progress display for one file of `total` bytes (if known), starting at `start`.
    pub fn file(&self, label: &str, total: Option<u64>, start: u64) -> FileProgress {
        let bar = self.multi.as_ref().map(|m| {
            let pb = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::no_length(),
            };
            let overall = self.has_overall.load(std::sync::atomic::Ordering::Relaxed);
            let pb = m.insert_from_back(usize::from(overall), pb);
            let template = if total.is_some() {
                "{msg:30!} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
            } else {
                "{msg:30!} {spinner} {binary_bytes} {binary_bytes_per_sec}"
            };
            pb.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_message(label.to_string());
            pb.set_position(start);
            pb.reset_eta();
            pb
        });
        FileProgress {
            bar,
            plain: !self.quiet && self.multi.is_none(),
            label: label.to_string(),
            total,
            last_plain: Instant::now(),
            position: start,
        }
    }
}

/// The progress of one file.
pub struct FileProgress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    total: Option<u64>,
    last_plain: Instant,
    position: u64,
}

impl FileProgress {
    /// The file's byte position is now `pos`.
    pub fn set(&mut self, pos: u64) {
        self.position = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
        } else if self.plain && self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            let of = match self.total {
                Some(t) if t > 0 => format!(
                    " of {} ({}%)",
                    format_size(t),
                    u128::from(pos) * 100 / u128::from(t)
                ),
                _ => String::new(),
            };
            eprintln!("ferry: {}: {}{of}", self.label, format_size(pos));
        }
    }

    /// Where the file is.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
