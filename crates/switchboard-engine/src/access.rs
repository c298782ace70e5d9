//! Who may reach the agent: the decision for each inbound message, by the channel's DM policy,
//! its allowed and admitted senders, and its allowed and open groups. Pure; the store keeps who was
//! admitted or refused and the pending pairing requests.

use std::collections::{HashMap, VecDeque};

use rand::Rng;
use serde::Serialize;

use crate::config::{Approvers, Config, DmPolicy};
use crate::model::ChatType;

/// How long a pairing code is valid.
pub const PAIRING_TTL_MS: i64 = 3_600_000;
/// At most this many pairing requests wait per channel; a newer one pushes out the oldest, so
/// a few throwaway accounts cannot keep real newcomers out.
pub const MAX_PENDING_PER_CHANNEL: usize = 10;
/// A stranger the gate answered (with a code or a "try again later") hears nothing more from it
/// for this long, whatever they send.
pub const PEER_QUIET_MS: i64 = 600_000;
/// The window over which a channel's codes and refusals are counted.
pub const PAIRING_WINDOW_MS: i64 = 3_600_000;
/// At most this many new codes per channel per window; strangers beyond it are asked to try
/// again later.
pub const CODES_PER_WINDOW: usize = 30;
/// At most this many "try again later" per channel per window; beyond it the gate is silent.
pub const DECLINES_PER_WINDOW: usize = 30;
/// How many strangers the limiter remembers per channel; past it, new ones get no answer until
/// older ones are forgotten (the channel caps bound the answers anyway).
const MAX_REMEMBERED: usize = 4096;
/// Letters and digits that cannot be mistaken for one another (no 0/O, 1/I).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// How many characters a pairing code has.
pub const CODE_LEN: usize = 8;

/// A channel's access settings, read from its configuration table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub dm_policy: DmPolicy,
    pub allowed_users: Vec<String>,
    pub owners: Vec<String>,
    /// Who may approve a tool call from the chat besides the owners.
    pub approvers: Approvers,
    /// Groups (Telegram chats, Slack channels, Discord guilds) where the bot answers at all; `*`
    /// for every group.
    pub groups: Vec<String>,
    /// Groups where anyone may talk to the agent, admitted or not; `*` for every group.
    pub open_groups: Vec<String>,
    /// Channels that are not chat platforms (in-process, tests) let everyone through.
    pub unrestricted: bool,
    /// The adapter itself keeps to the allowed groups (Discord checks its guilds), so any group
    /// that reaches the engine is allowed.
    pub groups_checked_by_adapter: bool,
}

impl Policy {
    /// The policy of a channel by name; a channel with no table in the configuration (an
    /// in-process channel) is unrestricted, since nobody outside the process can reach it.
    pub fn of(config: &Config, channel: &str) -> Policy {
        let c = &config.channels;
        let (dm_policy, allowed_users, owners, approvers, groups, open_groups) = match channel {
            "telegram" => match &c.telegram {
                Some(t) => (
                    t.dm_policy,
                    &t.allowed_users,
                    &t.owners,
                    t.approvers,
                    t.groups.clone(),
                    &t.open_groups,
                ),
                None => return Policy::default(),
            },
            "slack" => match &c.slack {
                Some(s) => (
                    s.dm_policy,
                    &s.allowed_users,
                    &s.owners,
                    s.approvers,
                    s.groups.clone(),
                    &s.open_groups,
                ),
                None => return Policy::default(),
            },
            "discord" => match &c.discord {
                Some(d) => {
                    return Policy {
                        dm_policy: d.dm_policy,
                        allowed_users: d.allowed_users.clone(),
                        owners: d.owners.clone(),
                        approvers: d.approvers,
                        groups: d.guilds.clone(),
                        open_groups: d.open_groups.clone(),
                        unrestricted: false,
                        groups_checked_by_adapter: true,
                    }
                }
                None => return Policy::default(),
            },
            _ => {
                return Policy {
                    unrestricted: true,
                    ..Policy::default()
                }
            }
        };
        Policy {
            dm_policy,
            allowed_users: allowed_users.clone(),
            owners: owners.clone(),
            approvers,
            groups,
            open_groups: open_groups.clone(),
            unrestricted: false,
            groups_checked_by_adapter: false,
        }
    }

    /// Whether the person who asked for a tool call may approve it themselves (an owner always
    /// may). `auto` leaves it to the owners once there are any.
    pub fn requester_may_approve(&self) -> bool {
        match self.approvers {
            Approvers::Requester => true,
            Approvers::Owners => false,
            Approvers::Auto => self.owners.is_empty(),
        }
    }

