//! `ferry get` and `ferry put`: plan the files (several sources, `-r` trees, `put` creating
//! missing remote directories), move each one with a progress display while its digest is
//! computed, check it against the server's digest afterwards, and resume (`-c`) only from a
//! partial file whose bytes the server confirms (`RANG` + `HASH`), starting over otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_client::client::{basename, join};
use ferry_client::proto::ftp::command::HashAlgo;
use ferry_client::proto::ftp::Reply;
use ferry_client::proto::units::format_size;
use ferry_client::url::is_url;
use ferry_client::{Client, Error, FtpUrl, Hasher, Kind, StorMode};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::connect::Connections;
use super::output::{FileProgress, Out};
use super::{parse_url, GetArgs, PutArgs};

/// Deepest directory tree walked with `-r`.
const MAX_DEPTH: usize = 64;

/// A directory tree: its directories (relative, parents first) and its files with their sizes.
type Tree<S> = (Vec<String>, Vec<(String, S)>);

/// One file to move.
struct Job {
    /// Which source (of `get`) it comes from: the index of its URL.
    source: usize,
    remote: String,
    local: PathBuf,
    size: Option<u64>,
}

/// How `get` and `put` move files: the one-shot commands' flags, or the shell's.
#[derive(Debug, Clone, Copy)]
pub struct TransferOpts {
    /// `-r`: directories recursively.
    pub recursive: bool,
    /// `-c`: resume partial files.
    pub resume: bool,
    /// Compare with the server's digest afterwards (not `--no-verify`).
    pub verify: bool,
    /// How the user resumes, for the messages: `ferry get -c` or, in the shell, `get -c`.
    pub prefix: &'static str,
}

/// Where `get` finds the session for a URL: one per server (the one-shot commands, which take
/// URLs of several servers) or the shell's single session.
pub trait Sessions {
    /// The logged-in session for `url`'s server.
    fn session(
        &mut self,
        url: &FtpUrl,
    ) -> impl std::future::Future<Output = Result<&mut Client, Error>> + Send;
}

impl Sessions for Connections<'_> {
    async fn session(&mut self, url: &FtpUrl) -> Result<&mut Client, Error> {
        self.get(url).await
    }
}

/// How a transfer was checked.
enum Check {
    Digest(HashAlgo),
    Size,
    Skipped(&'static str),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Digest(a) => write!(f, "{} verified", a.name()),
            Check::Size => write!(f, "size checked (the server offers no digest)"),
            Check::Skipped(why) => write!(f, "not verified ({why})"),
        }
    }
}

fn missing(what: &str) -> Error {
    Error::Refused {
        context: what.to_string(),
        reply: Reply::new(550, "no such file or directory"),
    }
}

/// Adds `note` to an error's message, keeping its kind.
fn with_note(e: Error, note: &str) -> Error {
    match e {
        Error::Refused { context, reply } => Error::Refused {
            context: format!("{context} ({note})"),
            reply,
        },
        Error::Connection(m) => Error::Connection(format!("{m}; {note}")),
        Error::Tls(m) => Error::Tls(format!("{m}; {note}")),
        Error::Local(m) => Error::Local(format!("{m}; {note}")),
        Error::Verify(m) => Error::Verify(format!("{m}; {note}")),
        other => other,
    }
}

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    // reason: a display value; rounding is fine
    let per_sec = (bytes as f64 / secs) as u64;
    format!("{}/s", format_size(per_sec))
}

fn summary(
    verb: &str,
    name: &str,
    size: u64,
    resumed_at: u64,
    moved: u64,
    elapsed: Duration,
    check: &Check,
) -> String {
    let resumed = if resumed_at > 0 {
        format!(" (resumed at {})", format_size(resumed_at))
    } else {
        String::new()
    };
    format!(
        "{verb} {name}: {}{resumed} in {:.1} s ({}), {check}",
        format_size(size),
        elapsed.as_secs_f64(),
        rate(moved, elapsed)
    )
}

