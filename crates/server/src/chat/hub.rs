//! The chat hub: who is connected, under which nick, in which rooms. One small state behind a
//! std mutex (never held across an await); every message to a client goes into that client's
//! bounded [`Outbox`] without waiting, so a slow reader never makes anyone else wait — it is
//! marked for disconnection instead. Per client it keeps one boxed record whose strings are
//! shared with the connection (`nick!user@host` is one allocation), since idle clients are most
//! of what a chat server holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ferry_proto::irc::{fold, Message};

use super::outbox::Outbox;

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

/// What the hub knows of one registered connection.
#[derive(Debug)]
struct Client {
    /// `nick!user@host`; nick and user are its first `nick_len` and next `user_len` bytes.
    prefix: Arc<str>,
    nick_len: u32,
    user_len: u32,
    realname: Box<str>,
    away: Option<Box<str>>,
    /// Folded names of the rooms it is in (the rooms map's own keys).
    rooms: Vec<Arc<str>>,
    out: Arc<Outbox>,
    signon: i64,
    /// When the keeper sent the PING not yet answered ([`super::keeper::now_secs`]; 0: none).
    pinged_at: u32,
    /// The user part is the account it logged in with (guests have `~nick`).
    logged_in: bool,
    invisible: bool,
    caps: Caps,
}

impl Client {
    fn nick(&self) -> &str {
        &self.prefix[..self.nick_len as usize]
    }

    fn user(&self) -> &str {
        let from = self.nick_len as usize + 1;
        &self.prefix[from..from + self.user_len as usize]
    }

    fn host(&self) -> &str {
        &self.prefix[self.nick_len as usize + self.user_len as usize + 2..]
    }

    fn in_room(&self, key: &str) -> bool {
        self.rooms.iter().any(|k| **k == *key)
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
    clients: HashMap<u64, Box<Client>>,
    nicks: HashMap<Box<str>, u64>,
    rooms: HashMap<Arc<str>, Room>,
}

/// A registered client's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Hub id.
    pub id: u64,
    /// `nick!user@host`, shared with the hub.
    prefix: Arc<str>,
    nick_len: u32,
}

impl Identity {
    /// The nick it got.
    pub fn nick(&self) -> &str {
        &self.prefix[..self.nick_len as usize]
    }

