//! Opening sessions for the client commands: credentials (URL, `~/.netrc`, `$FERRY_PASSWORD`,
//! a prompt without echo), the TLS policy (ask for TLS; never send a password in the clear to a
//! non-loopback host unless `--allow-plaintext`), trust on first use with a question on a
//! terminal, and one reused connection per server and user.

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

/// The user name and password for `url`: the URL's, else `~/.netrc`'s, else `$FERRY_PASSWORD`,
/// else a prompt on the terminal. Without any user name: `anonymous`.
async fn credentials(url: &FtpUrl) -> Result<(String, String), Error> {
    let netrc = netrc();
    let entry = netrc
        .as_ref()
        .and_then(|n| n.lookup(&url.host, url.user.as_deref()));
    let user = url
        .user
        .clone()
        .or_else(|| entry.and_then(|e| e.login.clone()))
        .unwrap_or_else(|| "anonymous".to_string());
    if let Some(pw) = &url.password {
        return Ok((user, pw.clone()));
    }
    let netrc_pw = entry
        .filter(|e| e.login.as_deref().is_none_or(|l| l == user))
        .and_then(|e| e.password.clone());
    if let Some(pw) = netrc_pw {
        return Ok((user, pw));
    }
    if let Some(pw) = std::env::var_os("FERRY_PASSWORD") {
        return Ok((user, pw.to_string_lossy().into_owned()));
    }
    if is_anonymous(&user) {
        return Ok((user, "ferry@".to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Auth(format!(
            "no password for {user}@{}: put it in the URL, ~/.netrc or FERRY_PASSWORD, or run on a terminal to be asked",
            url.host_port()
        )));
    }
    let prompt = format!("password for {user}@{}: ", url.host_port());
    let pw = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| Error::Local(format!("password prompt: {e}")))?
        .map_err(|e| Error::Local(format!("password prompt: {e}")))?;
    Ok((user, pw))
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

/// Opens a logged-in session for `url`.
pub async fn open(url: &FtpUrl, args: &ConnArgs, out: &Out) -> Result<Client, Error> {
    let (user, password) = credentials(url).await?;
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
    let mut opts = ConnectOptions {
        host: url.host.clone(),
        port: url.port,
        security,
        trust: Trust {
            ca_file: args.ca_file.clone(),
            known_hosts: known_hosts::default_path(),
            accept_new: args.accept_new_cert,
        },
        timeouts: Timeouts {
            connect: secs,
            reply: secs,
            data: secs,
            ..Timeouts::default()
        },
        trace,
    };
    let mut client = match Client::connect(&opts).await {
        Ok(c) => c,
        Err(Error::Cert(p @ CertProblem::Unknown { .. }))
            if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() =>
        {
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
            opts.trust.accept_new = false;
            Client::connect(&opts).await?
        }
        Err(e) => return Err(e),
    };
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
        if !plaintext_allowed(loopback, args.allow_plaintext, &user) {
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
    client.login(&user, &password).await?;
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