    fn is_known(&self, peer: &str, admitted: bool) -> bool {
        admitted
            || self.allowed_users.iter().any(|u| u == peer)
            || self.owners.iter().any(|u| u == peer)
    }

    pub fn is_owner(&self, peer: &str) -> bool {
        self.owners.iter().any(|u| u == peer)
    }
}

/// What the engine knows of a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Unknown,
    Admitted,
    Refused,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on to the agent.
    Admit,
    /// Drop it without a word (refused senders, allowlist strangers, closed groups).
    Ignore(&'static str),
    /// A stranger's direct message under the pairing policy: answer with a pairing code.
    Pair,
}

/// A message where only the sender and the bot are: the DM policy decides.
fn dm(policy: &Policy, known: bool) -> Verdict {
    if known || policy.dm_policy == DmPolicy::Open {
        Verdict::Admit
    } else if policy.dm_policy == DmPolicy::Pairing {
        Verdict::Pair
    } else {
        Verdict::Ignore("sender not on the allowlist")
    }
}

/// The decision for one message from `peer` in `chat`.
pub fn verdict(policy: &Policy, chat: &ChatType, peer: &str, state: PeerState) -> Verdict {
    if policy.unrestricted {
        return Verdict::Admit;
    }
    if state == PeerState::Refused && !policy.is_known(peer, false) {
        return Verdict::Ignore("refused sender");
    }
    let known = policy.is_known(peer, state == PeerState::Admitted);
    match chat {
        ChatType::Direct => dm(policy, known),
        ChatType::Thread { .. } if chat.is_private_with(peer) => dm(policy, known),
        ChatType::Group { id } | ChatType::Thread { group_id: id, .. } => {
            // `*` stands for every group: written by the user, never assumed.
            let listed = |list: &[String]| list.iter().any(|g| g == id || g == "*");
            if !policy.groups_checked_by_adapter
                && !listed(&policy.groups)
                && !listed(&policy.open_groups)
            {
                Verdict::Ignore("group not allowed")
            } else if known || listed(&policy.open_groups) {
                Verdict::Admit
            } else {
                Verdict::Ignore("sender not admitted in this group")
            }
        }
    }
}

/// A new pairing code: 8 characters from an alphabet without look-alikes.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// Normalises a code a person typed (spaces, dashes, lower case).
pub fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `code` (normalised) could be a pairing code: the length and the alphabet of one.
pub fn is_code(code: &str) -> bool {
    code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))
}

/// The reply a stranger gets: the code, and nothing else.
pub fn pairing_reply(code: &str) -> String {
    format!(
        "🔐 I don't know you yet, so your messages don't reach the agent. Your pairing code is {code}. \
         Ask the owner of this bot to admit it in Switchboard; it is valid for one hour."
    )
}

/// What the gate does for a stranger who has no waiting code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingStep {
    /// Give them a new code.
    Issue,
    /// Tell them, politely, that too many people are asking.
    TryLater,
    /// Say nothing (they were answered a moment ago, or the channel is flooded).
    Silent(&'static str),
}

/// Keeps what strangers cost in bounds: each is answered at most once per [`PEER_QUIET_MS`], and a
/// channel gives at most [`CODES_PER_WINDOW`] codes and [`DECLINES_PER_WINDOW`] refusals an hour.
/// In memory: after a restart the stored codes still stop repeats.
#[derive(Debug, Default)]
pub struct PairingLimiter {
    channels: HashMap<String, ChannelLimits>,
}

#[derive(Debug, Default)]
struct ChannelLimits {
    /// When each stranger was last answered.
    answered: HashMap<String, i64>,
    issued: VecDeque<i64>,
    declined: VecDeque<i64>,
}

impl PairingLimiter {
    /// Decides, and counts, the gate's answer to `peer` on `channel` at `now`.
    pub fn step(&mut self, channel: &str, peer: &str, now: i64) -> PairingStep {
        let limits = self.channels.entry(channel.to_string()).or_default();
        if limits
            .answered
            .get(peer)
            .is_some_and(|&at| now - at < PEER_QUIET_MS)
        {
            return PairingStep::Silent("answered a moment ago");
        }
        if limits.answered.len() >= MAX_REMEMBERED && !limits.answered.contains_key(peer) {
            limits.answered.retain(|_, at| now - *at < PEER_QUIET_MS);
            if limits.answered.len() >= MAX_REMEMBERED {
                return PairingStep::Silent("too many strangers at once");
            }
        }
        for times in [&mut limits.issued, &mut limits.declined] {
            while times
                .front()
                .is_some_and(|&at| now - at >= PAIRING_WINDOW_MS)
            {
                times.pop_front();
            }
        }
        let step = if limits.issued.len() < CODES_PER_WINDOW {
            limits.issued.push_back(now);
            PairingStep::Issue
        } else if limits.declined.len() < DECLINES_PER_WINDOW {
            limits.declined.push_back(now);
            PairingStep::TryLater
        } else {
            return PairingStep::Silent("too many strangers at once");
        };
        limits.answered.insert(peer.to_string(), now);
        step
    }
}

