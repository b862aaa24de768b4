//! The rooms a chat connection is in and who is in each, kept from the server's NAMES replies
//! (353/366) and the JOIN, PART, KICK, QUIT and NICK messages that follow. Pure: the connection
//! task feeds it messages; names compare with IRC's case folding (`ferry_proto::irc::fold`).

use std::collections::BTreeMap;

use ferry_proto::irc::fold;

/// Most rooms remembered, and most members per room: a server that floods JOINs cannot make
/// the client grow without bound.
pub const MAX_ROOMS: usize = 256;
/// Most members remembered per room.
pub const MAX_MEMBERS: usize = 10_000;

/// One room.
#[derive(Debug, Clone, Default)]
struct Room {
    /// The name as the server spells it.
    name: String,
    /// Folded nick → nick as shown.
    members: BTreeMap<String, String>,
    /// A NAMES reply being received (353 lines until the 366).
    pending: Option<BTreeMap<String, String>>,
    /// A complete NAMES reply has arrived since this connection joined.
    named: bool,
}

/// The rooms this connection is in, with their members.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: BTreeMap<String, Room>,
}

/// A nick from a NAMES entry: without its status prefix (`@`, `+`, …; several with
/// multi-prefix) and without `!user@host` (userhost-in-names).
fn names_entry(entry: &str) -> &str {
    let nick = entry.trim_start_matches(['@', '+', '%', '&', '~']);
    nick.split('!').next().unwrap_or(nick)
}

fn add(members: &mut BTreeMap<String, String>, nick: &str) {
    if nick.is_empty() || (members.len() >= MAX_MEMBERS && !members.contains_key(&fold(nick))) {
        return;
    }
    members.insert(fold(nick), nick.to_string());
}

impl Rooms {
    /// No rooms.
    pub fn new() -> Rooms {
        Rooms::default()
    }

    /// `nick` joined `room`; `me` when it is this connection (the room is then new to it).
    pub fn join(&mut self, room: &str, nick: &str, me: bool) {
        let key = fold(room);
        if me {
            if self.rooms.len() >= MAX_ROOMS && !self.rooms.contains_key(&key) {
                return;
            }
            let entry = self.rooms.entry(key).or_default();
            entry.name = room.to_string();
            add(&mut entry.members, nick);
        } else if let Some(r) = self.rooms.get_mut(&key) {
            add(&mut r.members, nick);
        }
    }

    /// `nick` left `room` (PART or KICK); when it is this connection the room is forgotten.
    pub fn part(&mut self, room: &str, nick: &str, me: bool) {
        let key = fold(room);
        if me {
            self.rooms.remove(&key);
        } else if let Some(r) = self.rooms.get_mut(&key) {
            r.members.remove(&fold(nick));
        }
    }

    /// `nick` quit: gone from every room. Returns the rooms it was in.
    pub fn quit(&mut self, nick: &str) -> Vec<String> {
        let key = fold(nick);
        let mut was_in = Vec::new();
        for r in self.rooms.values_mut() {
            if r.members.remove(&key).is_some() {
                was_in.push(r.name.clone());
            }
        }
        was_in
    }

    /// `old` is now called `new`.
    pub fn rename(&mut self, old: &str, new: &str) {
        let old_key = fold(old);
        for r in self.rooms.values_mut() {
            if r.members.remove(&old_key).is_some() {
                add(&mut r.members, new);
            }
        }
    }

    /// One `353` line: `entries` (space-separated) are in `room`.
    pub fn names_line(&mut self, room: &str, entries: &str) {
        if let Some(r) = self.rooms.get_mut(&fold(room)) {
            let pending = r.pending.get_or_insert_with(BTreeMap::new);
            for e in entries.split_whitespace() {
                add(pending, names_entry(e));
            }
        }
    }

    /// `366`: the NAMES reply for `room` is complete and replaces what was known.
    pub fn names_end(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(&fold(room)) {
            if let Some(p) = r.pending.take() {
                r.members = p;
            }
            r.named = true;
        }
    }

    /// The members of `room` (sorted, case-insensitively), or `None` if this connection is not
    /// in it.
    pub fn members(&self, room: &str) -> Option<Vec<String>> {
        self.rooms
            .get(&fold(room))
            .map(|r| r.members.values().cloned().collect())
    }

    /// Whether this connection is in `room` and has its full member list (the NAMES reply
    /// that follows a JOIN has ended).
    pub fn is_ready(&self, room: &str) -> bool {
        self.rooms.get(&fold(room)).is_some_and(|r| r.named)
    }

    /// Whether this connection is in `room`.
    pub fn is_in(&self, room: &str) -> bool {
        self.rooms.contains_key(&fold(room))
    }

    /// The rooms this connection is in, as the server spells them.
    pub fn names(&self) -> Vec<String> {
        self.rooms.values().map(|r| r.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_then_joins_parts_and_quits() {
        let mut r = Rooms::new();
        r.join("#lobby", "alice", true);
        assert!(r.is_in("#lobby") && !r.is_ready("#lobby"));
        r.names_line("#lobby", "@bob alice");
        r.names_line("#lobby", "carol!carol@127.0.0.1 +dave");
        assert_eq!(r.members("#lobby").unwrap(), ["alice"]); // until the 366
        r.names_end("#lobby");
        assert!(r.is_ready("#LOBBY"));
        assert_eq!(
            r.members("#LOBBY").unwrap(),
            ["alice", "bob", "carol", "dave"]
        );
        r.join("#lobby", "Erin", false);
        r.part("#lobby", "BOB", false);
        assert_eq!(
            r.members("#lobby").unwrap(),
            ["alice", "carol", "dave", "Erin"]
        );
        assert_eq!(r.quit("carol"), ["#lobby"]);
        r.rename("dave", "david");
        assert_eq!(r.members("#lobby").unwrap(), ["alice", "david", "Erin"]);
        r.part("#lobby", "alice", true);
        assert_eq!(r.members("#lobby"), None);
        assert!(!r.is_in("#lobby"));
    }

    #[test]
    fn others_joining_rooms_we_are_not_in_are_ignored() {
        let mut r = Rooms::new();
        r.join("#other", "bob", false);
        r.names_line("#other", "bob");
        r.names_end("#other");
        assert_eq!(r.members("#other"), None);
        assert!(r.names().is_empty());
    }

    #[test]
    fn rfc1459_case_folding_names_the_same_room() {
        let mut r = Rooms::new();
        r.join("#Room[1]", "me", true);
        r.join("#room{1}", "x", false);
        assert_eq!(r.members("#ROOM[1]").unwrap(), ["me", "x"]);
        assert_eq!(r.names(), ["#Room[1]"]);
    }

    #[test]
    fn a_flood_of_joins_is_bounded() {
        let mut r = Rooms::new();
        for i in 0..MAX_ROOMS + 10 {
            r.join(&format!("#r{i}"), "me", true);
        }
        assert_eq!(r.names().len(), MAX_ROOMS);
        for i in 0..MAX_MEMBERS + 10 {
            r.join("#r0", &format!("n{i}"), false);
        }
        assert_eq!(r.members("#r0").unwrap().len(), MAX_MEMBERS);
    }
}
