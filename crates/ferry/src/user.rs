//! `ferry user …`: account administration through the same database the server uses, so every
//! command works while the server runs.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use ferry_proto::units::{format_size, parse_size};
use ferry_server::accounts::{admin, Accounts, HomeFate, NewUser, Permissions};
use ferry_server::Overrides;

use crate::serve::load_config;
use crate::DataArgs;

/// `ferry user` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Add a user with a home directory (default DATA_DIR/homes/NAME)
    Add {
        /// Account name (letters, digits, '.', '_', '-'; up to 32)
        name: String,
        /// Read the password from standard input (one line) instead of prompting
        #[arg(long)]
        password_stdin: bool,
        /// Home directory (default DATA_DIR/homes/NAME)
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Disk quota, e.g. 10MiB, 5G, 1024 (default: none)
        #[arg(long, value_name = "SIZE", value_parser = size_arg)]
        quota: Option<u64>,
        /// Most files the user may have (default: no limit)
        #[arg(long, value_name = "N")]
        quota_files: Option<u64>,
        /// May read and list only (and chat)
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Change a user's password
    Passwd {
        /// Account name
        name: String,
        /// Read the password from standard input (one line) instead of prompting
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Delete a user (and the default home with its files, unless --keep-files)
    Del {
        /// Account name
        name: String,
        /// Keep the home directory and its files
        #[arg(long)]
        keep_files: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List users with used / reserved / quota
    List {
        /// Machine-readable JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set a user's disk quota: SIZE (10MiB, 5G, 1024) or none
    Quota {
        /// Account name
        name: String,
        /// New quota, or `none`
        #[arg(value_name = "SIZE|none", value_parser = quota_arg)]
        size: QuotaArg,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Announce this user's uploads, deletes and renames in the chat room: on or off
    Announce {
        /// Account name
        name: String,
        /// on or off
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Recount the bytes and files in homes and fix the quota ledger
    Rescan {
        /// Only this user (default: all)
        name: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// A quota value: bytes or none.
#[derive(Debug, Clone, Copy)]
pub struct QuotaArg(Option<u64>);

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn quota_arg(s: &str) -> Result<QuotaArg, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(QuotaArg(None))
    } else {
        size_arg(s).map(|n| QuotaArg(Some(n)))
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    } else {
        bail!(
            "no terminal to ask for the password: pass it on standard input with --password-stdin"
        );
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

async fn open(data: &DataArgs) -> anyhow::Result<Accounts> {
    let config = load_config(data, Overrides::default())?;
    Accounts::open(&config.data_dir)
        .await
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))
}

#[derive(serde::Serialize)]
struct UserRow {
    name: String,
    used_bytes: u64,
    used_files: u64,
    reserved_bytes: u64,
    quota_bytes: Option<u64>,
    quota_files: Option<u64>,
    home: String,
    read_only: bool,
    enabled: bool,
}

/// Runs a `ferry user` command.
pub async fn run(cmd: UserCmd) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        UserCmd::Add {
            name,
            password_stdin,
            home,
            quota,
            quota_files,
            read_only,
            data,
        } => {
            let password = read_password(password_stdin)?;
            let accounts = open(&data).await?;
            let home = home.map(|h| std::path::absolute(&h)).transpose()?;
            let perms = if read_only {
                Permissions::read_only()
            } else {
                Permissions::default()
            };
            let new = NewUser {
                name,
                password,
                home,
                quota_bytes: quota,
                quota_files,
                perms,
            };
            let user = admin::add(&accounts, new).await?;
            writeln!(
                out,
                "added user {} (home {})",
                user.name,
                accounts.home_of(&user).display()
            )?;
        }
        UserCmd::Passwd {
            name,
            password_stdin,
            data,
        } => {
            let password = read_password(password_stdin)?;
            let accounts = open(&data).await?;
            accounts.set_password(&name, &password).await?;
            writeln!(out, "password of {name} changed")?;
        }
        UserCmd::Del {
            name,
            keep_files,
            data,
        } => {
            let accounts = open(&data).await?;
            let outcome = admin::delete(&accounts, &name, keep_files).await?;
            let fate = match outcome.home_fate {
                HomeFate::Removed => format!("home {} removed", outcome.home.display()),
                HomeFate::KeptOnRequest => format!("home {} kept", outcome.home.display()),
                HomeFate::KeptCustomHome => format!(
                    "custom home {} kept (never deleted)",
                    outcome.home.display()
                ),
                HomeFate::Missing => "it had no home directory".to_string(),
            };
            writeln!(out, "deleted user {name}; {fate}")?;
        }
        UserCmd::List { json, data } => {
            let accounts = open(&data).await?;
            let rows: Vec<UserRow> = accounts
                .list_users()
                .await?
                .into_iter()
                .map(|(u, usage)| UserRow {
                    home: accounts.home_of(&u).display().to_string(),
                    read_only: !u.perms.write,
                    enabled: u.enabled,
                    name: u.name,
                    used_bytes: usage.used_bytes,
                    used_files: usage.used_files,
                    reserved_bytes: usage.reserved_bytes,
                    quota_bytes: usage.quota_bytes,
                    quota_files: usage.quota_files,
                })
                .collect();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:>10} {:>10} {:>10} {:>7}  HOME",
                    "NAME", "USED", "RESERVED", "QUOTA", "FILES"
                )?;
                for r in rows {
                    let quota = r
                        .quota_bytes
                        .map_or_else(|| "none".to_string(), format_size);
                    let flags = if r.read_only { " (read-only)" } else { "" };
                    writeln!(
                        out,
                        "{:<20} {:>10} {:>10} {:>10} {:>7}  {}{flags}",
                        r.name,
                        format_size(r.used_bytes),
                        format_size(r.reserved_bytes),
                        quota,
                        r.used_files,
                        r.home
                    )?;
                }
            }
        }
        UserCmd::Quota { name, size, data } => {
            let accounts = open(&data).await?;
            accounts.set_quota(&name, size.0).await?;
            match size.0 {
                Some(n) => writeln!(out, "quota of {name} set to {} ({n} bytes)", format_size(n))?,
                None => writeln!(out, "quota of {name} removed")?,
            }
        }
        UserCmd::Announce { name, state, data } => {
            let accounts = open(&data).await?;
            accounts.set_announce_files(&name, state == "on").await?;
            writeln!(
                out,
                "file activity of {name} is {} in the chat room (from the next login)",
                if state == "on" {
                    "announced"
                } else {
                    "not announced"
                }
            )?;
        }
        UserCmd::Rescan { name, data } => {
            let accounts = open(&data).await?;
            for (name, usage) in admin::rescan(&accounts, name.as_deref()).await? {
                writeln!(
                    out,
                    "{name}: {} in {} files",
                    format_size(usage.used_bytes),
                    usage.used_files
                )?;
            }
        }
    }
    Ok(())
}