/// The algorithm to hash with while streaming, if the server can check it afterwards.
async fn digest_algo(client: &mut Client, verify: bool) -> Result<Option<HashAlgo>, Error> {
    if !verify {
        return Ok(None);
    }
    Ok(client.hash_method().await?.map(|m| m.algo()))
}

/// After a transfer: the server's digest against ours (or sizes, if it has no digest).
async fn check(
    client: &mut Client,
    remote: &str,
    local: Option<Hasher>,
    local_size: u64,
    verify: bool,
    kept: &str,
) -> Result<Check, Error> {
    if !verify {
        return Ok(Check::Skipped("--no-verify"));
    }
    if let Some(h) = local {
        let algo = h.algo();
        let ours = h.finish_hex();
        let theirs = match client.remote_digest(remote, None).await {
            Ok(d) => d,
            // A server that lists a digest command but will not run it: say so, do not fail.
            Err(Error::Refused { reply, .. }) if matches!(reply.code, 500 | 502 | 504) => {
                return Ok(Check::Skipped("the server refused to compute a digest"));
            }
            Err(e) => return Err(e),
        };
        return match theirs {
            Some(d) if d.algo == algo && d.hex == ours => Ok(Check::Digest(algo)),
            Some(d) if d.algo == algo => Err(Error::Verify(format!(
                "{remote}: {} mismatch: the server has {}, the transferred bytes give {ours}; {kept}",
                algo.name(),
                d.hex
            ))),
            _ => Ok(Check::Skipped("the server's digest is in another algorithm")),
        };
    }
    match client.size(remote).await {
        Ok(n) if n == local_size => Ok(Check::Size),
        Ok(n) => Err(Error::Verify(format!(
            "{remote}: size mismatch: the server has {n} bytes, the transfer gave {local_size}; {kept}"
        ))),
        Err(Error::Refused { .. }) => Ok(Check::Skipped("the server offers no digest and no SIZE")),
        Err(e) => Err(e),
    }
}

/// Whether the first `len` bytes of the local file match the server's (`RANG 0 len-1` + `HASH`).
/// `None` when the server cannot hash ranges. Returns the local prefix digest to continue with.
async fn prefix_matches(
    client: &mut Client,
    remote: &str,
    local: &Path,
    len: u64,
    algo: Option<HashAlgo>,
) -> Result<(Option<bool>, Option<Hasher>), Error> {
    let mut hasher = algo.map(Hasher::new);
    if let Some(h) = hasher.as_mut() {
        ferry_client::digest::hash_file_prefix(local, len, h).await?;
    }
    if len == 0 || !client.can_hash_ranges().await? {
        return Ok((None, hasher));
    }
    let Some(h) = hasher.clone() else {
        return Ok((None, hasher));
    };
    let ours = h.finish_hex();
    let theirs = client.remote_digest(remote, Some((0, len - 1))).await?;
    Ok((theirs.map(|d| d.hex == ours), hasher))
}

// --------------------------------------------------------------------------- get

/// Splits `URL… [DEST]`.
fn split_get(args: &[String]) -> Result<(Vec<FtpUrl>, Option<PathBuf>), Error> {
    let (last, rest) = args.split_last().ok_or_else(|| {
        Error::Usage("get needs a URL: ferry get ftp://[user@]host[:port]/path [DEST]".into())
    })?;
    let (sources, dest) = if is_url(last) {
        (args, None)
    } else {
        (rest, Some(PathBuf::from(last)))
    };
    if sources.is_empty() {
        return Err(Error::Usage(format!(
            "{last:?} is not a URL: get takes ftp://, ftpes:// or ftps:// URLs, then a local destination"
        )));
    }
    let mut urls = Vec::new();
    for s in sources {
        if !is_url(s) {
            return Err(Error::Usage(format!(
                "{s:?} is not a URL: only the last argument of get is a local destination"
            )));
        }
        urls.push(parse_url(s)?);
    }
    Ok((urls, dest))
}

