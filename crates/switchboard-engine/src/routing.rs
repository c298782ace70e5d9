//! Routing: which conversation (and so which agent session) an inbound message belongs to.
//!
//! Pure functions over the message and the routing configuration, as in the seed dispatcher.

use crate::config::{Binding, DmScope, RoutingConfig};
use crate::model::{ChatType, Peer};

/// The routing key of a message: the first matching binding for the channel and peer (a direct peer
/// id, or a group id that also matches the group of a thread), then a channel-only binding, else the
/// defaults by chat type and `dm_scope`.
pub fn routing_key(config: &RoutingConfig, channel: &str, peer: &Peer, chat: &ChatType) -> String {
    if let Some(binding) = find_binding(&config.bindings, channel, peer, chat) {
        return binding.routing_key.clone();
    }
    match chat {
        // Each desktop chat is a conversation of its own.
        ChatType::Group { id } if channel == crate::channels::desktop::DESKTOP => {
            crate::channels::desktop::chat_key(id)
        }
        ChatType::Direct => match config.dm_scope {
            DmScope::Main => "main".to_string(),
            DmScope::PerPeer => format!("dm:{}", peer.id),
            DmScope::PerChannelPeer => format!("{channel}:dm:{}", peer.id),
        },
        ChatType::Group { id } => format!("{channel}:group:{id}"),
        ChatType::Thread {
            group_id,
            thread_id,
        } => {
            format!("{channel}:thread:{group_id}:{thread_id}")
        }
    }
}

fn find_binding<'a>(
    bindings: &'a [Binding],
    channel: &str,
    peer: &Peer,
    chat: &ChatType,
) -> Option<&'a Binding> {
    let for_channel = || bindings.iter().filter(move |b| b.channel == channel);
    let specific = for_channel().find(|b| match (chat, &b.direct, &b.group) {
        (ChatType::Direct, Some(direct), _) => *direct == peer.id,
        (ChatType::Group { id }, _, Some(group)) => group == id,
        (ChatType::Thread { group_id, .. }, _, Some(group)) => group == group_id,
        _ => false,
    });
    specific.or_else(|| for_channel().find(|b| b.direct.is_none() && b.group.is_none()))
}

/// The title of a new session, from `title_template` with `{channel} {peer} {chat_type} {chat_id}`.
pub fn session_title(template: &str, channel: &str, peer: &Peer, chat: &ChatType) -> String {
    let chat_id = match chat {
        ChatType::Direct => peer.id.as_str(),
        ChatType::Group { id } => id.as_str(),
        ChatType::Thread { thread_id, .. } => thread_id.as_str(),
    };
    template
        .replace("{channel}", channel)
        .replace("{peer}", peer.label())
        .replace("{chat_type}", chat.kind())
        .replace("{chat_id}", chat_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(channel: &str, key: &str, direct: Option<&str>, group: Option<&str>) -> Binding {
        Binding {
            channel: channel.into(),
            routing_key: key.into(),
            direct: direct.map(Into::into),
            group: group.map(Into::into),
        }
    }

    fn group(id: &str) -> ChatType {
        ChatType::Group { id: id.into() }
    }

    fn thread(g: &str, t: &str) -> ChatType {
        ChatType::Thread {
            group_id: g.into(),
            thread_id: t.into(),
        }
    }

    #[test]
    fn default_keys_follow_chat_type_and_dm_scope() {
        let peer = Peer::new("42");
        let cases = [
            (DmScope::Main, ChatType::Direct, "main"),
            (DmScope::PerPeer, ChatType::Direct, "dm:42"),
            (DmScope::PerChannelPeer, ChatType::Direct, "telegram:dm:42"),
            (DmScope::Main, group("-100"), "telegram:group:-100"),
            (
                DmScope::PerPeer,
                thread("-100", "7"),
                "telegram:thread:-100:7",
            ),
        ];
        for (scope, chat, want) in cases {
            let config = RoutingConfig {
                dm_scope: scope,
                bindings: vec![],
            };
            assert_eq!(
                routing_key(&config, "telegram", &peer, &chat),
                want,
                "{scope:?} {chat:?}"
            );
        }
    }

    #[test]
    fn bindings_match_peer_then_group_then_channel() {
        let config = RoutingConfig {
            dm_scope: DmScope::PerChannelPeer,
            bindings: vec![
                binding("slack", "slack-all", None, None),
                binding("telegram", "ops", Some("123"), None),
                binding("telegram", "team", None, Some("-100")),
                binding("telegram", "tg-rest", None, None),
            ],
        };
        let cases = [
            ("telegram", "123", ChatType::Direct, "ops"),
            ("telegram", "999", ChatType::Direct, "tg-rest"),
            ("telegram", "999", group("-100"), "team"),
            ("telegram", "999", thread("-100", "5"), "team"),
            ("telegram", "999", group("-200"), "tg-rest"),
            ("slack", "U1", ChatType::Direct, "slack-all"),
            ("discord", "9", ChatType::Direct, "discord:dm:9"),
        ];
        for (channel, peer, chat, want) in cases {
            let got = routing_key(&config, channel, &Peer::new(peer), &chat);
            assert_eq!(got, want, "{channel} {peer} {chat:?}");
        }
    }

    #[test]
    fn title_fills_every_placeholder() {
        let peer = Peer {
            id: "42".into(),
            name: Some("Ann".into()),
        };
        let title = session_title(
            "{channel} / {peer} ({chat_type} {chat_id})",
            "telegram",
            &peer,
            &group("-1"),
        );
        assert_eq!(title, "telegram / Ann (group -1)");
        assert_eq!(
            session_title(
                "{channel} / {peer}",
                "slack",
                &Peer::new("U1"),
                &ChatType::Direct
            ),
            "slack / U1"
        );
    }
}
