//! The chat hub: who is connected, under which nick, in which rooms. One small state behind a
//! std mutex (never held across an await); every message to a client goes into that client's
//! bounded send queue with `try_send`, so a slow reader never makes anyone else wait — it is
//! marked for disconnection instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ferry_proto::irc::{fold, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A line ready to send (CRLF included).
pub type Line = Arc<str>;

/// A room topic: text, who set it, when (Unix seconds).
pub type Topic = (String, String, i64);

/// Capabilities a client negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// `multi-prefix`.
    pub multi_prefix: bool,
    /// `userhost-in-names`.
    pub userhost_in_names: bool,
}

/// Why a client is being disconnected by someone else (send queue overflow).
#[derive(Debug, Default)]
pub struct Kill {
    /// Fires when the client must go.
    pub token: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Kill {
    /// Marks the client for disconnection with `reason` (the first reason wins).
    pub fn fire(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.token.cancel();
    }

    /// The reason given to [`Kill::fire`].
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the hub knows of one registered connection.
#[derive(Debug)]
struct Client {
    nick: String,
    user: String,
    host: String,
    realname: String,
    account: Option<String>,
    away: Option<String>,
    invisible: bool,
    caps: Caps,
    rooms: HashSet<String>,
    tx: mpsc::Sender<Line>,
    kill: Arc<Kill>,
    signon: i64,
}

impl Client {
    fn prefix(&self) -> String {
        format!("{}!{}@{}", self.nick, self.user, self.host)
    }
}

#[derive(Debug)]
struct Room {
    name: String,
    topic: Option<Topic>,
    members: BTreeMap<u64, bool>,
    created: i64,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    clients: HashMap<u64, Client>,
    nicks: HashMap<String, u64>,
    rooms: HashMap<String, Room>,
}

/// A registered client's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Hub id.
    pub id: u64,
    /// The nick it got.
    pub nick: String,
    /// `nick!user@host`.
    pub prefix: String,
}

/// Errors of hub operations, each an IRC numeric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// 401 no such nick.
    NoSuchNick(String),
    /// 403 no such channel.
    NoSuchChannel(String),
    /// 404 cannot send to channel (not a member).
    CannotSend(String),
    /// 442 not on that channel.
    NotOnChannel(String),
    /// 405 too many channels.
    TooManyChannels(String),
    /// 479 bad channel name.
    BadChannelName(String),
}

impl HubError {
    /// The numeric reply for `nick`.
    pub fn message(&self, server: &str, nick: &str) -> Message {
        let (code, target, text) = match self {
            HubError::NoSuchNick(t) => ("401", t, "No such nick/channel"),
            HubError::NoSuchChannel(t) => ("403", t, "No such channel"),
            HubError::CannotSend(t) => ("404", t, "Cannot send to channel (join it first)"),
            HubError::NotOnChannel(t) => ("442", t, "You're not on that channel"),
            HubError::TooManyChannels(t) => ("405", t, "You have joined too many channels"),
            HubError::BadChannelName(t) => ("479", t, "Illegal channel name"),
        };
        Message::new(code, [nick, target.as_str(), text]).with_prefix(server)
    }
}

/// What a joiner needs to know.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The room's display name.
    pub room: String,
    /// Topic text, setter, time.
    pub topic: Option<Topic>,
    /// Whether the room was just created (and the joiner is its operator).
    pub created: bool,
}

/// One line of WHO output.
#[derive(Debug, Clone)]
pub struct WhoEntry {
    /// Nick.
    pub nick: String,
    /// User (account name).
    pub user: String,
    /// Host (address).
    pub host: String,
    /// Real name.
    pub realname: String,
    /// Away?
    pub away: bool,
    /// Operator in the room asked about?
    pub op: bool,
}

/// WHOIS facts.
#[derive(Debug, Clone)]
pub struct WhoisInfo {
    /// The WHO facts.
    pub who: WhoEntry,
    /// Rooms (with `@` where operator).
    pub rooms: Vec<String>,
    /// Away message.
    pub away: Option<String>,
    /// Account logged in as.
    pub account: Option<String>,
    /// Sign-on time.
    pub signon: i64,
}