/// Lists a remote tree: its directories (relative) and files.
async fn walk_remote(client: &mut Client, root: &str) -> Result<Tree<Option<u64>>, Error> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut todo = vec![(String::new(), 0usize)];
    while let Some((rel, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::Usage(format!(
                "{root}: deeper than {MAX_DEPTH} levels"
            )));
        }
        let path = if rel.is_empty() {
            root.to_string()
        } else {
            join(root, &rel)
        };
        for e in client.list(&path).await? {
            if e.name.contains('/') || e.name == "." || e.name == ".." {
                continue;
            }
            let child = join(&rel, &e.name);
            match e.kind {
                Kind::Dir => {
                    dirs.push(child.clone());
                    todo.push((child, depth + 1));
                }
                Kind::File | Kind::Link => files.push((child, e.size)),
                Kind::Other => {}
            }
        }
    }
    Ok((dirs, files))
}

/// A local path from a remote relative path (`a/b` → `a`/`b`), refusing `..` and absolute parts.
fn local_rel(base: &Path, rel: &str) -> Result<PathBuf, Error> {
    let mut p = base.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        if part == ".." || part == "." || part.contains('\0') {
            return Err(Error::Usage(format!("refusing the remote name {rel:?}")));
        }
        p.push(part);
    }
    Ok(p)
}

/// `ferry get`.
pub async fn get(args: GetArgs) -> Result<(), Error> {
    let (urls, dest) = split_get(&args.args)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    let opts = TransferOpts {
        recursive: args.recursive,
        resume: args.resume,
        verify: !args.no_verify,
        prefix: "ferry ",
    };
    get_urls(&mut conns, &urls, dest, &opts, &out).await?;
    conns.close().await;
    Ok(())
}

/// Downloads `urls` (files, or trees with `-r`) into `dest` (default: the current directory;
/// a directory if it is one, ends in `/`, or several sources are given).
pub async fn get_urls<S: Sessions>(
    conns: &mut S,
    urls: &[FtpUrl],
    dest: Option<PathBuf>,
    args: &TransferOpts,
    out: &Out,
) -> Result<(), Error> {
    let dest_given = dest.is_some();
    let dest = dest.unwrap_or_else(|| PathBuf::from("."));
    let dest_is_dir =
        dest.is_dir() || urls.len() > 1 || dest.to_string_lossy().ends_with('/') || !dest_given;
    let mut jobs = Vec::new();
    let mut local_dirs = Vec::new();
    for (source, url) in urls.iter().enumerate() {
        let client = conns.session(url).await?;
        let path = url.path.trim_end_matches('/').to_string();
        let is_root = path.is_empty() || url.path == "/";
        let entry = if is_root {
            None
        } else {
            client.stat(&path).await?
        };
        let is_dir = is_root || entry.as_ref().is_some_and(|e| e.kind == Kind::Dir);
        if !is_root && entry.is_none() {
            return Err(missing(&format!("get {url}")));
        }
        let name = if is_root {
            url.host.clone()
        } else {
            basename(&path).to_string()
        };
        let target = if dest_is_dir {
            dest.join(&name)
        } else {
            dest.clone()
        };
        if is_dir {
            if !args.recursive {
                return Err(Error::Usage(format!(
                    "{url} is a directory: use -r to download it"
                )));
            }
            // `get -r URL/dir DEST`: into DEST/dir if DEST is a directory, else as DEST.
            let (dirs, files) = walk_remote(client, &path).await?;
            local_dirs.push(target.clone());
            for d in dirs {
                local_dirs.push(local_rel(&target, &d)?);
            }
            for (rel, size) in files {
                jobs.push(Job {
                    source,
                    remote: join(&path, &rel),
                    local: local_rel(&target, &rel)?,
                    size,
                });
            }
        } else {
            jobs.push(Job {
                source,
                remote: path.clone(),
                local: target,
                size: entry.and_then(|e| e.size),
            });
        }
    }
    if urls.len() > 1 && !dest.exists() {
        local_dirs.insert(0, dest.clone());
    }
    for d in &local_dirs {
        std::fs::create_dir_all(d).map_err(|e| Error::Local(format!("{}: {e}", d.display())))?;
    }
    for j in &jobs {
        if let Some(parent) = j.local.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Local(format!("{}: {e}", parent.display())))?;
        }
    }
    let total: u64 = jobs.iter().filter_map(|j| j.size).sum();
    let overall = out.overall(jobs.len(), total);
    let mut done_bytes = 0u64;
    for (i, job) in jobs.iter().enumerate() {
        let client = conns.session(&urls[job.source]).await?;
        let moved = get_file(client, job, args, out, overall.as_ref(), done_bytes).await?;
        done_bytes += moved.max(job.size.unwrap_or(0));
        if let Some(o) = &overall {
            o.set_position(done_bytes);
            o.set_message(format!("{}/{} files", i + 1, jobs.len()));
        }
    }
    if let Some(o) = overall {
        o.finish_and_clear();
    }
    if jobs.is_empty() {
        out.note("nothing to download (empty directory)");
    }
    Ok(())
}

