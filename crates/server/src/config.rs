//! Server configuration in two stages: raw TOML (file + `--set` overrides + flags) merged into
//! one table, then deserialised strictly (unknown keys are errors) and validated into [`Config`].
//!
//! Every key has a documented default; `ferry serve --print-config` prints the effective values.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid (syntax, unknown key, wrong type); the message has line and column.
    #[error("invalid config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// toml's message, with the position.
        message: String,
    },
    /// A `--set` override or flag is invalid.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The merged configuration has a bad value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: `ferry.db`, `homes/`, `logs/`, `tls/`. Default `./ferry-data`.
    pub data_dir: PathBuf,
    /// FTP service settings.
    pub ftp: FtpConfig,
    /// Limits on what peers can make the server do.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// FTPS.
    pub tls: TlsConfig,
    /// The chat room (IRC).
    pub chat: ChatConfig,
}

/// `[chat]` section: the IRC-speaking chat service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Plaintext IRC listen addresses. Default `["127.0.0.1:6667"]`; `[]` turns chat off.
    pub listen: Vec<SocketAddr>,
    /// IRC over TLS listen addresses (same certificate as FTPS). Default none.
    pub listen_tls: Vec<SocketAddr>,
    /// The server's name in replies. Default `"ferry"`.
    pub server_name: String,
    /// NETWORK in ISUPPORT. Default `"Ferry"`.
    pub network: String,
    /// The room everyone is put in and file activity is announced in. Default `"#lobby"`.
    pub default_room: String,
    /// Join the default room right after login. Default true.
    pub auto_join: bool,
    /// Let people without an account chat (as guests). Default false.
    pub allow_guests: bool,
    /// Lines of history sent to someone joining a room. Default 50.
    pub history_lines: u32,
    /// Lines a client may have waiting once its socket is full before it is disconnected as
    /// not reading (a burst may queue 8× this before the writer runs). Default 512.
    pub send_queue: usize,
    /// Rooms one connection may be in. Default 20.
    pub max_rooms_per_user: usize,
    /// Seconds to finish registration (NICK, USER, login). Default 60.
    pub registration_timeout_secs: u64,
    /// Seconds of silence before the server sends PING. Default 120.
    pub ping_interval_secs: u64,
    /// Seconds to answer that PING. Default 60.
    pub ping_timeout_secs: u64,
    /// Announce uploads, deletes and renames in the default room. Default true.
    pub announce_files: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6667))],
            listen_tls: Vec::new(),
            server_name: "ferry".into(),
            network: "Ferry".into(),
            default_room: "#lobby".into(),
            auto_join: true,
            allow_guests: false,
            history_lines: 50,
            send_queue: 512,
            max_rooms_per_user: 20,
            registration_timeout_secs: 60,
            ping_interval_secs: 120,
            ping_timeout_secs: 60,
            announce_files: true,
        }
    }
}

/// `[tls]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM). Default: `<data_dir>/tls/cert.pem`, generated on first start.
    pub cert: Option<PathBuf>,
    /// Private key (PEM). Default: `<data_dir>/tls/key.pem`, generated on first start.
    pub key: Option<PathBuf>,
    /// `off`, `login` (no USER/PASS before AUTH TLS) or `all` (also PROT P for every data
    /// connection). Default: `all` when any FTP listener binds a non-loopback address, else `off`.
    pub require: Option<String>,
    /// Data connections must resume the control connection's TLS session. Default true.
    pub require_session_reuse: bool,
    /// Seconds a TLS handshake may take. Default 10.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            require: None,
            require_session_reuse: true,
            handshake_timeout_secs: 10,
        }
    }
}

/// What TLS the server insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsPolicy {
    /// TLS is offered, not required.
    Off,
    /// Logins need TLS on the control connection.
    Login,
    /// Logins and every data connection need TLS.
    All,
}