/// The hub.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<State>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Encodes a message as a shareable line.
pub fn line(m: &Message) -> Line {
    Arc::from(m.to_line())
}

impl State {
    fn send(&self, id: u64, l: &Line) {
        if let Some(c) = self.clients.get(&id) {
            if c.tx.try_send(l.clone()).is_err() && !c.kill.token.is_cancelled() {
                c.kill.fire("SendQ exceeded");
            }
        }
    }

    /// Sends to every member of every room `id` is in, each once, optionally not to `id` itself.
    fn send_to_peers(&self, id: u64, l: &Line, include_self: bool) {
        let Some(c) = self.clients.get(&id) else {
            return;
        };
        let mut seen = HashSet::new();
        if include_self {
            seen.insert(id);
            self.send(id, l);
        } else {
            seen.insert(id);
        }
        for room in &c.rooms {
            if let Some(r) = self.rooms.get(room) {
                for member in r.members.keys() {
                    if seen.insert(*member) {
                        self.send(*member, l);
                    }
                }
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection. The nick is `wanted` (an account name) or, if another connection
    /// has it, `wanted2`, `wanted3`, …
    #[allow(clippy::too_many_arguments)] // reason: the registration facts, given once
    pub fn register(
        &self,
        wanted: &str,
        user: &str,
        host: &str,
        realname: &str,
        account: Option<String>,
        caps: Caps,
        tx: mpsc::Sender<Line>,
        kill: Arc<Kill>,
    ) -> Identity {
        let mut st = self.lock();
        let mut nick = wanted.to_string();
        let mut n = 2;
        while st.nicks.contains_key(&fold(&nick)) {
            nick = format!("{wanted}{n}");
            n += 1;
        }
        st.next_id += 1;
        let id = st.next_id;
        let client = Client {
            nick: nick.clone(),
            user: user.to_string(),
            host: host.to_string(),
            realname: realname.to_string(),
            account,
            away: None,
            invisible: false,
            caps,
            rooms: HashSet::new(),
            tx,
            kill,
            signon: now(),
        };
        let prefix = client.prefix();
        st.nicks.insert(fold(&nick), id);
        st.clients.insert(id, client);
        Identity { id, nick, prefix }
    }

    /// Removes a client and tells everyone who shares a room with it, each exactly once.
    pub fn quit(&self, id: u64, reason: &str) {
        let mut st = self.lock();
        let Some(c) = st.clients.get(&id) else { return };
        let l = line(&Message::new("QUIT", [reason]).with_prefix(c.prefix()));
        st.send_to_peers(id, &l, false);
        let Some(c) = st.clients.remove(&id) else {
            return;
        };
        st.nicks.remove(&fold(&c.nick));
        for room in &c.rooms {
            let empty = match st.rooms.get_mut(room) {
                Some(r) => {
                    r.members.remove(&id);
                    r.members.is_empty()
                }
                None => false,
            };
            if empty {
                st.rooms.remove(room);
            }
        }
    }

    /// Joins a room (creating it), broadcasting the JOIN to its members and the joiner.
    pub fn join(&self, id: u64, name: &str, max_rooms: usize) -> Result<Option<Joined>, HubError> {
        if !ferry_proto::irc::is_valid_channel(name) {
            return Err(HubError::BadChannelName(name.to_string()));
        }
        let key = fold(name);
        let mut st = self.lock();
        let Some(c) = st.clients.get(&id) else {
            return Ok(None);
        };
        if c.rooms.contains(&key) {
            return Ok(None);
        }
        if c.rooms.len() >= max_rooms {
            return Err(HubError::TooManyChannels(name.to_string()));
        }
        let prefix = c.prefix();
        let created = !st.rooms.contains_key(&key);
        let room = st.rooms.entry(key.clone()).or_insert_with(|| Room {
            name: name.to_string(),
            topic: None,
            members: BTreeMap::new(),
            created: now(),
        });
        room.members.insert(id, created);
        let display = room.name.clone();
        let topic = room.topic.clone();
        let members: Vec<u64> = room.members.keys().copied().collect();
        if let Some(c) = st.clients.get_mut(&id) {
            c.rooms.insert(key);
        }
        let l = line(&Message::new("JOIN", [display.as_str()]).with_prefix(prefix));
        for m in members {
            st.send(m, &l);
        }
        Ok(Some(Joined {
            room: display,
            topic,
            created,
        }))
    }

    /// Leaves a room.
    pub fn part(&self, id: u64, name: &str, reason: &str) -> Result<(), HubError> {
        let key = fold(name);
        let mut st = self.lock();
        let Some(c) = st.clients.get(&id) else {
            return Ok(());
        };
        if !st.rooms.contains_key(&key) {
            return Err(HubError::NoSuchChannel(name.to_string()));
        }
        if !c.rooms.contains(&key) {
            return Err(HubError::NotOnChannel(name.to_string()));
        }
        let prefix = c.prefix();
        let room = st
            .rooms
            .get(&key)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let l = line(&Message::new("PART", [room.as_str(), reason]).with_prefix(prefix));
        let members: Vec<u64> = st
            .rooms
            .get(&key)
            .map(|r| r.members.keys().copied().collect())
            .unwrap_or_default();
        for m in members {
            st.send(m, &l);
        }
        if let Some(c) = st.clients.get_mut(&id) {
            c.rooms.remove(&key);
        }
        let empty = st.rooms.get_mut(&key).map(|r| {
            r.members.remove(&id);
            r.members.is_empty()
        });
        if empty == Some(true) {
            st.rooms.remove(&key);
        }
        Ok(())
    }

    /// PRIVMSG/NOTICE to a room (all other members) or a nick. Returns the room's display name
    /// for the chat log, and the away message of a nick target.
    pub fn message(
        &self,
        id: u64,
        command: &str,
        target: &str,
        text: &str,
    ) -> Result<Delivered, HubError> {
        let st = self.lock();
        let Some(c) = st.clients.get(&id) else {
            return Ok(Delivered::default());
        };
        let prefix = c.prefix();
        if target.starts_with('#') {
            let key = fold(target);
            let Some(room) = st.rooms.get(&key) else {
                return Err(HubError::NoSuchChannel(target.to_string()));
            };
            if !room.members.contains_key(&id) {
                return Err(HubError::CannotSend(target.to_string()));
            }
            let l = line(&Message::new(command, [room.name.as_str(), text]).with_prefix(prefix));
            for m in room.members.keys().filter(|m| **m != id) {
                st.send(*m, &l);
            }
            Ok(Delivered {
                room: Some(room.name.clone()),
                away: None,
            })
        } else {
            let Some(to) = st.nicks.get(&fold(target)).copied() else {
                return Err(HubError::NoSuchNick(target.to_string()));
            };
            let l = line(&Message::new(command, [target, text]).with_prefix(prefix));
            st.send(to, &l);
            let away = st
                .clients
                .get(&to)
                .and_then(|t| t.away.clone().map(|a| (t.nick.clone(), a)));
            Ok(Delivered { room: None, away })
        }
    }

    /// A NOTICE to a room from a server pseudo-user (file activity); no-op if the room is empty.
    pub fn announce(&self, room: &str, from: &str, text: &str) {
        let st = self.lock();
        if let Some(r) = st.rooms.get(&fold(room)) {
            let l = line(&Message::new("NOTICE", [r.name.as_str(), text]).with_prefix(from));
            for m in r.members.keys() {
                st.send(*m, &l);
            }
        }
    }

    /// The topic of a room (None if the room does not exist).
    pub fn topic(&self, name: &str) -> Option<(String, Option<Topic>)> {
        let st = self.lock();
        st.rooms
            .get(&fold(name))
            .map(|r| (r.name.clone(), r.topic.clone()))
    }

    /// Sets a room's topic (members only) and tells the room.
    pub fn set_topic(&self, id: u64, name: &str, text: &str) -> Result<(), HubError> {
        let mut st = self.lock();
        let key = fold(name);
        let Some(c) = st.clients.get(&id) else {
            return Ok(());
        };
        let (nick, prefix) = (c.nick.clone(), c.prefix());
        let Some(room) = st.rooms.get_mut(&key) else {
            return Err(HubError::NoSuchChannel(name.to_string()));
        };
        if !room.members.contains_key(&id) {
            return Err(HubError::NotOnChannel(name.to_string()));
        }
        room.topic = if text.is_empty() {
            None
        } else {
            Some((text.to_string(), nick, now()))
        };
        let l = line(&Message::new("TOPIC", [room.name.as_str(), text]).with_prefix(prefix));
        let members: Vec<u64> = room.members.keys().copied().collect();
        for m in members {
            st.send(m, &l);
        }
        Ok(())
    }

    /// NAMES of a room, formatted for `id`'s capabilities; None if no such room.
    pub fn names(&self, id: u64, name: &str) -> Option<(String, Vec<String>)> {
        let st = self.lock();
        let caps = st.clients.get(&id).map(|c| c.caps).unwrap_or_default();
        let r = st.rooms.get(&fold(name))?;
        let names = r
            .members
            .iter()
            .filter_map(|(m, op)| {
                let c = st.clients.get(m)?;
                let who = if caps.userhost_in_names {
                    c.prefix()
                } else {
                    c.nick.clone()
                };
                Some(if *op { format!("@{who}") } else { who })
            })
            .collect();
        Some((r.name.clone(), names))
    }

    /// Room modes and creation time; None if no such room.
    pub fn room_info(&self, name: &str) -> Option<(String, i64)> {
        let st = self.lock();
        st.rooms
            .get(&fold(name))
            .map(|r| (r.name.clone(), r.created))
    }

    fn who_entry(st: &State, id: u64, op: bool) -> Option<WhoEntry> {
        let c = st.clients.get(&id)?;
        Some(WhoEntry {
            nick: c.nick.clone(),
            user: c.user.clone(),
            host: c.host.clone(),
            realname: c.realname.clone(),
            away: c.away.is_some(),
            op,
        })
    }

    /// WHO for a room or a nick.
    pub fn who(&self, target: &str) -> Vec<WhoEntry> {
        let st = self.lock();
        if target.starts_with('#') {
            st.rooms
                .get(&fold(target))
                .map(|r| {
                    r.members
                        .iter()
                        .filter_map(|(m, op)| Self::who_entry(&st, *m, *op))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            st.nicks
                .get(&fold(target))
                .and_then(|id| Self::who_entry(&st, *id, false))
                .into_iter()
                .collect()
        }
    }

    /// WHOIS of a nick.
    pub fn whois(&self, nick: &str) -> Option<WhoisInfo> {
        let st = self.lock();
        let id = *st.nicks.get(&fold(nick))?;
        let c = st.clients.get(&id)?;
        let rooms = c
            .rooms
            .iter()
            .filter_map(|k| st.rooms.get(k))
            .map(|r| {
                if r.members.get(&id) == Some(&true) {
                    format!("@{}", r.name)
                } else {
                    r.name.clone()
                }
            })
            .collect();
        Some(WhoisInfo {
            who: Self::who_entry(&st, id, false)?,
            rooms,
            away: c.away.clone(),
            account: c.account.clone(),
            signon: c.signon,
        })
    }

    /// Sets or clears the away message.
    pub fn set_away(&self, id: u64, away: Option<String>) {
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.away = away;
        }
    }

    /// Sets or clears user mode +i.
    pub fn set_invisible(&self, id: u64, on: bool) {
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.invisible = on;
        }
    }

    /// Whether a client has +i.
    pub fn is_invisible(&self, id: u64) -> bool {
        self.lock().clients.get(&id).is_some_and(|c| c.invisible)
    }

    /// Rooms with their member counts and topics (LIST).
    pub fn list(&self) -> Vec<(String, usize, String)> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .rooms
            .values()
            .map(|r| {
                (
                    r.name.clone(),
                    r.members.len(),
                    r.topic.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Connected clients and rooms (LUSERS).
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.clients.len(), st.rooms.len())
    }

    /// Nicks online, sorted (SITE WHO, ISON).
    pub fn nicks(&self) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> = st.clients.values().map(|c| c.nick.clone()).collect();
        v.sort();
        v
    }

    /// Whether `nick` is online.
    pub fn is_online(&self, nick: &str) -> bool {
        self.lock().nicks.contains_key(&fold(nick))
    }
}

/// Where a message went.
#[derive(Debug, Default, Clone)]
pub struct Delivered {
    /// The room's display name, for a room message.
    pub room: Option<String>,
    /// (nick, away message) of an away nick target.
    pub away: Option<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(hub: &Hub, nick: &str, cap: usize) -> (Identity, mpsc::Receiver<Line>, Arc<Kill>) {
        let (tx, rx) = mpsc::channel(cap);
        let kill = Arc::new(Kill::default());
        let id = hub.register(
            nick,
            nick,
            "127.0.0.1",
            nick,
            Some(nick.into()),
            Caps::default(),
            tx,
            kill.clone(),
        );
        (id, rx, kill)
    }

    fn drain(rx: &mut mpsc::Receiver<Line>) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(l) = rx.try_recv() {
            v.push(l.to_string());
        }
        v
    }

    #[test]
    fn second_connection_of_an_account_gets_a_suffixed_nick() {
        let hub = Hub::default();
        let (a, _ra, _) = client(&hub, "alice", 8);
        let (b, _rb, _) = client(&hub, "alice", 8);
        assert_eq!(a.nick, "alice");
        assert_eq!(b.nick, "alice2");
    }

    #[test]
    fn room_message_reaches_every_other_member_once_and_quit_is_told_once() {
        let hub = Hub::default();
        let (a, mut ra, _) = client(&hub, "a", 64);
        let (b, mut rb, _) = client(&hub, "b", 64);
        hub.join(a.id, "#lobby", 10).unwrap();
        hub.join(a.id, "#two", 10).unwrap();
        hub.join(b.id, "#lobby", 10).unwrap();
        hub.join(b.id, "#two", 10).unwrap();
        drain(&mut ra);
        drain(&mut rb);
        hub.message(a.id, "PRIVMSG", "#lobby", "hi").unwrap();
        assert!(drain(&mut ra).is_empty());
        assert_eq!(drain(&mut rb), [":a!a@127.0.0.1 PRIVMSG #lobby hi\r\n"]);
        hub.quit(a.id, "bye");
        let got = drain(&mut rb);
        assert_eq!(
            got,
            [":a!a@127.0.0.1 QUIT bye\r\n"],
            "QUIT must arrive exactly once"
        );
        assert!(!hub.is_online("a"));
    }

    #[test]
    fn a_full_send_queue_marks_only_that_client() {
        let hub = Hub::default();
        let (a, _ra, ka) = client(&hub, "a", 64);
        let (b, _rb, kb) = client(&hub, "b", 2);
        hub.join(a.id, "#lobby", 10).unwrap();
        hub.join(b.id, "#lobby", 10).unwrap();
        for i in 0..10 {
            hub.message(a.id, "PRIVMSG", "#lobby", &format!("m{i}"))
                .unwrap();
        }
        assert!(kb.token.is_cancelled());
        assert_eq!(kb.reason().as_deref(), Some("SendQ exceeded"));
        assert!(!ka.token.is_cancelled());
    }

    #[test]
    fn first_joiner_is_operator() {
        let hub = Hub::default();
        let (a, _ra, _) = client(&hub, "a", 64);
        let (b, _rb, _) = client(&hub, "b", 64);
        assert!(hub.join(a.id, "#x", 10).unwrap().unwrap().created);
        assert!(!hub.join(b.id, "#X", 10).unwrap().unwrap().created);
        assert_eq!(hub.names(a.id, "#x").unwrap().1, ["@a", "b"]);
    }
}