async fn get_file(
    client: &mut Client,
    job: &Job,
    args: &TransferOpts,
    out: &Out,
    overall: Option<&indicatif::ProgressBar>,
    overall_base: u64,
) -> Result<u64, Error> {
    let verify = args.verify;
    let algo = digest_algo(client, verify).await?;
    let remote_size = match job.size {
        Some(s) => Some(s),
        None => client.size(&job.remote).await.ok(),
    };
    let local_len = if args.resume {
        std::fs::metadata(&job.local).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };
    let shown = job.local.display().to_string();
    let mut offset = 0u64;
    let mut hasher = algo.map(Hasher::new);
    if local_len > 0 {
        match remote_size {
            Some(s) if local_len > s => out.note(&format!(
                "{shown} ({}) is larger than the server's file ({}): downloading it again",
                format_size(local_len),
                format_size(s)
            )),
            _ => {
                let (matches, h) =
                    prefix_matches(client, &job.remote, &job.local, local_len, algo).await?;
                match matches {
                    Some(false) => out.note(&format!(
                        "{shown}: the local {} do not match the server's first bytes (RANG+HASH): downloading from the start",
                        format_size(local_len)
                    )),
                    Some(true) => {
                        offset = local_len;
                        hasher = h;
                    }
                    None => {
                        out.note(&format!(
                            "{shown}: the server cannot hash byte ranges, resuming at {} unchecked (the whole file is checked at the end)",
                            format_size(local_len)
                        ));
                        offset = local_len;
                        hasher = h;
                    }
                }
            }
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(offset == 0)
        .open(&job.local)
        .await
        .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    if offset > 0 {
        file.set_len(offset)
            .await
            .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    }
    let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let started = Instant::now();
    let mut progress = out.file(&job.remote, remote_size, offset);
    let moved = if remote_size.is_some_and(|s| s == offset) && offset > 0 {
        0
    } else {
        let mut cb = |n: u64| {
            progress.set(offset + n);
            if let Some(o) = overall {
                o.set_position(overall_base + n);
            }
        };
        let r = client
            .retr(&job.remote, offset, &mut writer, hasher.as_mut(), &mut cb)
            .await;
        match r {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.flush().await;
                let have = std::fs::metadata(&job.local).map(|m| m.len()).unwrap_or(0);
                progress.finish();
                return Err(with_note(
                    e,
                    &format!(
                        "{} of {shown} kept: resume with {}get -c",
                        format_size(have),
                        args.prefix
                    ),
                ));
            }
        }
    };
    writer
        .flush()
        .await
        .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    let file = writer.into_inner();
    file.sync_all()
        .await
        .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    drop(file);
    let size = offset + moved;
    progress.finish();
    let elapsed = started.elapsed();
    let kept = format!("the downloaded file is kept as {shown}");
    let result = check(client, &job.remote, hasher, size, verify, &kept).await?;
    out.summary(&summary(
        "get",
        &job.remote,
        size,
        offset,
        moved,
        elapsed,
        &result,
    ));
    Ok(moved)
}

// --------------------------------------------------------------------------- put

/// Lists a local tree: directories (relative, parents first) and files with sizes.
fn walk_local(root: &Path) -> Result<Tree<u64>, Error> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut todo = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::Usage(format!(
                "{}: deeper than {MAX_DEPTH} levels",
                root.display()
            )));
        }
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::local(&dir, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::local(&dir, &e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::Local(format!(
                    "{}: the name is not UTF-8",
                    entry.path().display()
                )));
            };
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| Error::local(&path, &e))?;
            let child = join(&rel, name);
            if meta.is_dir() {
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    continue; // no loops through directory links
                }
                dirs.push(child.clone());
                todo.push((path, child, depth + 1));
            } else if meta.is_file() {
                files.push((child, meta.len()));
            }
        }
    }
    Ok((dirs, files))
}