/// What a stranger hears when the channel has given out too many codes lately.
pub const TRY_LATER_REPLY: &str = "⏳ Too many people are asking to talk to this bot right now. \
     Please try again in an hour.";

/// A pairing request as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairingRequest {
    pub channel: String,
    pub peer_id: String,
    pub peer_name: String,
    pub code: String,
    pub first_message: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub state: PairingState,
}

/// Where a pairing request is. Stored as text; an unknown value is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum PairingState {
    Pending,
    Admitted,
    Refused,
}

impl PairingState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairingState::Pending => "pending",
            PairingState::Admitted => "admitted",
            PairingState::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<PairingState> {
        Some(match text {
            "pending" => PairingState::Pending,
            "admitted" => PairingState::Admitted,
            "refused" => PairingState::Refused,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PairingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chat command an owner can send in a DM to admit or refuse a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerCommand {
    Admit(String),
    Refuse(String),
}

/// Reads `/admit CODE`, `/pair approve CODE`, `/refuse CODE`, `/pair refuse CODE`.
pub fn owner_command(text: &str) -> Option<OwnerCommand> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    match lower
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["/admit", _] => Some(OwnerCommand::Admit(normalise_code(words[1]))),
        ["/refuse", _] => Some(OwnerCommand::Refuse(normalise_code(words[1]))),
        ["/pair", "approve" | "admit", _] => Some(OwnerCommand::Admit(normalise_code(words[2]))),
        ["/pair", "refuse" | "deny", _] => Some(OwnerCommand::Refuse(normalise_code(words[2]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dm: DmPolicy) -> Policy {
        Policy {
            dm_policy: dm,
            allowed_users: vec!["friend".into()],
            owners: vec!["owner".into()],
            approvers: Approvers::Auto,
            groups: vec!["-100".into(), "G1".into()],
            open_groups: vec!["-200".into()],
            unrestricted: false,
            groups_checked_by_adapter: false,
        }
    }

    #[test]
    fn with_owners_approving_is_theirs_unless_the_requester_is_named() {
        let mut p = policy(DmPolicy::Pairing);
        assert!(
            !p.requester_may_approve(),
            "auto with owners: owners approve"
        );
        p.approvers = Approvers::Requester;
        assert!(p.requester_may_approve());
        p.approvers = Approvers::Auto;
        p.owners.clear();
        assert!(
            p.requester_may_approve(),
            "auto without owners: the requester"
        );
        p.approvers = Approvers::Owners;
        assert!(!p.requester_may_approve());
    }

    #[test]
    fn a_topic_of_a_private_chat_is_a_direct_message() {
        let topic = ChatType::Thread {
            group_id: "stranger".into(),
            thread_id: "7".into(),
        };
        let p = policy(DmPolicy::Pairing);
        assert_eq!(
            verdict(&p, &topic, "stranger", PeerState::Unknown),
            Verdict::Pair,
            "the stranger gets a code, as in a direct message"
        );
        assert_eq!(
            verdict(&p, &topic, "owner", PeerState::Unknown),
            Verdict::Ignore("group not allowed")
        );
    }

    fn group(id: &str) -> ChatType {
        ChatType::Group { id: id.into() }
    }

    #[test]
    fn each_sender_gets_what_the_policy_says() {
        use PeerState::*;
        let cases = [
            (
                DmPolicy::Pairing,
                ChatType::Direct,
                "stranger",
                Unknown,
                Verdict::Pair,
            ),
            (
                DmPolicy::Pairing,
                ChatType::Direct,
                "stranger",
                Refused,
                Verdict::Ignore("refused sender"),
            ),
            (
                DmPolicy::Pairing,
                ChatType::Direct,
                "paired",
                Admitted,
                Verdict::Admit,
            ),
            (
                DmPolicy::Pairing,
                ChatType::Direct,
                "friend",
                Unknown,
                Verdict::Admit,
            ),
            (
                DmPolicy::Pairing,
                ChatType::Direct,
                "owner",
                Refused,
                Verdict::Admit,
            ),
            (
                DmPolicy::Allowlist,
                ChatType::Direct,
                "stranger",
                Unknown,
                Verdict::Ignore("sender not on the allowlist"),
            ),
            (
                DmPolicy::Allowlist,
                ChatType::Direct,
                "friend",
                Unknown,
                Verdict::Admit,
            ),
            (
                DmPolicy::Open,
                ChatType::Direct,
                "stranger",
                Unknown,
                Verdict::Admit,
            ),
            (
                DmPolicy::Open,
                group("-100"),
                "stranger",
                Unknown,
                Verdict::Ignore("sender not admitted in this group"),
            ),
            (
                DmPolicy::Open,
                group("-100"),
                "paired",
                Admitted,
                Verdict::Admit,
            ),
            (
                DmPolicy::Open,
                group("-999"),
                "owner",
                Unknown,
                Verdict::Ignore("group not allowed"),
            ),
            (
                DmPolicy::Pairing,
                group("-200"),
                "stranger",
                Unknown,
                Verdict::Admit,
            ),
            (
                DmPolicy::Pairing,
                group("-999"),
                "stranger",
                Unknown,
                Verdict::Ignore("group not allowed"),
            ),
            (
                DmPolicy::Pairing,
                ChatType::Thread {
                    group_id: "-100".into(),
                    thread_id: "7".into(),
                },
                "friend",
                Unknown,
                Verdict::Admit,
            ),
        ];
        for (dm, chat, peer, state, want) in cases {
            assert_eq!(
                verdict(&policy(dm), &chat, peer, state),
                want,
                "{dm:?} {chat:?} {peer} {state:?}"
            );
        }
    }

    #[test]
    fn groups_checked_by_the_adapter_still_need_admitted_senders() {
        let mut p = policy(DmPolicy::Pairing);
        p.groups_checked_by_adapter = true;
        assert_eq!(
            verdict(&p, &group("chan-9"), "friend", PeerState::Unknown),
            Verdict::Admit
        );
        assert_eq!(
            verdict(&p, &group("chan-9"), "stranger", PeerState::Unknown),
            Verdict::Ignore("sender not admitted in this group")
        );
    }

    #[test]
    fn unrestricted_channels_let_everyone_through() {
        let p = Policy {
            unrestricted: true,
            ..Policy::default()
        };
        assert_eq!(
            verdict(&p, &ChatType::Direct, "x", PeerState::Refused),
            Verdict::Admit
        );
    }

    #[test]
    fn codes_are_eight_unambiguous_characters() {
        for _ in 0..200 {
            let code = new_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
        }
        assert_eq!(normalise_code(" abcd-2345 "), "ABCD2345");
    }

    #[test]
    fn a_stranger_is_answered_once_per_quiet_period() {
        let mut limiter = PairingLimiter::default();
        assert_eq!(limiter.step("telegram", "s", 0), PairingStep::Issue);
        for t in [1, 1_000, PEER_QUIET_MS - 1] {
            assert!(matches!(
                limiter.step("telegram", "s", t),
                PairingStep::Silent(_)
            ));
        }
        assert_eq!(
            limiter.step("slack", "s", 1),
            PairingStep::Issue,
            "channels count apart"
        );
        assert_eq!(
            limiter.step("telegram", "s", PEER_QUIET_MS),
            PairingStep::Issue
        );
    }

    #[test]
    fn a_flooded_channel_declines_politely_then_goes_quiet_then_recovers() {
        let mut limiter = PairingLimiter::default();
        let steps: Vec<PairingStep> = (0..CODES_PER_WINDOW + DECLINES_PER_WINDOW + 5)
            .map(|i| limiter.step("telegram", &format!("p{i}"), i as i64))
            .collect();
        assert!(steps[..CODES_PER_WINDOW]
            .iter()
            .all(|s| *s == PairingStep::Issue));
        assert!(
            steps[CODES_PER_WINDOW..CODES_PER_WINDOW + DECLINES_PER_WINDOW]
                .iter()
                .all(|s| *s == PairingStep::TryLater)
        );
        assert!(steps[CODES_PER_WINDOW + DECLINES_PER_WINDOW..]
            .iter()
            .all(|s| matches!(s, PairingStep::Silent(_))));
        assert_eq!(
            limiter.step("telegram", "newcomer", PAIRING_WINDOW_MS + 10),
            PairingStep::Issue,
            "an hour later codes are given again"
        );
    }

    #[test]
    fn owner_commands() {
        let cases = [
            (
                "/admit abcd2345",
                Some(OwnerCommand::Admit("ABCD2345".into())),
            ),
            (
                "/pair approve ABCD-2345",
                Some(OwnerCommand::Admit("ABCD2345".into())),
            ),
            ("/refuse X", Some(OwnerCommand::Refuse("X".into()))),
            ("/pair deny zz", Some(OwnerCommand::Refuse("ZZ".into()))),
            ("please /admit me", None),
            ("/admit", None),
        ];
        for (text, want) in cases {
            assert_eq!(owner_command(text), want, "{text}");
        }
    }
}