    /// `nick!user@host`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
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

/// A string length as stored in [`Client`] (names are far shorter than a line).
fn len32(s: &str) -> u32 {
    u32::try_from(s.len()).unwrap_or(u32::MAX)
}

impl State {
    /// Queues a line for `id`; a full queue marks that client for disconnection.
    fn send(&self, id: u64, l: &Line) {
        if let Some(c) = self.clients.get(&id) {
            c.out.push(l);
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
            if let Some(r) = self.rooms.get(&**room) {
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
    /// has it, `wanted2`, `wanted3`, … `user` is the account name when `logged_in`.
    #[allow(clippy::too_many_arguments)] // reason: the registration facts, given once
    pub fn register(
        &self,
        wanted: &str,
        user: &str,
        host: &str,
        realname: &str,
        logged_in: bool,
        caps: Caps,
        out: Arc<Outbox>,
    ) -> Identity {
        let mut st = self.lock();
        let mut nick = wanted.to_string();
        let mut n = 2;
        while st.nicks.contains_key(fold(&nick).as_str()) {
            nick = format!("{wanted}{n}");
            n += 1;
        }
        st.next_id += 1;
        let id = st.next_id;
        let prefix: Arc<str> = Arc::from(format!("{nick}!{user}@{host}"));
        let nick_len = len32(&nick);
        let client = Client {
            prefix: prefix.clone(),
            nick_len,
            user_len: len32(user),
            realname: realname.into(),
            away: None,
            rooms: Vec::new(),
            out,
            signon: now(),
            pinged_at: 0,
            logged_in,
            invisible: false,
            caps,
        };
        st.nicks.insert(fold(&nick).into_boxed_str(), id);
        st.clients.insert(id, Box::new(client));
        Identity {
            id,
            prefix,
            nick_len,
        }
    }

    /// The keeper's look at every client at `now`: one quiet for `every` seconds is sent
    /// `ping`; one that has not said anything `wait` seconds after its PING is killed with
    /// [`super::keeper::PING_TIMEOUT`]. Any input line counts as an answer, as in IRC.
    pub fn sweep(&self, now: u32, every: u32, wait: u32, ping: &Line) {
        let mut st = self.lock();
        for c in st.clients.values_mut() {
            let heard = c.out.heard();
            if c.pinged_at != 0 && heard >= c.pinged_at {
                c.pinged_at = 0; // answered (a PING goes out only after a quiet second or more)
            }
            if c.pinged_at == 0 {
                if now.saturating_sub(heard) >= every {
                    c.out.push(ping);
                    c.pinged_at = now.max(1);
                }
            } else if now.saturating_sub(c.pinged_at) >= wait {
                c.out.kill(super::keeper::PING_TIMEOUT);
            }
        }
    }

    /// Tells every registered client's connection to close with `reason`.
    pub fn kill_all(&self, reason: &'static str) {
        for c in self.lock().clients.values() {
            c.out.kill(reason);
        }
    }

    /// Changes the capabilities a registered client negotiated (a later `CAP REQ`).
    pub fn set_caps(&self, id: u64, caps: Caps) {
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.caps = caps;
        }
    }

    /// Removes a client and tells everyone who shares a room with it, each exactly once.
    pub fn quit(&self, id: u64, reason: &str) {
        let mut st = self.lock();
        let Some(c) = st.clients.get(&id) else { return };
        let l = line(&Message::new("QUIT", [reason]).with_prefix(&*c.prefix));
        st.send_to_peers(id, &l, false);
        let Some(c) = st.clients.remove(&id) else {
            return;
        };
        st.nicks.remove(fold(c.nick()).as_str());
        for room in &c.rooms {
            let empty = match st.rooms.get_mut(&**room) {
                Some(r) => {
                    r.members.remove(&id);
                    r.members.is_empty()
                }
                None => false,
            };
            if empty {
                st.rooms.remove(&**room);
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
        if c.in_room(&key) {
            return Ok(None);
        }
        if c.rooms.len() >= max_rooms {
            return Err(HubError::TooManyChannels(name.to_string()));
        }
        let prefix = c.prefix.clone();
        let key: Arc<str> = match st.rooms.get_key_value(key.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
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
        let l = line(&Message::new("JOIN", [display.as_str()]).with_prefix(&*prefix));
        if let Some(room) = st.rooms.get(&key) {
            for m in room.members.keys() {
                st.send(*m, &l);
            }
        }
        if let Some(c) = st.clients.get_mut(&id) {
            // Rooms are joined rarely and few: grow by one rather than by doubling.
            c.rooms.reserve_exact(1);
            c.rooms.push(key);
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
        let Some(room) = st.rooms.get(key.as_str()) else {
            return Err(HubError::NoSuchChannel(name.to_string()));
        };
        if !c.in_room(&key) {
            return Err(HubError::NotOnChannel(name.to_string()));
        }
        let l = line(&Message::new("PART", [room.name.as_str(), reason]).with_prefix(&*c.prefix));
        for m in room.members.keys() {
            st.send(*m, &l);
        }
        if let Some(c) = st.clients.get_mut(&id) {
            c.rooms.retain(|k| **k != *key);
            if c.rooms.is_empty() {
                c.rooms = Vec::new();
            }
        }
        let empty = st.rooms.get_mut(key.as_str()).map(|r| {
            r.members.remove(&id);
            r.members.is_empty()
        });
        if empty == Some(true) {
            st.rooms.remove(key.as_str());
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
        let prefix = &*c.prefix;
        if target.starts_with('#') {
            let key = fold(target);
            let Some(room) = st.rooms.get(key.as_str()) else {
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
            let Some(to) = st.nicks.get(fold(target).as_str()).copied() else {
                return Err(HubError::NoSuchNick(target.to_string()));
            };
            let l = line(&Message::new(command, [target, text]).with_prefix(prefix));
            st.send(to, &l);
            let away = st.clients.get(&to).and_then(|t| {
                t.away
                    .as_ref()
                    .map(|a| (t.nick().to_string(), a.to_string()))
            });
            Ok(Delivered { room: None, away })
        }
    }

    /// A NOTICE to a room from a server pseudo-user (file activity); no-op if the room is empty.
    pub fn announce(&self, room: &str, from: &str, text: &str) {
        let st = self.lock();
        if let Some(r) = st.rooms.get(fold(room).as_str()) {
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
            .get(fold(name).as_str())
            .map(|r| (r.name.clone(), r.topic.clone()))
    }

    /// Sets a room's topic (members only) and tells the room.
    pub fn set_topic(&self, id: u64, name: &str, text: &str) -> Result<(), HubError> {
        let mut st = self.lock();
        let key = fold(name);
        let Some(c) = st.clients.get(&id) else {
            return Ok(());
        };
        let (nick, prefix) = (c.nick().to_string(), c.prefix.clone());
        let Some(room) = st.rooms.get_mut(key.as_str()) else {
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
        let l = line(&Message::new("TOPIC", [room.name.as_str(), text]).with_prefix(&*prefix));
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
        let r = st.rooms.get(fold(name).as_str())?;
        let names = r
            .members
            .iter()
            .filter_map(|(m, op)| {
                let c = st.clients.get(m)?;
                let who = if caps.userhost_in_names {
                    &*c.prefix
                } else {
                    c.nick()
                };
                Some(if *op {
                    format!("@{who}")
                } else {
                    who.to_string()
                })
            })
            .collect();
        Some((r.name.clone(), names))
    }

    /// Room modes and creation time; None if no such room.
    pub fn room_info(&self, name: &str) -> Option<(String, i64)> {
        let st = self.lock();
        st.rooms
            .get(fold(name).as_str())
            .map(|r| (r.name.clone(), r.created))
    }

    fn who_entry(st: &State, id: u64, op: bool) -> Option<WhoEntry> {
        let c = st.clients.get(&id)?;
        Some(WhoEntry {
            nick: c.nick().to_string(),
            user: c.user().to_string(),
            host: c.host().to_string(),
            realname: c.realname.to_string(),
            away: c.away.is_some(),
            op,
        })
    }

    /// WHO for a room or a nick.
    pub fn who(&self, target: &str) -> Vec<WhoEntry> {
        let st = self.lock();
        if target.starts_with('#') {
            st.rooms
                .get(fold(target).as_str())
                .map(|r| {
                    r.members
                        .iter()
                        .filter_map(|(m, op)| Self::who_entry(&st, *m, *op))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            st.nicks
                .get(fold(target).as_str())
                .and_then(|id| Self::who_entry(&st, *id, false))
                .into_iter()
                .collect()
        }
    }

    /// WHOIS of a nick.
    pub fn whois(&self, nick: &str) -> Option<WhoisInfo> {
        let st = self.lock();
        let id = *st.nicks.get(fold(nick).as_str())?;
        let c = st.clients.get(&id)?;
        let rooms = c
            .rooms
            .iter()
            .filter_map(|k| st.rooms.get(&**k))
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
            away: c.away.as_deref().map(str::to_string),
            account: c.logged_in.then(|| c.user().to_string()),
            signon: c.signon,
        })
    }

    /// Sets or clears the away message.
    pub fn set_away(&self, id: u64, away: Option<String>) {
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.away = away.map(String::into_boxed_str);
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
        let mut v: Vec<String> = st.clients.values().map(|c| c.nick().to_string()).collect();
        v.sort();
        v
    }

    /// Whether `nick` is online.
    pub fn is_online(&self, nick: &str) -> bool {
        self.lock().nicks.contains_key(fold(nick).as_str())
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
    use std::collections::VecDeque;
    use std::task::Waker;

    use super::*;
    use crate::chat::outbox::{Written, SENDQ_EXCEEDED};

    fn client(hub: &Hub, nick: &str, cap: usize) -> (Identity, Arc<Outbox>) {
        let out = Outbox::new(cap);
        let id = hub.register(
            nick,
            nick,
            "127.0.0.1",
            nick,
            true,
            Caps::default(),
            out.clone(),
        );
        (id, out)
    }

    /// Everything queued for a client, as the connection's writer would take and write it.
    fn drain(out: &Outbox) -> Vec<String> {
        let mut batch = VecDeque::new();
        let mut written = Written::default();
        let mut v = Vec::new();
        loop {
            out.take(&mut batch, written, Waker::noop());
            if batch.is_empty() {
                return v;
            }
            written = Written {
                lines: batch.len(),
                bytes: batch.iter().map(|l| l.len()).sum(),
            };
            v.extend(batch.drain(..).map(|l| l.to_string()));
        }
    }

    #[test]
    fn second_connection_of_an_account_gets_a_suffixed_nick() {
        let hub = Hub::default();
        let (a, _) = client(&hub, "alice", 8);
        let (b, _) = client(&hub, "alice", 8);
        assert_eq!(a.nick(), "alice");
        assert_eq!(b.nick(), "alice2");
        assert_eq!(b.prefix(), "alice2!alice@127.0.0.1");
    }

    #[test]
    fn room_message_reaches_every_other_member_once_and_quit_is_told_once() {
        let hub = Hub::default();
        let (a, ra) = client(&hub, "a", 64);
        let (b, rb) = client(&hub, "b", 64);
        hub.join(a.id, "#lobby", 10).unwrap();
        hub.join(a.id, "#two", 10).unwrap();
        hub.join(b.id, "#lobby", 10).unwrap();
        hub.join(b.id, "#two", 10).unwrap();
        drain(&ra);
        drain(&rb);
        hub.message(a.id, "PRIVMSG", "#lobby", "hi").unwrap();
        assert!(drain(&ra).is_empty());
        assert_eq!(drain(&rb), [":a!a@127.0.0.1 PRIVMSG #lobby hi\r\n"]);
        hub.quit(a.id, "bye");
        let got = drain(&rb);
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
        let (a, ka) = client(&hub, "a", 64);
        let (b, kb) = client(&hub, "b", 2);
        hub.join(a.id, "#lobby", 10).unwrap();
        hub.join(b.id, "#lobby", 10).unwrap();
        // Pushes alone meet only the hard bound (8 × the cap of 2); a's cap of 64 is not met.
        for i in 0..20 {
            hub.message(a.id, "PRIVMSG", "#lobby", &format!("m{i}"))
                .unwrap();
        }
        assert_eq!(kb.killed(), Some(SENDQ_EXCEEDED));
        assert_eq!(ka.killed(), None);
    }

    #[test]
    fn first_joiner_is_operator() {
        let hub = Hub::default();
        let (a, _) = client(&hub, "a", 64);
        let (b, _) = client(&hub, "b", 64);
        assert!(hub.join(a.id, "#x", 10).unwrap().unwrap().created);
        assert!(!hub.join(b.id, "#X", 10).unwrap().unwrap().created);
        assert_eq!(hub.names(a.id, "#x").unwrap().1, ["@a", "b"]);
    }

    #[test]
    fn who_and_whois_give_the_parts_of_the_prefix() {
        let hub = Hub::default();
        let out = Outbox::new(8);
        let g = hub.register("gus", "~gus", "::1", "Gus G", false, Caps::default(), out);
        hub.join(g.id, "#r", 10).unwrap();
        let w = hub.whois("GUS").unwrap();
        assert_eq!(
            (&*w.who.nick, &*w.who.user, &*w.who.host, &*w.who.realname),
            ("gus", "~gus", "::1", "Gus G")
        );
        assert_eq!(w.account, None, "a guest has no account");
        assert_eq!(w.rooms, ["@#r"]);
        let (a, _) = client(&hub, "ann", 8);
        assert_eq!(hub.whois("ann").unwrap().account.as_deref(), Some("ann"));
        assert_eq!(hub.who("#r").len(), 1);
        hub.part(g.id, "#r", "").unwrap();
        assert!(hub.room_info("#r").is_none(), "an empty room goes away");
        assert_eq!(
            hub.part(a.id, "#r", ""),
            Err(HubError::NoSuchChannel("#r".into()))
        );
    }

    #[test]
    fn a_quiet_client_is_pinged_then_killed_if_it_does_not_answer() {
        let hub = Hub::default();
        let (_, quiet) = client(&hub, "quiet", 8);
        let ping: Line = Arc::from("PING :ferry\r\n");
        let h = quiet.heard();
        hub.sweep(h + 9, 10, 5, &ping);
        assert!(drain(&quiet).is_empty(), "pinged before the interval");
        hub.sweep(h + 10, 10, 5, &ping);
        assert_eq!(drain(&quiet), ["PING :ferry\r\n"]);
        hub.sweep(h + 14, 10, 5, &ping);
        assert_eq!(quiet.killed(), None, "killed before the timeout");
        assert!(drain(&quiet).is_empty(), "pinged twice");
        hub.sweep(h + 15, 10, 5, &ping);
        assert_eq!(quiet.killed(), Some(crate::chat::keeper::PING_TIMEOUT));
    }

    #[test]
    fn any_line_after_the_ping_answers_it() {
        let hub = Hub::default();
        let (_, talker) = client(&hub, "talker", 8);
        let ping: Line = Arc::from("PING :ferry\r\n");
        let h = talker.heard();
        // Interval 0: pinged at once, at `h`.
        hub.sweep(h, 0, 5, &ping);
        assert_eq!(drain(&talker).len(), 1);
        talker.heard_now(); // a PONG, or any other line
        hub.sweep(h + 5, 0, 5, &ping);
        assert_eq!(talker.killed(), None);
    }

    #[test]
    fn kill_all_reaches_every_registered_client() {
        let hub = Hub::default();
        let (_, a) = client(&hub, "a", 8);
        let (_, b) = client(&hub, "b", 8);
        hub.kill_all(crate::chat::keeper::SHUTTING_DOWN);
        assert_eq!(a.killed(), Some(crate::chat::keeper::SHUTTING_DOWN));
        assert_eq!(b.killed(), Some(crate::chat::keeper::SHUTTING_DOWN));
    }
}
