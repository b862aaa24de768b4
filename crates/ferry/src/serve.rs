//! `ferry serve`: load the config, open the accounts (creating `admin` on the first start), bind
//! the listeners, print where we listen, and serve until SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use anyhow::Context;
use ferry_server::accounts::{admin, Accounts, NewUser, Permissions};
use ferry_server::config::TlsPolicy;
use ferry_server::tls::{self, Tls};
use ferry_server::{Config, Overrides, Server};

use crate::DataArgs;

/// Arguments of `ferry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// FTP listen address (repeatable; port 0 picks a free port). Default 127.0.0.1:2121
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Implicit-TLS (ftps://) listen address (repeatable). Default none
    #[arg(long, value_name = "ADDR:PORT")]
    listen_implicit: Vec<SocketAddr>,
    /// Chat (IRC) listen address (repeatable). Default 127.0.0.1:6667
    #[arg(long, value_name = "ADDR:PORT")]
    chat_listen: Vec<SocketAddr>,
    /// Chat over TLS listen address (repeatable). Default none
    #[arg(long, value_name = "ADDR:PORT")]
    chat_listen_tls: Vec<SocketAddr>,
    /// Passive data port range. Default 30000-31999
    #[arg(long, value_name = "A-B")]
    passive_ports: Option<String>,
    /// Log format
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    log_format: Option<String>,
    /// Override any ferry.toml key, e.g. --set limits.max_sessions_per_ip=500 (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective configuration and exit
    #[arg(long)]
    print_config: bool,
    /// Print the TLS certificate's SHA-256 fingerprint (creating the default one if needed) and exit
    #[arg(long)]
    print_fingerprint: bool,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Loads the config from the shared flags plus extra overrides.
pub fn load_config(data: &DataArgs, mut overrides: Overrides) -> anyhow::Result<Config> {
    overrides.data_dir = data.data_dir.clone();
    Ok(Config::load(data.config.as_deref(), &overrides)?)
}

/// The configured certificate, or the generated default in the data directory.
fn load_tls(config: &Config) -> anyhow::Result<Tls> {
    let (cert, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => tls::ensure_generated(&config.data_dir)?,
    };
    Ok(Tls::load(&cert, &key)?)
}

/// Registers the signals that stop the server (SIGINT, SIGTERM) and returns the wait for one.
/// Registered at start-up, before the server says it is listening: a signal that came before
/// its handler existed would kill the process instead of shutting it down.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Runs the server.
pub async fn run(args: ServeArgs, table: Option<std::io::Result<u64>>) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen.clone(),
        listen_implicit: args.listen_implicit.clone(),
        chat_listen: args.chat_listen.clone(),
        chat_listen_tls: args.chat_listen_tls.clone(),
        passive_ports: args.passive_ports.clone(),
        log_format: args.log_format.clone(),
        set: args.set.clone(),
        ..Overrides::default()
    };
    let config = load_config(&args.data, overrides)?;
    let mut out = std::io::stdout().lock();
    if args.print_config {
        write!(out, "{}", config.to_toml())?;
        return Ok(());
    }
    let tls = load_tls(&config)?;
    if args.print_fingerprint {
        writeln!(out, "{}", tls.fingerprint())?;
        return Ok(());
    }
    init_logging(&config.log.format);
    let stop = shutdown_signal()?;
    match table {
        Some(Ok(slots)) => tracing::debug!(slots, "descriptor table grown"),
        Some(Err(e)) => tracing::warn!(error = %e, "cannot grow the descriptor table"),
        None => {}
    }
    let accounts = Accounts::open(&config.data_dir)
        .await
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    if accounts.user_count().await? == 0 {
        let password = admin::generate_password();
        let user = admin::add(
            &accounts,
            NewUser {
                name: "admin".into(),
                password: password.clone(),
                home: None,
                quota_bytes: None,
                quota_files: None,
                perms: Permissions::default(),
            },
        )
        .await?;
        writeln!(
            out,
            "created user admin with password {password}\n  (shown once; change it with: ferry user passwd admin --data-dir {})\n  home: {}",
            config.data_dir.display(),
            accounts.home_of(&user).display()
        )?;
    }
    writeln!(
        out,
        "tls certificate {} sha256 {}",
        tls.cert_path().display(),
        tls.fingerprint()
    )?;
    let policy = config.tls_policy();
    let server = Server::bind(config, accounts, tls).await?;
    for (addr, kind) in server.local_addrs() {
        writeln!(out, "listening {} {addr}", kind.name())?;
    }
    writeln!(
        out,
        "tls required: {}",
        match policy {
            TlsPolicy::Off => "no (loopback only; offered with AUTH TLS)",
            TlsPolicy::Login => "for logins",
            TlsPolicy::All => "for logins and data connections",
        }
    )?;
    out.flush()?;
    drop(out);
    server
        .run(ferry_server::shards::default_count(), stop)
        .await?;
    Ok(())
}
