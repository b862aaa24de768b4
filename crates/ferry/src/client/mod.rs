//! The one-shot client commands: `ferry ls|get|put|rm|mkdir|rmdir|mv|hash|quota URL…`.
//! Arguments (clap), credentials, connections and exit codes here; transfers in `transfer`,
//! terminal output in `output`; the FTP work in `ferry-client`.

pub(crate) mod connect;
pub(crate) mod output;
pub(crate) mod transfer;

use std::io::Write as _;
use std::path::PathBuf;

use ferry_client::proto::units::format_size;
use ferry_client::{Error, ErrorKind, FtpUrl, Kind};

use connect::Connections;
use output::Out;

/// The exit codes, shown by every client command's `--help`.
pub const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 local file error, 2 usage error, 3 connection, TLS or certificate \
problem, 4 authentication refused, 5 request refused by the server (e.g. no such file), \
6 verification failed (the file does not match the server's digest).

Passwords: from the URL, ~/.netrc (machine/login/password), $FERRY_PASSWORD, else asked for.
Certificates: system roots, --ca-file, or trust on first use (~/.config/ferry/known_hosts).";

/// Options shared by the client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the FTP dialogue on stderr (passwords hidden)
    #[arg(short, long)]
    pub verbose: bool,
    /// Trust only the certificates (CAs or the server's own) in this PEM file
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Trust a certificate seen for the first time without asking, and remember it
    #[arg(long)]
    pub accept_new_cert: bool,
    /// Send the password even if the server refuses TLS (needed for non-loopback hosts)
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Do not ask for TLS on ftp:// URLs (the password rule of --allow-plaintext still applies)
    #[arg(long)]
    pub no_tls: bool,
    /// Seconds to wait for a connection, a reply, or data to move
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

/// `ferry ls`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct LsArgs {
    /// Directories to list: ftp://, ftpes:// or ftps://user:password@host:port/path (user, password and port optional)
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry get`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct GetArgs {
    /// Remote files (or directories with -r), then optionally a local destination
    /// (default: the current directory)
    #[arg(value_name = "URL… [DEST]")]
    pub args: Vec<String>,
    /// Download directories recursively
    #[arg(short, long)]
    pub recursive: bool,
    /// Resume partial downloads (the partial is checked with RANG+HASH first)
    #[arg(short = 'c', long = "continue")]
    pub resume: bool,
    /// Skip the digest check after each transfer
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry put`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct PutArgs {
    /// Local files (or directories with -r), then the remote URL (a directory ending in `/`,
    /// an existing directory, or the new file's name); missing directories are created
    #[arg(value_name = "FILE… URL")]
    pub args: Vec<String>,
    /// Upload directories recursively
    #[arg(short, long)]
    pub recursive: bool,
    /// Resume partial uploads (the server's partial is checked with RANG+HASH first)
    #[arg(short = 'c', long = "continue")]
    pub resume: bool,
    /// Skip the digest check after each transfer
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry rm`, `ferry rmdir`, `ferry hash`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct PathsArgs {
    /// ftp://, ftpes:// or ftps://user:password@host:port/path (user, password and port optional)
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry mkdir`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct MkdirArgs {
    /// Directories to create
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// Create missing parent directories too, and accept directories that exist
    #[arg(short, long)]
    pub parents: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry mv`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct MvArgs {
    /// The file or directory to rename
    #[arg(value_name = "URL")]
    pub from: Option<String>,
    /// The new name: a URL on the same server, or a path (relative to FROM's directory unless
    /// it starts with /)
    #[arg(value_name = "TO")]
    pub to: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `ferry quota`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct QuotaArgs {
    /// The server (and account) to ask
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The exit code of an error.
pub(crate) fn exit_code(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Usage => 2,
        ErrorKind::Connection => 3,
        ErrorKind::Auth => 4,
        ErrorKind::Refused => 5,
        ErrorKind::Verify => 6,
        ErrorKind::Local => 1,
    }
}

/// Prints the error as one line and exits with its code (the binary's `main` only knows 0/1).
pub(crate) fn finish(result: Result<(), Error>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = e.to_string().replace(['\r', '\n'], " ");
            eprintln!("ferry: {text}");
            std::process::exit(exit_code(&e))
        }
    }
}

/// Parses the URL arguments of `command`; at least one is required.
fn parse_urls(command: &str, args: &[String]) -> Result<Vec<FtpUrl>, Error> {
    if args.is_empty() {
        return Err(Error::Usage(format!(
            "{command} needs a URL: ferry {command} ftp://[user@]host[:port]/path"
        )));
    }
    args.iter().map(|u| parse_url(u)).collect()
}

/// Parses a URL argument (a usage error if it is not one).
pub(crate) fn parse_url(s: &str) -> Result<FtpUrl, Error> {
    FtpUrl::parse(s).map_err(|e| Error::Usage(e.to_string()))
}

fn stdout_line(out: &Out, line: &str) {
    out.suspend(|| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
    });
}

/// `ferry ls URL…`.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    finish(ls_inner(args).await)
}

async fn ls_inner(args: LsArgs) -> Result<(), Error> {
    let urls = parse_urls("ls", &args.urls)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    let many = urls.len() > 1;
    for url in &urls {
        let client = conns.get(url).await?;
        let entries = client.list(&url.path).await?;
        let mut text = String::new();
        if many {
            text.push_str(&format!("{url}:\n"));
        }
        text.push_str(&format_listing(entries));
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
    }
    conns.close().await;
    Ok(())
}

/// A listing as `ls` shows it: kind, size, time (UTC), name (`/` after directories), sorted.
pub(crate) fn format_listing(mut entries: Vec<ferry_client::Entry>) -> String {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut text = String::new();
    for e in &entries {
        let kind = match e.kind {
            Kind::Dir => 'd',
            Kind::File => '-',
            Kind::Link => 'l',
            Kind::Other => '?',
        };
        let size = match (e.kind, e.size) {
            (Kind::Dir, _) | (_, None) => String::new(),
            (_, Some(n)) => format_size(n),
        };
        let when = e.modified.map_or_else(String::new, |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute
            )
        });
        let slash = if e.kind == Kind::Dir { "/" } else { "" };
        text.push_str(&format!(
            "{kind} {size:>10}  {when:16}  {}{slash}\n",
            e.name
        ));
    }
    text
}

/// `ferry get URL… [DEST]`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    finish(transfer::get(args).await)
}

/// `ferry put FILE… URL`.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    finish(transfer::put(args).await)
}

/// `ferry rm URL…`.
pub async fn rm(args: PathsArgs) -> anyhow::Result<()> {
    finish(
        simple(args, "rm", "removed", |c, p| {
            Box::pin(async move { c.dele(&p).await })
        })
        .await,
    )
}

/// `ferry rmdir URL…`.
pub async fn rmdir(args: PathsArgs) -> anyhow::Result<()> {
    finish(
        simple(args, "rmdir", "removed directory", |c, p| {
            Box::pin(async move { c.rmd(&p).await })
        })
        .await,
    )
}

type OpFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'a>>;

async fn simple(
    args: PathsArgs,
    command: &str,
    done: &str,
    op: for<'a> fn(&'a mut ferry_client::Client, String) -> OpFuture<'a>,
) -> Result<(), Error> {
    let urls = parse_urls(command, &args.urls)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    for url in &urls {
        if url.path.is_empty() || url.path == "/" {
            return Err(Error::Usage(format!(
                "{url}: name a path, not the top directory"
            )));
        }
        let client = conns.get(url).await?;
        op(client, url.path.clone()).await?;
        if !out.quiet() {
            stdout_line(&out, &format!("{done} {}", url.path));
        }
    }
    conns.close().await;
    Ok(())
}

/// `ferry mkdir [-p] URL…`.
pub async fn mkdir(args: MkdirArgs) -> anyhow::Result<()> {
    finish(mkdir_inner(args).await)
}

async fn mkdir_inner(args: MkdirArgs) -> Result<(), Error> {
    let urls = parse_urls("mkdir", &args.urls)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    for url in &urls {
        if url.path.trim_matches('/').is_empty() {
            return Err(Error::Usage(format!("{url}: name the directory to create")));
        }
        let client = conns.get(url).await?;
        if args.parents {
            client.mkdirs(&url.path).await?;
        } else {
            client.mkd(&url.path).await?;
        }
        if !out.quiet() {
            stdout_line(&out, &format!("created {}", url.path));
        }
    }
    conns.close().await;
    Ok(())
}

/// `ferry mv URL TO`.
pub async fn mv(args: MvArgs) -> anyhow::Result<()> {
    finish(mv_inner(args).await)
}

async fn mv_inner(args: MvArgs) -> Result<(), Error> {
    let (Some(from), Some(to_arg)) = (&args.from, &args.to) else {
        return Err(Error::Usage(
            "mv needs a URL and a new name: ferry mv ftp://host/old.txt new.txt".into(),
        ));
    };
    let from = parse_url(from)?;
    if from.path.trim_matches('/').is_empty() {
        return Err(Error::Usage(format!("{from}: name the file to rename")));
    }
    let to = if ferry_client::url::is_url(to_arg) {
        let to = parse_url(to_arg)?;
        if to.host != from.host || to.port != from.port {
            return Err(Error::Usage(
                "mv renames on one server: FROM and TO must name the same host and port".into(),
            ));
        }
        to.path
    } else if to_arg.starts_with('/') {
        to_arg.clone()
    } else {
        let from_trimmed = from.path.trim_end_matches('/');
        match from_trimmed.rfind('/') {
            Some(i) => format!("{}/{}", &from_trimmed[..i], to_arg),
            None => to_arg.clone(),
        }
    };
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    let client = conns.get(&from).await?;
    client.rename(&from.path, &to).await?;
    if !out.quiet() {
        stdout_line(&out, &format!("renamed {} to {to}", from.path));
    }
    conns.close().await;
    Ok(())
}

/// `ferry hash URL…`.
pub async fn hash(args: PathsArgs) -> anyhow::Result<()> {
    finish(hash_inner(args).await)
}

async fn hash_inner(args: PathsArgs) -> Result<(), Error> {
    let urls = parse_urls("hash", &args.urls)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    for url in &urls {
        let client = conns.get(url).await?;
        match client.remote_digest(&url.path, None).await? {
            Some(d) => stdout_line(&out, &format!("{} {}  {}", d.algo.name(), d.hex, url.path)),
            None => {
                return Err(Error::Usage(format!(
                    "{}: the server offers no way to hash files (HASH, XSHA256, XSHA1, XMD5)",
                    url.host_port()
                )))
            }
        }
    }
    conns.close().await;
    Ok(())
}

/// `ferry quota URL`.
pub async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    finish(quota_inner(args).await)
}

async fn quota_inner(args: QuotaArgs) -> Result<(), Error> {
    let url = parse_urls("quota", args.url.as_slice())?.remove(0);
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    let client = conns.get(&url).await?;
    let q = client.quota().await?;
    stdout_line(&out, &format_quota(&q));
    conns.close().await;
    Ok(())
}

/// The quota line: used, reserved, quota, free, files.
pub(crate) fn format_quota(q: &ferry_client::Quota) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), format_size);
    let mut parts = vec![format!("used {}", opt(q.used))];
    if let Some(r) = q.reserved.filter(|&r| r > 0) {
        parts.push(format!("reserved {}", format_size(r)));
    }
    parts.push(format!(
        "quota {}",
        q.limit.map_or_else(|| "none".to_string(), format_size)
    ));
    parts.push(format!("free {}", opt(q.free)));
    if let Some(f) = q.files {
        parts.push(format!("{f} files"));
    }
    parts.join(", ")
}