/// `[ftp]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpConfig {
    /// Addresses to listen on (port 0 picks a free port). Default `["127.0.0.1:2121"]`.
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (FTPS, the connection starts with a TLS handshake). Default none.
    pub listen_implicit: Vec<SocketAddr>,
    /// Passive data port range `A-B`. Default `30000-31999` (below the kernel's ephemeral range).
    pub passive_ports: String,
    /// Address announced in PASV replies (for NAT); default: the control connection's local address.
    pub passive_address: Option<IpAddr>,
    /// Greeting text after `220`.
    pub banner: String,
    /// Compute and remember the SHA-256 of every upload while it streams. Default true.
    pub hash_uploads: bool,
    /// After a reply, a session thread keeps polling for the client's next command this many
    /// microseconds before it sleeps (see `spin`); 0 turns it off. Default 200.
    pub poll_after_reply_us: u64,
}

/// `[limits]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions at once, all peers. Default 10000.
    pub max_sessions: usize,
    /// Sessions at once from one IP address. Default 500.
    pub max_sessions_per_ip: usize,
    /// Logged-in sessions at once of one user. Default 500.
    pub max_sessions_per_user: usize,
    /// Longest command line in bytes (longer lines get 500). Default 4096.
    pub max_line_len: usize,
    /// Seconds without a command before the session is closed (421). Default 600.
    pub idle_timeout_secs: u64,
    /// Seconds a passive port waits for the client's data connection. Default 30.
    pub data_accept_timeout_secs: u64,
    /// Seconds a transfer may make no progress before it is failed, and a reply may wait for a
    /// client that has stopped reading its control connection before the session is closed.
    /// Default 120.
    pub transfer_stall_timeout_secs: u64,
    /// Milliseconds to wait before answering a failed login. Default 1000.
    pub failed_login_delay_ms: u64,
    /// Failed logins from one IP within `login_failure_window_secs` before a ban. Default 5.
    pub max_login_failures: u32,
    /// Window for counting failed logins, seconds. Default 600.
    pub login_failure_window_secs: u64,
    /// How long a ban lasts, seconds. Default 900.
    pub ban_secs: u64,
    /// Networks that are delayed after failures but never banned (fail2ban's ignoreip).
    /// Default `["127.0.0.0/8", "::1/128"]`.
    pub ban_exempt: Vec<ipnet::IpNet>,
    /// Seconds running transfers get to finish after SIGTERM/SIGINT. Default 10.
    pub shutdown_grace_secs: u64,
    /// HASH computations running at once, server-wide. Default 2.
    pub max_hash_jobs: usize,
}

/// `[log]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    pub format: String,
    /// Write `logs/xferlog` (one line per transfer). Default true.
    pub xferlog: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ferry-data"),
            ftp: FtpConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            chat: ChatConfig::default(),
        }
    }
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2121))],
            listen_implicit: Vec::new(),
            passive_ports: "30000-31999".into(),
            passive_address: None,
            banner: "Ferry FTP server ready".into(),
            hash_uploads: true,
            poll_after_reply_us: 200,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 10_000,
            max_sessions_per_ip: 500,
            max_sessions_per_user: 500,
            max_line_len: 4096,
            idle_timeout_secs: 600,
            data_accept_timeout_secs: 30,
            transfer_stall_timeout_secs: 120,
            failed_login_delay_ms: 1000,
            max_login_failures: 5,
            login_failure_window_secs: 600,
            ban_secs: 900,
            ban_exempt: vec![
                "127.0.0.0/8".parse().expect("valid net"),
                "::1/128".parse().expect("valid net"),
            ],
            shutdown_grace_secs: 10,
            max_hash_jobs: 2,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            xferlog: true,
        }
    }
}

