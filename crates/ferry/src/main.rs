//! The `ferry` binary: `ferry serve` runs the server, `ferry user …` administers accounts, the
//! client commands (`ferry get/put/ls/…`, `ferry shell`, `ferry chat`) talk to servers.
//! Argument parsing (clap) and wiring only; the work happens in the libraries.

mod chat;
mod client;
mod serve;
mod shell;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ferry: a multi-user FTP/FTPS file server with a chat room and a command-line client.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (FTP on 127.0.0.1:2121 with the embedded defaults).
    Serve(serve::ServeArgs),
    /// Administer accounts: add, passwd, del, list, quota, rescan (works while the server runs).
    #[command(subcommand)]
    User(user::UserCmd),
    /// List remote directories: ferry ls ftp://user@host:2121/dir (exit codes: see its --help)
    Ls(client::LsArgs),
    /// Download files or trees (-r), resumable (-c), checked against the server's digest
    Get(client::GetArgs),
    /// Upload files or trees (-r), resumable (-c), checked against the server's digest
    Put(client::PutArgs),
    /// Delete remote files
    Rm(client::PathsArgs),
    /// Create remote directories (-p: with their parents)
    Mkdir(client::MkdirArgs),
    /// Remove empty remote directories
    Rmdir(client::PathsArgs),
    /// Rename or move a remote file or directory
    Mv(client::MvArgs),
    /// Show the server's digest (SHA-256 where offered) of remote files
    Hash(client::PathsArgs),
    /// Show the account's disk usage, quota and free space
    Quota(client::QuotaArgs),
    /// Interactive session: ls, cd, get, put, rm, … with history, completion and the chat
    Shell(shell::ShellArgs),
    /// Chat room client: ferry chat irc://user@host:6667 (ircs:// for TLS)
    Chat(chat::ChatArgs),
}

/// Where the data lives, shared by `serve` and `user`.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data directory (database, homes, logs). Default: `data_dir` of the config, else ./ferry-data
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Config file (ferry.toml)
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// Makes glibc serve large allocations (argon2's 19 MiB per password check) with mmap and give
/// them back on free. Without this, glibc's adaptive threshold keeps them in per-thread arenas
/// after the first one, and a burst of logins leaves hundreds of MiB resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // reason: one libc setting call at start, before any other thread exists
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    // Before the runtime's threads exist: the local time zone cannot be read safely after.
    chat::init_local_time();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // Usage errors are one line that says what is valid (clap's first line), exit 2.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "ferry: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    // While this is the only thread: growing the descriptor table later, with the runtime's
    // threads running, waits for an RCU grace period (fdtable.rs), ~13 ms here.
    let table = matches!(cli.command, Cmd::Serve(_)).then(ferry_server::fdtable::grow_to_limit);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve(args) => serve::run(args, table).await,
            Cmd::User(cmd) => user::run(cmd).await,
            Cmd::Ls(args) => client::ls(args).await,
            Cmd::Get(args) => client::get(args).await,
            Cmd::Put(args) => client::put(args).await,
            Cmd::Rm(args) => client::rm(args).await,
            Cmd::Mkdir(args) => client::mkdir(args).await,
            Cmd::Rmdir(args) => client::rmdir(args).await,
            Cmd::Mv(args) => client::mv(args).await,
            Cmd::Hash(args) => client::hash(args).await,
            Cmd::Quota(args) => client::quota(args).await,
            Cmd::Shell(args) => shell::run(args).await,
            Cmd::Chat(args) => chat::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}
