//! USER, PASS and REIN (RFC 959 §4.1.1): login against the accounts, with the failed-login delay
//! and ban of DESIGN §5 and the per-user session limit.

use ferry_proto::ftp::Reply;

use crate::accounts::{AuthError, FailureVerdict};
use crate::config::TlsPolicy;
use crate::data::canonical;
use crate::error::CommandError;
use crate::server::SlotRefusal;
use crate::session::{Flow, LoggedIn, Session, State};

/// `USER name`.
pub fn user(s: &mut Session, name: String) -> Result<Reply, CommandError> {
    if s.st.login.is_some() {
        return Err(CommandError::BadSequence(
            "Already logged in; use REIN to change user",
        ));
    }
    s.st.pending_user = Some(name.clone());
    Ok(Reply::new(331, format!("Password required for {name}")))
}

/// `PASS password` — sends its own replies (it may close the connection).
pub async fn pass(s: &mut Session, password: String) -> std::io::Result<Flow> {
    if s.st.login.is_some() {
        s.conn.send(&Reply::new(503, "Already logged in")).await?;
        return Ok(Flow::Continue);
    }
    let Some(name) = s.st.pending_user.take() else {
        s.conn.send(&Reply::new(503, "Send USER first")).await?;
        return Ok(Flow::Continue);
    };
    let shared = s.shared.clone();
    let ip = canonical(s.peer.ip());
    if let Some(left) = shared.guard.is_banned(ip) {
        s.conn
            .send(&Reply::new(
                421,
                format!(
                    "Too many failed logins from your address, try again in {} s",
                    left.as_secs().max(1)
                ),
            ))
            .await?;
        return Ok(Flow::Close);
    }
    match shared.accounts.authenticate(&name, &password).await {
        Ok(user) => {
            let slot = match shared
                .slots
                .login(&user.name, shared.config.limits.max_sessions_per_user)
            {
                Ok(slot) => slot,
                Err(SlotRefusal::PerUser(n))
                | Err(SlotRefusal::PerIp(n))
                | Err(SlotRefusal::Total(n)) => {
                    s.conn
                        .send(&Reply::new(
                            530,
                            format!("Too many sessions for {name} (limit {n})"),
                        ))
                        .await?;
                    return Ok(Flow::Continue);
                }
            };
            let path = shared.accounts.home_of(&user);
            let home = match shared.homes.open(user.id, path).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(user = %user.name, error = %e, "cannot open home directory");
                    s.conn
                        .send(&Reply::new(
                            550,
                            "Cannot open your home directory, ask the admin",
                        ))
                        .await?;
                    return Ok(Flow::Continue);
                }
            };
            shared.guard.record_success(ip);
            s.span().record("user", user.name.as_str());
            tracing::info!(user = %user.name, "logged in");
            let reply = Reply::new(230, format!("User {} logged in", user.name));
            s.st.login = Some(LoggedIn::new(user, home, slot));
            s.conn.send(&reply).await?;
            Ok(Flow::Continue)
        }
        Err(AuthError::Internal(e)) => {
            tracing::error!(error = %e, "authentication error");
            s.conn
                .send(&Reply::new(421, "Service not available, try again later"))
                .await?;
            Ok(Flow::Close)
        }
        Err(err) => {
            let verdict = shared.guard.record_failure(ip);
            let reason = if matches!(err, AuthError::Disabled) {
                "disabled"
            } else {
                "bad credentials"
            };
            tracing::warn!(target: "ferry::auth", ip = %ip, user = %name, reason, "login failed");
            tokio::select! {
                _ = shared.shutdown.soft.cancelled() => {}
                _ = tokio::time::sleep(shared.config.limits.failed_login_delay()) => {}
            }
            s.conn.send(&Reply::new(530, "Login incorrect")).await?;
            if let FailureVerdict::Banned(for_how_long) = verdict {
                // The ban applies from the next attempt on, on this connection or a new one.
                tracing::warn!(target: "ferry::auth", ip = %ip, secs = for_how_long.as_secs(), "address banned");
            }
            Ok(Flow::Continue)
        }
    }
}

/// `REIN`: back to the state right after the greeting.
pub fn rein(s: &mut Session) -> Result<Reply, CommandError> {
    if s.transfer.is_some() {
        return Err(CommandError::Busy("Transfer in progress"));
    }
    // The control connection keeps its TLS; the data protection level starts over (PROT C).
    s.st = State::default();
    Ok(Reply::new(220, "Session reinitialized, log in again"))
}

/// The reply for USER/PASS when the policy wants TLS first, or `None` if login may go on.
pub fn tls_required_for_login(s: &Session) -> Option<Reply> {
    (s.shared.tls_policy >= TlsPolicy::Login && s.tls.is_none()).then(|| {
        Reply::new(
            530,
            "This server requires TLS: send AUTH TLS before logging in (curl --ssl-reqd, lftp: set ftp:ssl-force true, FileZilla: explicit FTP over TLS)",
        )
    })
}

/// `AUTH TLS` / `AUTH SSL` (RFC 4217 §4): reply 234, then the handshake on the same connection.
/// Bytes the client sent after AUTH in plaintext must not be read as if they were protected
/// (the STARTTLS injection class): if any are already buffered, the connection is closed.
pub async fn auth(s: &mut Session, mechanism: String) -> std::io::Result<Flow> {
    if !matches!(mechanism.as_str(), "TLS" | "SSL" | "TLS-C" | "TLS-P") {
        s.conn
            .send(&Reply::new(
                504,
                format!("AUTH {mechanism} not supported; use AUTH TLS"),
            ))
            .await?;
        return Ok(Flow::Continue);
    }
    if s.tls.is_some() {
        s.conn.send(&Reply::new(503, "Already using TLS")).await?;
        return Ok(Flow::Continue);
    }
    if s.transfer.is_some() {
        s.conn
            .send(&Reply::new(450, "Transfer in progress"))
            .await?;
        return Ok(Flow::Continue);
    }
    s.conn
        .send(&Reply::new(
            234,
            format!("AUTH {mechanism} successful, starting TLS"),
        ))
        .await?;
    if s.conn.has_buffered() {
        tracing::warn!("plaintext pipelined after AUTH TLS, closing the connection");
        return Ok(Flow::Close);
    }
    match s.start_tls().await {
        Ok(()) => {
            tracing::debug!("control connection upgraded to TLS");
            Ok(Flow::Continue)
        }
        Err(e) => {
            tracing::info!(error = %e, "TLS handshake on the control connection failed");
            Ok(Flow::Close)
        }
    }
}

/// `PBSZ n` (RFC 4217 §8): only 0 makes sense for TLS.
pub fn pbsz(s: &mut Session) -> Result<Reply, CommandError> {
    if s.tls.is_none() {
        return Err(CommandError::BadSequence("Send AUTH TLS first"));
    }
    Ok(Reply::new(200, "PBSZ=0"))
}

/// `PROT C|P` (RFC 4217 §9).
pub fn prot(s: &mut Session, level: char) -> Result<Reply, CommandError> {
    if s.tls.is_none() {
        return Err(CommandError::BadSequence("Send AUTH TLS first"));
    }
    match level {
        'P' => {
            s.st.prot_private = true;
            Ok(Reply::new(200, "Protection level set to Private"))
        }
        'C' if s.shared.tls_policy == TlsPolicy::All => Ok(Reply::new(
            534,
            "This server requires protected data connections: use PROT P",
        )),
        'C' => {
            s.st.prot_private = false;
            Ok(Reply::new(200, "Protection level set to Clear"))
        }
        _ => Ok(Reply::new(536, "Only PROT C and PROT P are supported")),
    }
}
