//! Data-connection set-up: TYPE (RFC 959 §4.1.2), PASV and PORT (RFC 959), EPSV and EPRT
//! (RFC 2428, including `EPSV ALL`), with the bounce and foreign-address checks of RFC 2577.

use std::net::{IpAddr, SocketAddr};

use ferry_proto::ftp::command::{EpsvArg, TransferType};
use ferry_proto::ftp::Reply;

use crate::data::{canonical, check_active_target, DataPlan};
use crate::error::CommandError;
use crate::session::Session;

/// `TYPE A|I`.
pub fn type_(s: &mut Session, t: TransferType) -> Reply {
    s.st.ascii = t == TransferType::Ascii;
    match t {
        TransferType::Ascii => Reply::new(
            200,
            "Type set to A (files are sent unchanged, listings use CRLF)",
        ),
        TransferType::Image => Reply::new(200, "Type set to I"),
    }
}

fn open_passive(s: &mut Session) -> Result<u16, CommandError> {
    if s.transfer.is_some() {
        return Err(CommandError::Busy("Transfer in progress"));
    }
    let timeout = s.shared.config.limits.data_accept_timeout();
    if let Some(port) = s.st.data.rearm_spare(timeout) {
        return Ok(port);
    }
    s.st.data = DataPlan::None; // releases a previous passive port first
    let (listener, port) = s.shared.passive.bind(s.local.ip()).map_err(|e| {
        tracing::warn!(error = %e, "no passive port available");
        CommandError::DataConnection("no passive port available, try again".into())
    })?;
    s.st.data = DataPlan::passive(listener, port, s.peer.ip(), timeout);
    Ok(port)
}

/// `PASV`.
pub fn pasv(s: &mut Session) -> Result<Reply, CommandError> {
    if s.st.epsv_all {
        return Err(CommandError::BadSequence(
            "Only EPSV is allowed after EPSV ALL",
        ));
    }
    let announce = s
        .shared
        .config
        .ftp
        .passive_address
        .unwrap_or_else(|| canonical(s.local.ip()));
    let IpAddr::V4(ip) = announce else {
        return Err(CommandError::NotSupported(
            "PASV needs IPv4; use EPSV".into(),
        ));
    };
    let port = open_passive(s)?;
    let [a, b, c, d] = ip.octets();
    Ok(Reply::new(
        227,
        format!(
            "Entering Passive Mode ({a},{b},{c},{d},{},{})",
            port >> 8,
            port & 0xff
        ),
    ))
}

/// `EPSV [1|2|ALL]`.
pub fn epsv(s: &mut Session, arg: EpsvArg) -> Result<Reply, CommandError> {
    match arg {
        EpsvArg::All => {
            s.st.epsv_all = true;
            Ok(Reply::new(200, "EPSV ALL ok"))
        }
        EpsvArg::Proto(p) if (p == 1) != canonical(s.local.ip()).is_ipv4() => {
            let ours = if canonical(s.local.ip()).is_ipv4() {
                1
            } else {
                2
            };
            Ok(Reply::new(
                522,
                format!("Network protocol not supported, use ({ours})"),
            ))
        }
        _ => {
            let port = open_passive(s)?;
            Ok(Reply::new(
                229,
                format!("Entering Extended Passive Mode (|||{port}|)"),
            ))
        }
    }
}

/// `PORT` / `EPRT`.
pub fn port(s: &mut Session, target: SocketAddr) -> Result<Reply, CommandError> {
    if s.st.epsv_all {
        return Err(CommandError::BadSequence(
            "Only EPSV is allowed after EPSV ALL",
        ));
    }
    if s.transfer.is_some() {
        return Err(CommandError::Busy("Transfer in progress"));
    }
    check_active_target(target, s.peer.ip())?;
    s.st.data = DataPlan::Active(target);
    Ok(Reply::new(200, "PORT command successful"))
}