/// What the command line contributes on top of the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` (repeatable).
    pub listen: Vec<SocketAddr>,
    /// `--listen-implicit` (repeatable).
    pub listen_implicit: Vec<SocketAddr>,
    /// `--chat-listen` (repeatable).
    pub chat_listen: Vec<SocketAddr>,
    /// `--chat-listen-tls` (repeatable).
    pub chat_listen_tls: Vec<SocketAddr>,
    /// `--passive-ports A-B`.
    pub passive_ports: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--set KEY=VALUE` (repeatable).
    pub set: Vec<String>,
}

impl Config {
    /// Loads `file` (if any), applies the overrides and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                // Deserialise the file alone first so its errors carry line and column.
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::File {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for item in &overrides.set {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Setting(format!("{item:?} is not KEY=VALUE")))?;
            set_key(&mut table, key.trim(), parse_value(value.trim()))?;
        }
        if let Some(dir) = &overrides.data_dir {
            set_key(
                &mut table,
                "data_dir",
                toml::Value::String(dir.display().to_string()),
            )?;
        }
        if !overrides.listen.is_empty() {
            let list = overrides
                .listen
                .iter()
                .map(|a| toml::Value::String(a.to_string()))
                .collect();
            set_key(&mut table, "ftp.listen", toml::Value::Array(list))?;
        }
        if !overrides.listen_implicit.is_empty() {
            let list = overrides
                .listen_implicit
                .iter()
                .map(|a| toml::Value::String(a.to_string()))
                .collect();
            set_key(&mut table, "ftp.listen_implicit", toml::Value::Array(list))?;
        }
        for (key, addrs) in [
            ("chat.listen", &overrides.chat_listen),
            ("chat.listen_tls", &overrides.chat_listen_tls),
        ] {
            if !addrs.is_empty() {
                let list = addrs
                    .iter()
                    .map(|a| toml::Value::String(a.to_string()))
                    .collect();
                set_key(&mut table, key, toml::Value::Array(list))?;
            }
        }
        if let Some(range) = &overrides.passive_ports {
            set_key(
                &mut table,
                "ftp.passive_ports",
                toml::Value::String(range.clone()),
            )?;
        }
        if let Some(format) = &overrides.log_format {
            set_key(
                &mut table,
                "log.format",
                toml::Value::String(format.clone()),
            )?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Setting(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.ftp.listen.is_empty() {
            return bad("ftp.listen needs at least one address".into());
        }
        parse_port_range(&self.ftp.passive_ports).map_err(ConfigError::Invalid)?;
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return bad(format!(
                "log.format must be \"human\" or \"json\", not {:?}",
                self.log.format
            ));
        }
        let l = &self.limits;
        if l.max_line_len < 512 || l.max_line_len > 1 << 20 {
            return bad("limits.max_line_len must be between 512 and 1048576".into());
        }
        for (name, v) in [
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_sessions_per_ip", l.max_sessions_per_ip),
            ("limits.max_sessions_per_user", l.max_sessions_per_user),
            ("limits.max_hash_jobs", l.max_hash_jobs),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        for (name, v) in [
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            (
                "limits.data_accept_timeout_secs",
                l.data_accept_timeout_secs,
            ),
            (
                "limits.transfer_stall_timeout_secs",
                l.transfer_stall_timeout_secs,
            ),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if let Some(r) = &self.tls.require {
            if !matches!(r.as_str(), "off" | "login" | "all") {
                return bad(format!(
                    "tls.require must be \"off\", \"login\" or \"all\", not {r:?}"
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key go together: set both or neither".into());
        }
        if self.tls.handshake_timeout_secs == 0 {
            return bad("tls.handshake_timeout_secs must be at least 1".into());
        }
        let c = &self.chat;
        if !ferry_proto::irc::is_valid_channel(&c.default_room) {
            return bad(format!(
                "chat.default_room {:?} must be a room name like \"#lobby\"",
                c.default_room
            ));
        }
        if c.server_name.is_empty() || c.server_name.contains(' ') {
            return bad("chat.server_name must be one word".into());
        }
        for (name, v) in [
            ("chat.send_queue", c.send_queue as u64),
            ("chat.max_rooms_per_user", c.max_rooms_per_user as u64),
            (
                "chat.registration_timeout_secs",
                c.registration_timeout_secs,
            ),
            ("chat.ping_interval_secs", c.ping_interval_secs),
            ("chat.ping_timeout_secs", c.ping_timeout_secs),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if l.max_login_failures == 0 {
            return bad("limits.max_login_failures must be at least 1".into());
        }
        Ok(())
    }

    /// The TLS policy in force: `tls.require`, or by default `all` when any FTP listener binds a
    /// non-loopback address (no passwords in the clear on a network) and `off` on loopback only.
    pub fn tls_policy(&self) -> TlsPolicy {
        match self.tls.require.as_deref() {
            Some("off") => TlsPolicy::Off,
            Some("login") => TlsPolicy::Login,
            Some("all") => TlsPolicy::All,
            _ => {
                let exposed = self
                    .ftp
                    .listen
                    .iter()
                    .chain(&self.ftp.listen_implicit)
                    .any(|a| !a.ip().is_loopback());
                if exposed {
                    TlsPolicy::All
                } else {
                    TlsPolicy::Off
                }
            }
        }
    }

    /// TLS handshake timeout.
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls.handshake_timeout_secs)
    }

    /// The passive port range, inclusive.
    pub fn passive_range(&self) -> (u16, u16) {
        parse_port_range(&self.ftp.passive_ports).unwrap_or((30000, 31999))
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl Limits {
    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// Passive accept timeout.
    pub fn data_accept_timeout(&self) -> Duration {
        Duration::from_secs(self.data_accept_timeout_secs)
    }
    /// Transfer stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.transfer_stall_timeout_secs)
    }
    /// Delay before answering a failed login.
    pub fn failed_login_delay(&self) -> Duration {
        Duration::from_millis(self.failed_login_delay_ms)
    }
}

/// Parses `A-B` (inclusive, A ≤ B, A ≥ 1024).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let err = || {
        format!("passive port range {s:?} must look like 30000-31999 (ports 1024-65535, low-high)")
    };
    let (a, b) = s.split_once('-').ok_or_else(err)?;
    let a: u16 = a.trim().parse().map_err(|_| err())?;
    let b: u16 = b.trim().parse().map_err(|_| err())?;
    if a < 1024 || a > b {
        return Err(err());
    }
    Ok((a, b))
}

/// A `--set` value: TOML if it parses as a value, otherwise a plain string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConfigError::Setting(format!("empty key in {key:?}")))?;
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::Setting(format!("{key}: {part} is not a section")))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn set_overrides_nested_keys_with_toml_values() {
        let o = Overrides {
            set: vec![
                "limits.max_sessions_per_ip=7".into(),
                "limits.ban_exempt=[]".into(),
            ],
            ..Default::default()
        };
        let c = Config::load(None, &o).unwrap();
        assert_eq!(c.limits.max_sessions_per_ip, 7);
        assert!(c.limits.ban_exempt.is_empty());
    }

    #[test]
    fn unknown_set_key_is_an_error() {
        let o = Overrides {
            set: vec!["limits.nope=1".into()],
            ..Default::default()
        };
        let err = Config::load(None, &o).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn unknown_file_key_reports_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "[ftp]\nbanner = \"hi\"\nbogus = 1\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn tls_is_required_by_default_only_off_loopback() {
        let mut c = Config::default();
        assert_eq!(c.tls_policy(), TlsPolicy::Off);
        c.ftp.listen = vec!["0.0.0.0:2121".parse().unwrap()];
        assert_eq!(c.tls_policy(), TlsPolicy::All);
        c.tls.require = Some("login".into());
        assert_eq!(c.tls_policy(), TlsPolicy::Login);
    }

    #[test]
    fn bad_passive_range_is_rejected() {
        let o = Overrides {
            passive_ports: Some("2000-1000".into()),
            ..Default::default()
        };
        assert!(Config::load(None, &o).is_err());
    }
}