/// `ferry put`.
pub async fn put(args: PutArgs) -> Result<(), Error> {
    let (last, sources) = args
        .args
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
        .ok_or_else(|| {
            Error::Usage(
                "put needs files and a URL: ferry put FILE… ftp://[user@]host[:port]/dir/".into(),
            )
        })?;
    if !is_url(last) {
        return Err(Error::Usage(format!(
            "{last:?} is not a URL: the last argument of put is where to upload (ftp://host/dir/)"
        )));
    }
    let url = parse_url(last)?;
    if let Some(s) = sources.iter().find(|s| is_url(s)) {
        return Err(Error::Usage(format!(
            "{s:?}: put uploads local files; only the last argument is a URL"
        )));
    }
    let locals = local_sources(sources, args.recursive)?;
    let out = Out::new(args.conn.quiet);
    let mut conns = Connections::new(&args.conn, &out);
    let client = conns.get(&url).await?;
    let opts = TransferOpts {
        recursive: args.recursive,
        resume: args.resume,
        verify: !args.no_verify,
        prefix: "ferry ",
    };
    put_to(client, &locals, &url.path, &opts, &out).await?;
    conns.close().await;
    Ok(())
}

/// A local file or directory to upload, with what it is.
pub type Local = (PathBuf, std::fs::Metadata);

/// Checks the local sources of `put`: they exist, and directories come with `-r`.
pub fn local_sources(sources: &[String], recursive: bool) -> Result<Vec<Local>, Error> {
    let mut locals = Vec::new();
    for s in sources {
        let p = PathBuf::from(s);
        let meta = std::fs::metadata(&p).map_err(|e| Error::local(&p, &e))?;
        if meta.is_dir() && !recursive {
            return Err(Error::Usage(format!(
                "{s} is a directory: use -r to upload it"
            )));
        }
        locals.push((p, meta));
    }
    Ok(locals)
}

/// Uploads `locals` to `remote`: into it if it is a directory (it ends in `/`, exists as one,
/// is the login directory `""`, or several sources are given), else as that file. Missing
/// remote directories are created.
pub async fn put_to(
    client: &mut Client,
    locals: &[Local],
    remote: &str,
    args: &TransferOpts,
    out: &Out,
) -> Result<(), Error> {
    let target = remote.trim_end_matches('/').to_string();
    let target_is_dir = target.is_empty()
        || remote.ends_with('/')
        || locals.len() > 1
        || client
            .stat(&target)
            .await?
            .is_some_and(|e| e.kind == Kind::Dir);
    let mut jobs = Vec::new();
    let mut remote_dirs: Vec<String> = Vec::new();
    if target_is_dir && !target.is_empty() {
        remote_dirs.push(target.clone());
    }
    for (p, meta) in locals {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Usage(format!("{}: no usable file name", p.display())))?;
        let remote = if target_is_dir {
            join(&target, name)
        } else {
            target.clone()
        };
        if meta.is_dir() {
            let (dirs, files) = walk_local(p)?;
            remote_dirs.push(remote.clone());
            remote_dirs.extend(dirs.iter().map(|d| join(&remote, d)));
            for (rel, size) in files {
                jobs.push(Job {
                    source: 0,
                    remote: join(&remote, &rel),
                    local: local_rel(p, &rel)?,
                    size: Some(size),
                });
            }
        } else {
            if let Some(i) = remote.rfind('/').filter(|&i| i > 0) {
                remote_dirs.push(remote[..i].to_string());
            }
            jobs.push(Job {
                source: 0,
                remote,
                local: p.clone(),
                size: Some(meta.len()),
            });
        }
    }
    remote_dirs.dedup();
    for d in &remote_dirs {
        client.mkdirs(d).await?;
    }
    let total: u64 = jobs.iter().filter_map(|j| j.size).sum();
    let overall = out.overall(jobs.len(), total);
    let mut done = 0u64;
    for (i, job) in jobs.iter().enumerate() {
        put_file(client, job, args, out, overall.as_ref(), done).await?;
        done += job.size.unwrap_or(0);
        if let Some(o) = &overall {
            o.set_position(done);
            o.set_message(format!("{}/{} files", i + 1, jobs.len()));
        }
    }
    if let Some(o) = overall {
        o.finish_and_clear();
    }
    Ok(())
}

