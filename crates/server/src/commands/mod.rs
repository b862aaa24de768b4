//! Command dispatch: the login gate, then one exhaustive `match` that hands each handler its typed
//! arguments. Handlers return a reply or a [`CommandError`]; errors become replies here, in one
//! place, with the client's path in the text.

pub mod auth;
pub mod datacmd;
pub mod fs;
pub mod hash;
pub mod info;
pub mod list;
pub mod xfer;

use ferry_proto::ftp::{Command, Reply};
use ferry_proto::vpath::VirtualPath;

use crate::error::CommandError;
use crate::session::{Flow, LoggedIn, Session};

/// The verb of a command, for logs (never the argument: PASS carries a password).
pub fn verb_of(cmd: &Command) -> String {
    let dbg = format!("{cmd:?}");
    dbg.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn allowed_before_login(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::User(_)
            | Command::Pass(_)
            | Command::Acct
            | Command::Quit
            | Command::Rein
            | Command::Noop
            | Command::Syst
            | Command::Feat
            | Command::Opts(_)
            | Command::Help(_)
            | Command::Auth(_)
            | Command::Pbsz(_)
            | Command::Prot(_)
            | Command::Ccc
    )
}

/// The logged-in user (the gate guarantees one for commands past it).
pub fn logged_in(s: &Session) -> Result<&LoggedIn, CommandError> {
    s.st.login.as_ref().ok_or(CommandError::NotLoggedIn)
}

/// Resolves a client path against the current directory inside the jail.
pub fn resolve(s: &Session, arg: &str) -> Result<VirtualPath, CommandError> {
    Ok(s.st.cwd.join(arg)?)
}

/// Fails with "permission denied" unless `allowed`.
pub fn require(allowed: bool) -> Result<(), CommandError> {
    if allowed {
        Ok(())
    } else {
        Err(CommandError::PermissionDenied)
    }
}

/// Runs one command and sends its reply.
pub async fn dispatch(s: &mut Session, cmd: Command) -> std::io::Result<Flow> {
    if s.st.login.is_none() && !allowed_before_login(&cmd) {
        s.conn
            .send(&Reply::new(530, "Please log in with USER and PASS first"))
            .await?;
        return Ok(Flow::Continue);
    }
    if !matches!(cmd, Command::Rnto(_) | Command::Rnfr(_)) {
        s.st.rename_from = None;
    }
    let subject = subject_of(&cmd);
    let result: Result<Reply, CommandError> = match cmd {
        Command::Quit => {
            s.conn.send(&Reply::new(221, "Goodbye")).await?;
            return Ok(Flow::Close);
        }
        Command::User(_) | Command::Pass(_) if auth::tls_required_for_login(s).is_some() => {
            Ok(auth::tls_required_for_login(s).unwrap_or_else(|| Reply::new(530, "TLS required")))
        }
        Command::User(name) => auth::user(s, name),
        Command::Pass(password) => return auth::pass(s, password).await,
        Command::Acct => Ok(Reply::new(
            502,
            "ACCT not implemented: accounts need only USER and PASS",
        )),
        Command::Rein => auth::rein(s),
        Command::Auth(mechanism) => return auth::auth(s, mechanism).await,
        Command::Pbsz(_) => auth::pbsz(s),
        Command::Prot(level) => auth::prot(s, level),
        Command::Ccc => Ok(Reply::new(
            534,
            "CCC refused: the control connection stays encrypted",
        )),
        Command::Noop => Ok(Reply::new(200, "NOOP ok")),
        Command::Syst => Ok(Reply::new(215, "UNIX Type: L8")),
        Command::Feat => Ok(info::feat()),
        Command::Opts(opts) => info::opts(s, opts),
        Command::Help(topic) => Ok(info::help(topic.as_deref())),
        Command::Stat(None) => info::status(s).await,
        Command::Stat(Some(path)) => list::stat_path(s, &path).await,
        Command::Site(site) => info::site(s, site).await,
        Command::Avbl(path) => info::avbl(s, path.as_deref()).await,
        Command::Cwd(path) => fs::cwd(s, &path).await,
        Command::Cdup => fs::cwd(s, "..").await,
        Command::Pwd => Ok(fs::pwd(s)),
        Command::Mkd(path) => fs::mkd(s, &path).await,
        Command::Rmd(path) => fs::rmd(s, &path).await,
        Command::Dele(path) => fs::dele(s, &path).await,
        Command::Rnfr(path) => fs::rnfr(s, &path).await,
        Command::Rnto(path) => fs::rnto(s, &path).await,
        Command::Size(path) => fs::size(s, &path).await,
        Command::Mdtm(path) => fs::mdtm(s, &path).await,
        Command::Mfmt { time, path } => fs::mfmt(s, time, &path).await,
        Command::List(args) => list::list(s, args, list::Format::Long).await,
        Command::Nlst(args) => list::list(s, args, list::Format::Names).await,
        Command::Mlsd(path) => list::mlsd(s, path.as_deref()).await,
        Command::Mlst(path) => list::mlst(s, path.as_deref()).await,
        Command::Type(t) => Ok(datacmd::type_(s, t)),
        Command::Mode(_) => Ok(Reply::new(200, "Mode set to S")),
        Command::Stru(_) => Ok(Reply::new(200, "Structure set to F")),
        Command::Pasv => datacmd::pasv(s),
        Command::Epsv(arg) => datacmd::epsv(s, arg),
        Command::Port(addr) => datacmd::port(s, addr.into()),
        Command::Eprt(addr) => datacmd::port(s, addr),
        Command::Retr(path) => xfer::retr(s, &path).await,
        Command::Stor(path) => xfer::stor(s, &path, xfer::StoreMode::Stor).await,
        Command::Appe(path) => xfer::stor(s, &path, xfer::StoreMode::Appe).await,
        Command::Stou(hint) => xfer::stou(s, hint.as_deref()).await,
        Command::Rest(offset) => Ok(xfer::rest(s, offset)),
        Command::Allo(_) => Ok(Reply::new(
            202,
            "ALLO not needed, space is reserved as the upload grows",
        )),
        Command::Abor => Ok(Reply::new(225, "No transfer to abort")),
        Command::Hash(path) => hash::hash(s, &path).await,
        Command::Rang(start, end) => Ok(hash::rang(s, start, end)),
        Command::XHash {
            algo,
            path,
            md5_cmd,
        } => hash::xhash(s, algo, &path, md5_cmd).await,
        Command::NotImplemented(verb) => Ok(Reply::new(502, format!("{verb} not implemented"))),
    };
    let reply = result.unwrap_or_else(|e| e.reply(&subject));
    let after = s.after_reply.take();
    s.reply_then(crate::finish::Done { reply, after }).await?;
    Ok(Flow::Continue)
}

/// The path a command is about, for error texts.
fn subject_of(cmd: &Command) -> String {
    match cmd {
        Command::Cwd(p)
        | Command::Mkd(p)
        | Command::Rmd(p)
        | Command::Dele(p)
        | Command::Rnfr(p)
        | Command::Rnto(p)
        | Command::Size(p)
        | Command::Mdtm(p)
        | Command::Retr(p)
        | Command::Stor(p)
        | Command::Appe(p)
        | Command::Hash(p)
        | Command::Mfmt { path: p, .. }
        | Command::XHash { path: p, .. } => p.clone(),
        Command::Stat(Some(p))
        | Command::Mlsd(Some(p))
        | Command::Mlst(Some(p))
        | Command::Avbl(Some(p)) => p.clone(),
        Command::List(a) | Command::Nlst(a) => a.path.clone().unwrap_or_default(),
        _ => String::new(),
    }
}
