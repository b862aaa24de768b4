//! Opening sessions for the client commands: credentials (URL, `~/.netrc`, `$FERRY_PASSWORD`,
//! a prompt without echo), the TLS policy (ask for TLS; never send a password in the clear to a
//! non-loopback host unless `--allow-plaintext`), trust on first use with a question on a
//! terminal, and one reused connection per server and user. The chat and the shell log in
//! with the same credentials and trust rules.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::netrc::Netrc;
use ferry_client::tls::Trust;
use ferry_client::{
    known_hosts, CertProblem, Client, ConnectOptions, Error, FtpUrl, Scheme, Security, Timeouts,
};

use super::output::Out;
use super::ConnArgs;

/// Login names that need no secret password.
fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// Whether a password may be sent without TLS: only to this machine, for an anonymous login, or
/// when the user said so (`--allow-plaintext`).
fn plaintext_allowed(loopback: bool, allow_plaintext: bool, user: &str) -> bool {
    loopback || allow_plaintext || is_anonymous(user)
}

fn netrc() -> Option<Netrc> {
    let path = std::env::var_os("NETRC")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".netrc"))
        })?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(Netrc::parse(&text))
}

/// A user name and its password.
#[derive(Clone)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The user name and password for `url`: the URL's, else `~/.netrc`'s, else `$FERRY_PASSWORD`,
/// else a prompt on the terminal. Without any user name: `anonymous`.
async fn credentials(url: &FtpUrl) -> Result<Login, Error> {
    credentials_for(
        &url.host,
        &url.host_port(),
        url.user.as_deref(),
        url.password.as_deref(),
        Some("anonymous"),
    )
    .await
}

/// The user name and password for an account on `host`, looked up like the FTP commands do:
/// `user`/`password` as given (from a URL), else `~/.netrc`, else `$FERRY_PASSWORD`, else a
/// prompt without echo on the terminal. `default_user` stands in when no user name is found
/// anywhere (`None`: that is a usage error).
pub async fn credentials_for(
    host: &str,
    host_port: &str,
    user: Option<&str>,
    password: Option<&str>,
    default_user: Option<&str>,
) -> Result<Login, Error> {
    let netrc = netrc();
    let entry = netrc.as_ref().and_then(|n| n.lookup(host, user));
    let user = match user
        .map(str::to_string)
        .or_else(|| entry.and_then(|e| e.login.clone()))
        .or_else(|| default_user.map(str::to_string))
    {
        Some(u) => u,
        None => {
            return Err(Error::Usage(format!(
                "no user name for {host_port}: put it in the URL (user@{host_port}) or in ~/.netrc"
            )))
        }
    };
    let login = |password: String| Login {
        user: user.clone(),
        password,
    };
    if let Some(pw) = password {
        return Ok(login(pw.to_string()));
    }
    let netrc_pw = entry
        .filter(|e| e.login.as_deref().is_none_or(|l| l == user))
        .and_then(|e| e.password.clone());
    if let Some(pw) = netrc_pw {
        return Ok(login(pw));
    }
    if let Some(pw) = std::env::var_os("FERRY_PASSWORD") {
        return Ok(login(pw.to_string_lossy().into_owned()));
    }
    if is_anonymous(&user) {
        return Ok(login("ferry@".to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Auth(format!(
            "no password for {user}@{host_port}: put it in the URL, ~/.netrc or FERRY_PASSWORD, or run on a terminal to be asked"
        )));
    }
    let prompt = format!("password for {user}@{host_port}: ");
    let pw = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| Error::Local(format!("password prompt: {e}")))?
        .map_err(|e| Error::Local(format!("password prompt: {e}")))?;
    Ok(login(pw))
}

/// Asks on the terminal whether to trust a certificate seen for the first time.
async fn ask_trust(problem: &CertProblem) -> bool {
    let CertProblem::Unknown {
        host_port,
        fingerprint,
        reason,
        known_hosts,
    } = problem
    else {
        return false;
    };
    let question = format!(
        "The certificate of {host_port} is not signed by a trusted authority ({reason}).\n\
         sha256 fingerprint: {fingerprint}\n\
         Compare it with the one the server's admin gave you (`ferry serve` prints it).\n\
         Trust it and remember it in {}? [y/N] ",
        known_hosts.display()
    );
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead as _, Write as _};
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(question.as_bytes());
        let _ = err.flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}

/// Whether a certificate question can be asked (stdin and stderr are terminals).
fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Runs `connect` with `trust`; if it fails on a certificate seen for the first time and a
/// terminal can be asked, asks, remembers the certificate if the answer is yes, and connects
/// again (accepting exactly the certificate that was remembered).
pub async fn trusting<T, F, Fut>(mut trust: Trust, mut connect: F) -> Result<T, Error>
where
    F: FnMut(Trust) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    match connect(trust.clone()).await {
        Err(Error::Cert(p @ CertProblem::Unknown { .. })) if can_ask() => {
            if !ask_trust(&p).await {
                return Err(Error::Cert(p));
            }
            if let CertProblem::Unknown {
                host_port,
                fingerprint,
                known_hosts,
                ..
            } = &p
            {
                known_hosts::remember(known_hosts, host_port, fingerprint).map_err(|e| {
                    Error::Local(format!("cannot write {}: {e}", known_hosts.display()))
                })?;
            }
            // The next handshake must show exactly the certificate the user accepted.
            trust.accept_new = false;
            connect(trust).await
        }
        other => other,
    }
}