async fn put_file(
    client: &mut Client,
    job: &Job,
    args: &TransferOpts,
    out: &Out,
    overall: Option<&indicatif::ProgressBar>,
    overall_base: u64,
) -> Result<(), Error> {
    let verify = args.verify;
    let algo = digest_algo(client, verify).await?;
    let size = job.size.unwrap_or(0);
    let shown = job.local.display().to_string();
    let remote_len = if args.resume {
        match client.size(&job.remote).await {
            Ok(n) => n,
            Err(Error::Refused { .. }) => 0,
            Err(e) => return Err(e),
        }
    } else {
        0
    };
    let mut offset = 0u64;
    let mut hasher = algo.map(Hasher::new);
    if remote_len > 0 {
        if remote_len > size {
            out.note(&format!(
                "{}: the server's file ({}) is larger than {shown} ({}): uploading it again",
                job.remote,
                format_size(remote_len),
                format_size(size)
            ));
        } else {
            let (matches, h) =
                prefix_matches(client, &job.remote, &job.local, remote_len, algo).await?;
            match matches {
                Some(false) => out.note(&format!(
                    "{}: the server's {} do not match the start of {shown} (RANG+HASH): uploading from the start",
                    job.remote,
                    format_size(remote_len)
                )),
                Some(true) => {
                    offset = remote_len;
                    hasher = h;
                }
                None => {
                    out.note(&format!(
                        "{}: the server cannot hash byte ranges, resuming at {} unchecked (the whole file is checked at the end)",
                        job.remote,
                        format_size(remote_len)
                    ));
                    offset = remote_len;
                    hasher = h;
                }
            }
        }
    }
    let mut file = tokio::fs::File::open(&job.local)
        .await
        .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Error::Local(format!("{shown}: {e}")))?;
    }
    let started = Instant::now();
    let mut progress: FileProgress = out.file(&job.remote, Some(size), offset);
    let moved = if offset == size && offset > 0 {
        0
    } else {
        let mode = if offset > 0 {
            StorMode::Append
        } else {
            StorMode::Replace
        };
        let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
        let mut cb = |n: u64| {
            progress.set(offset + n);
            if let Some(o) = overall {
                o.set_position(overall_base + n);
            }
        };
        match client
            .stor(&job.remote, mode, &mut reader, hasher.as_mut(), &mut cb)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let sent = progress.position();
                progress.finish();
                return Err(with_note(
                    e,
                    &format!(
                        "{} sent; the server may keep them: resume with {}put -c",
                        format_size(sent),
                        args.prefix
                    ),
                ));
            }
        }
    };
    progress.finish();
    let elapsed = started.elapsed();
    let total = offset + moved;
    let kept = "the uploaded file stays on the server".to_string();
    let result = check(client, &job.remote, hasher, total, verify, &kept).await?;
    out.summary(&summary(
        "put",
        &job.remote,
        total,
        offset,
        moved,
        elapsed,
        &result,
    ));
    Ok(())
}