/// The certificate trust the options ask for.
pub fn trust_of(ca_file: Option<&std::path::Path>, accept_new: bool) -> Trust {
    Trust {
        ca_file: ca_file.map(std::path::Path::to_path_buf),
        known_hosts: known_hosts::default_path(),
        accept_new,
    }
}

/// Opens a logged-in session for `url`.
pub async fn open(url: &FtpUrl, args: &ConnArgs, out: &Out) -> Result<Client, Error> {
    open_login(url, args, out).await.map(|(c, _)| c)
}

/// Opens a logged-in session for `url`; returns it with the credentials it used (the shell
/// reconnects and logs in to the chat with them).
pub async fn open_login(
    url: &FtpUrl,
    args: &ConnArgs,
    out: &Out,
) -> Result<(Client, Login), Error> {
    let login = credentials(url).await?;
    let client = open_with(url, args, out, &login).await?;
    Ok((client, login))
}

/// Opens a session for `url` and logs in as `login`.
pub async fn open_with(
    url: &FtpUrl,
    args: &ConnArgs,
    out: &Out,
    login: &Login,
) -> Result<Client, Error> {
    let Login { user, password } = login;
    let security = match url.scheme {
        Scheme::Ftps => Security::Implicit,
        Scheme::Ftpes => Security::Explicit { required: true },
        Scheme::Ftp if args.no_tls => Security::Plain,
        Scheme::Ftp => Security::Explicit { required: false },
    };
    let secs = Duration::from_secs(args.timeout.max(1));
    let trace: Option<ferry_client::client::Trace> = args.verbose.then(|| {
        Arc::new(|sent: bool, line: &str| {
            eprintln!("{} {line}", if sent { ">" } else { "<" });
        }) as ferry_client::client::Trace
    });
    let opts = ConnectOptions {
        host: url.host.clone(),
        port: url.port,
        security,
        trust: trust_of(args.ca_file.as_deref(), args.accept_new_cert),
        timeouts: Timeouts {
            connect: secs,
            reply: secs,
            data: secs,
            ..Timeouts::default()
        },
        trace,
    };
    let mut client = trusting(opts.trust.clone(), |trust| {
        let opts = ConnectOptions {
            trust,
            ..opts.clone()
        };
        async move { Client::connect(&opts).await }
    })
    .await?;
    if let (Some(fp), Some(path)) = (client.new_certificate(), known_hosts::default_path()) {
        out.note(&format!(
            "trusting the certificate of {} (sha256 {fp}), remembered in {}",
            url.host_port(),
            path.display()
        ));
    }
    if !client.is_secure() {
        // The address actually connected to decides, not the name.
        let loopback = client.peer_ip().is_loopback();
        let why = client
            .auth_refused()
            .map(|r| format!("it refused AUTH TLS ({r})"))
            .unwrap_or_else(|| "--no-tls was given".to_string());
        if !plaintext_allowed(loopback, args.allow_plaintext, user) {
            return Err(Error::Tls(format!(
                "{} is not encrypted ({why}); refusing to send the password in the clear to a \
                 host that is not this machine: use --allow-plaintext to send it anyway, or \
                 ftps:// if the server has implicit TLS",
                url.host_port()
            )));
        }
        if client.auth_refused().is_some() && !loopback {
            out.note(&format!(
                "{} refused TLS; continuing without encryption",
                url.host_port()
            ));
        }
    }
    client.login(user, password).await?;
    Ok(client)
}

/// One session per server and user, opened on first use and reused.
pub struct Connections<'a> {
    args: &'a ConnArgs,
    out: &'a Out,
    open: Vec<(FtpUrl, Client)>,
}

impl<'a> Connections<'a> {
    /// No sessions yet.
    pub fn new(args: &'a ConnArgs, out: &'a Out) -> Connections<'a> {
        Connections {
            args,
            out,
            open: Vec::new(),
        }
    }

    /// The session for `url`'s server and user.
    pub async fn get(&mut self, url: &FtpUrl) -> Result<&mut Client, Error> {
        let i = match self.open.iter().position(|(u, _)| u.same_login(url)) {
            Some(i) => i,
            None => {
                let c = open(url, self.args, self.out).await?;
                self.open.push((url.clone(), c));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[i].1)
    }

    /// Ends every session with QUIT.
    pub async fn close(self) {
        for (_, c) in self.open {
            c.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_cross_a_network_in_the_clear_only_when_allowed() {
        assert!(plaintext_allowed(true, false, "alice"));
        assert!(!plaintext_allowed(false, false, "alice"));
        assert!(plaintext_allowed(false, true, "alice"));
        assert!(plaintext_allowed(false, false, "anonymous"));
    }

    #[test]
    fn anonymous_users() {
        assert!(is_anonymous("anonymous"));
        assert!(is_anonymous("FTP"));
        assert!(!is_anonymous("alice"));
    }
}
