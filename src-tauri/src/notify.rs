//! Native notifications: which engine events raise one ([`Alerts`], a pure policy with its own
//! small memory) and showing them through the desktop's notification daemon (notify-rust).

use std::collections::{HashMap, HashSet};

use switchboard_engine::access::PairingRequest;
use switchboard_engine::chunk::clip_chars;
use switchboard_engine::config::NotificationsConfig;
use switchboard_engine::model::ChannelState;
use switchboard_engine::EngineEvent;

use crate::activity::preview;
use crate::tray::title_case;

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toast {
    pub summary: String,
    pub body: String,
    /// The conversation its default action (a click) opens.
    pub open: Option<String>,
    /// What it asks the person: its actions answer it, and it is withdrawn when the question is
    /// answered elsewhere or stops waiting.
    pub question: Option<Question>,
    /// The notification could not show the question whole (the call's text was masked or cut):
    /// it offers to open the window, never to approve unseen.
    pub partial: bool,
    /// The conversation a "Reply" goes to: typed into the notification where the server offers
    /// inline replies, else in the quick chat opened on it.
    pub reply: Option<String>,
    /// Not shown while a Switchboard window has the focus (the person sees it there already).
    pub unless_focused: bool,
}

impl Toast {
    /// The action buttons it offers, in order.
    pub fn answers(&self) -> Vec<Answer> {
        match &self.question {
            Some(Question::Approval(_)) if self.partial => vec![Answer::Open, Answer::Reject],
            Some(question) => question.answers().to_vec(),
            None => Vec::new(),
        }
    }
}

/// A question a notification asks, answered with its action buttons.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    /// A tool call waiting for approval, by approval id.
    Approval(String),
    /// A stranger asking to talk to the agent, by their pairing code on a channel.
    Pairing { channel: String, code: String },
}

impl Question {
    /// The answers offered, as action buttons in this order.
    pub fn answers(&self) -> [Answer; 2] {
        match self {
            Question::Approval(_) => [Answer::Approve, Answer::Reject],
            Question::Pairing { .. } => [Answer::Admit, Answer::Refuse],
        }
    }
}

/// An answer given with a notification's action button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Reject,
    Admit,
    Refuse,
    /// Opens the window on the question (offered instead of Approve when the notification
    /// could not show the whole call).
    Open,
}

impl Answer {
    const ALL: [Answer; 5] = [
        Answer::Approve,
        Answer::Reject,
        Answer::Admit,
        Answer::Refuse,
        Answer::Open,
    ];

    /// The action's name on the bus.
    pub fn action(self) -> &'static str {
        match self {
            Answer::Approve => "approve",
            Answer::Reject => "reject",
            Answer::Admit => "admit",
            Answer::Refuse => "refuse",
            Answer::Open => "open",
        }
    }

    /// The button's label.
    pub fn label(self) -> &'static str {
        match self {
            Answer::Approve => "Approve",
            Answer::Reject => "Reject",
            Answer::Admit => "Admit",
            Answer::Refuse => "Refuse",
            Answer::Open => "Open Switchboard",
        }
    }

    /// The answer an invoked action stands for (`None` for the default action or a stranger's).
    pub fn from_action(action: &str) -> Option<Answer> {
        Answer::ALL.into_iter().find(|a| a.action() == action)
    }
}

/// Identical notifications closer together than this are one event seen twice.
const REPEAT_WINDOW_MS: i64 = 60_000;
/// How long a question is remembered as notified (longer than any approval timeout in use, and
/// than a pairing code's hour).
const QUESTION_MEMORY_MS: i64 = 7 * 24 * 3_600_000;
/// The longest body of an approval notification (the window shows the arguments whole).
const APPROVAL_BODY_CHARS: usize = 300;
/// How much of a stranger's first message a pairing notification quotes.
const FIRST_MESSAGE_CHARS: usize = 160;

/// Decides which events become notifications: watch notifications delivered through `/send`, the
/// agent's reply to one, a stranger asking to be admitted (pairing), and a channel that starts
/// failing (once per failure, not on each retry).
/// Everything is held under do-not-disturb, the quiet hours, or with notifications turned off.
#[derive(Default)]
pub struct Alerts {
    /// Channels in a failure already announced; cleared when the channel recovers or is turned off.
    failing: HashSet<String>,
    /// When each recent notification was raised, so the same one is not raised twice.
    recent: HashMap<(String, String, Option<String>), i64>,
    /// Questions already notified (or held while muted), so none is raised twice.
    asked: HashMap<Question, i64>,
}

impl Alerts {
    /// The notification `event` raises now, if any. `minute_of_day` is the local time, for the
    /// quiet hours.
    pub fn decide(
        &mut self,
        event: &EngineEvent,
        settings: &NotificationsConfig,
        now_ms: i64,
        minute_of_day: u16,
    ) -> Option<Toast> {
        // The failure memory is kept even while muted, so that turning do-not-disturb off does not
        // announce a failure that is already old.
        let toast = self.toast_for(event)?;
        if let Some(question) = &toast.question {
            self.asked.retain(|_, at| now_ms - *at < QUESTION_MEMORY_MS);
            if self.asked.insert(question.clone(), now_ms).is_some() {
                return None;
            }
        }
        if is_muted(settings, minute_of_day) {
            tracing::debug!(summary = %toast.summary, "notification held (do not disturb or quiet hours)");
            return None;
        }
        if toast.question.is_some() {
            // Each question is its own, even when it reads the same as another.
            return Some(toast);
        }
        self.recent.retain(|_, at| now_ms - *at < REPEAT_WINDOW_MS);
        let key = (
            toast.summary.clone(),
            toast.body.clone(),
            toast.open.clone(),
        );
        if self.recent.insert(key, now_ms).is_some() {
            return None;
        }
        Some(toast)
    }

    fn toast_for(&mut self, event: &EngineEvent) -> Option<Toast> {
        match event {
            EngineEvent::WatchNotificationDelivered {
                channel,
                target,
                text,
                routing_key,
                ..
            } => Some(Toast {
                summary: format!("{channel}/{}", target.place_key()),
                body: text.clone(),
                open: routing_key.clone(),
                question: None,
                partial: false,
                reply: routing_key.clone(),
                unless_focused: false,
            }),
            EngineEvent::WatchReplyDelivered {
                channel,
                routing_key,
                target,
                text,
            } => Some(Toast {
                summary: format!("Reply in {channel}/{}", target.place_key()),
                body: preview(text, 200),
                open: Some(routing_key.clone()),
                question: None,
                partial: false,
                reply: Some(routing_key.clone()),
                unless_focused: false,
            }),
            // The agent answered in the desktop chat: worth a notification when the person is
            // not looking (they wrote in the quick chat and closed it, or went elsewhere).
            EngineEvent::ReplyDelivered {
                channel,
                routing_key,
                text,
                ..
            } if channel == switchboard_engine::channels::desktop::DESKTOP => Some(Toast {
                summary: "The agent answered".to_owned(),
                body: preview(text, 200),
                open: Some(routing_key.clone()),
                question: None,
                partial: false,
                reply: Some(routing_key.clone()),
                unless_focused: true,
            }),
            EngineEvent::ChannelState { status } => {
                let failing = status.enabled
                    && match status.state {
                        ChannelState::AuthFailed => true,
                        ChannelState::Reconnecting => status.last_error.is_some(),
                        _ => false,
                    };
                if !failing {
                    if matches!(
                        status.state,
                        ChannelState::Connected | ChannelState::Disabled
                    ) {
                        self.failing.remove(&status.name);
                    }
                    return None;
                }
                if !self.failing.insert(status.name.clone()) {
                    return None;
                }
                let what = if status.state == ChannelState::AuthFailed {
                    "refuses the credentials"
                } else {
                    "lost its connection"
                };
                Some(Toast {
                    summary: format!("The {} channel {what}", status.name),
                    body: status.last_error.clone().unwrap_or_default(),
                    open: None,
                    question: None,
                    partial: false,
                    reply: None,
                    unless_focused: false,
                })
            }
            EngineEvent::PairingRequested { request } => Some(Toast {
                summary: format!("{} asks to talk to the agent", request.peer_name),
                body: pairing_body(request),
                open: None,
                question: Some(Question::Pairing {
                    channel: request.channel.clone(),
                    code: request.code.clone(),
                }),
                partial: false,
                reply: None,
                unless_focused: false,
            }),
            EngineEvent::ApprovalRequested {
                approval_id,
                summary,
                detail,
                complete,
                requester,
                ..
            } => {
                let body = clip_chars(detail, APPROVAL_BODY_CHARS);
                // Approving from here is only for a call the notification shows whole.
                let partial = !*complete || body != *detail;
                Some(Toast {
                    summary: format!("{requester} asks to {summary}"),
                    body: if partial {
                        format!("{body}\n(Not all of it is shown here: open Switchboard to see it before you approve.)")
                    } else {
                        body
                    },
                    open: None,
                    question: Some(Question::Approval(approval_id.clone())),
                    partial,
                    reply: None,
                    unless_focused: false,
                })
            }
            _ => None,
        }
    }
}

/// A pairing notification's body: who (on which channel, with which id), what they wrote first,
/// and what the two answers do.
fn pairing_body(request: &PairingRequest) -> String {
    let who = if request.peer_name == request.peer_id {
        format!("On {}", title_case(&request.channel))
    } else {
        format!(
            "On {}, as {}",
            title_case(&request.channel),
            request.peer_id
        )
    };
    let first = one_line(&request.first_message);
    let quote = if first.is_empty() {
        String::new()
    } else {
        format!(
            ": \u{201c}{}\u{201d}",
            clip_chars(&first, FIRST_MESSAGE_CHARS)
        )
    };
    format!(
        "{who}{quote}\nCode {}. Admit lets their messages reach the agent; Refuse ignores them from now on.",
        request.code
    )
}

/// `text` on one line: runs of whitespace and control characters become one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with the characters the notification markup gives meaning to escaped. Servers that
/// advertise `body-markup` read the body as markup, where a stranger's `<a href=…>` would be a
/// link; it must read as the characters that were sent.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A summary (title) safe on every server. The specification says titles are plain text, but
/// some servers (dunst with markup on) format the title as markup too, where a stranger's
/// chosen name `<a href=…>` would be a link. Escaping would show `&amp;` on the servers that
/// follow the specification, so the three characters markup gives meaning to become look-alikes,
/// and line breaks and control characters become spaces.
pub fn plain_summary(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => '‹',
            '>' => '›',
            '&' => '＆',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The body as the notification server will read it: escaped when it reads markup.
fn body_for_server(body: &str) -> String {
    let markup = notify_rust::get_capabilities()
        .map(|caps| caps.iter().any(|c| c == "body-markup"))
        .unwrap_or(false);
    if markup {
        escape_markup(body)
    } else {
        body.to_owned()
    }
}

/// Whether notifications are held now.
pub fn is_muted(settings: &NotificationsConfig, minute_of_day: u16) -> bool {
    !settings.enabled
        || settings.do_not_disturb
        || settings
            .quiet_hours()
            .is_some_and(|(start, end)| in_quiet_hours(minute_of_day, start, end))
}

/// Whether `minute` (after midnight) falls in the quiet hours from `start` to `end`, which run over
/// midnight when `end` is before `start`. Equal ends mean no quiet hours.
pub fn in_quiet_hours(minute: u16, start: u16, end: u16) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Less => (start..end).contains(&minute),
        std::cmp::Ordering::Greater => minute >= start || minute < end,
    }
}

/// The local time as minutes after midnight.
pub fn local_minute_of_day() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

/// What a person did with a notification that is not a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Clicked it: open the conversation.
    Open(String),
    /// Answered the conversation: with the words typed into the notification (servers with
    /// inline replies), or `None` to write them in the quick chat.
    Reply(String, Option<String>),
}

/// Shows `toast` through the session bus's notification daemon, on a thread of its own (the call
/// blocks, and waiting for a click blocks until the notification closes). `respond` runs when
/// the person opens the notification's conversation or replies to it. Without a bus or a daemon
/// the failure is logged and nothing else happens.
pub fn show(toast: Toast, respond: impl FnOnce(Response) + Send + 'static) {
    let spawned = std::thread::Builder::new().name("notification".into()).spawn(move || {
        if toast.reply.is_some() && server_has("inline-reply") {
            match crate::rt::block_on(show_with_inline_reply(&toast)) {
                Ok(Some(response)) => respond(response),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot show a notification with an inline reply"),
            }
            return;
        }
        let mut notification = notify_rust::Notification::new();
        notification.appname("Switchboard").summary(&plain_summary(&toast.summary)).body(&body_for_server(&toast.body)).icon("switchboard");
        if toast.open.is_some() {
            notification.action("default", "Open conversation");
        }
        if toast.reply.is_some() {
            notification.action(REPLY_ACTION, "Reply");
        }
        match notification.show() {
            Ok(handle) => {
                tracing::info!(id = handle.id(), summary = %toast.summary, "notification shown");
                if toast.open.is_some() || toast.reply.is_some() {
                    handle.wait_for_action(|action| match (action, &toast.open, &toast.reply) {
                        ("default", Some(key), _) => respond(Response::Open(key.clone())),
                        (REPLY_ACTION, _, Some(key)) => respond(Response::Reply(key.clone(), None)),
                        _ => {}
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "cannot show a notification (is a notification daemon running on the session bus?)"),
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a thread for a notification");
    }
}

/// The action that asks to reply (where there are no inline replies: it opens the quick chat).
pub const REPLY_ACTION: &str = "reply";
/// KDE's action key for a reply typed into the notification itself.
const INLINE_REPLY_ACTION: &str = "inline-reply";

/// Whether the notification server advertises `capability`.
fn server_has(capability: &str) -> bool {
    notify_rust::get_capabilities().is_ok_and(|caps| caps.iter().any(|c| c == capability))
}

/// Shows a notification whose "Reply" takes the answer in place (KDE Plasma's inline replies),
/// and waits for what the person does with it. The server sends `NotificationReplied` only to
/// the connection that showed the notification, so it is shown and followed on one connection of
/// our own (notify-rust reads only clicks and closes).
async fn show_with_inline_reply(toast: &Toast) -> Result<Option<Response>, ashpd::zbus::Error> {
    use ashpd::zbus;
    use ashpd::zvariant::Value;
    use futures_util::StreamExt;

    let Some(key) = toast.reply.clone() else {
        return Ok(None);
    };
    let connection = zbus::Connection::session().await?;
    let server = zbus::Proxy::new(
        &connection,
        "org.freedesktop.Notifications",
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
    )
    .await?;
    let mut replied = server.receive_signal("NotificationReplied").await?;
    let mut invoked = server.receive_signal("ActionInvoked").await?;
    let mut closed = server.receive_signal("NotificationClosed").await?;
    let mut actions = vec![INLINE_REPLY_ACTION, "Reply"];
    if toast.open.is_some() {
        actions.extend(["default", "Open conversation"]);
    }
    let mut hints: std::collections::HashMap<&str, Value<'_>> = std::collections::HashMap::new();
    hints.insert(
        "x-kde-reply-placeholder-text",
        Value::from("Answer the agent…"),
    );
    let summary = plain_summary(&toast.summary);
    let body = body_for_server(&toast.body);
    let id: u32 = server
        .call(
            "Notify",
            &(
                "Switchboard",
                0u32,
                "switchboard",
                summary.as_str(),
                body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        )
        .await?;
    tracing::info!(id, summary = %toast.summary, "notification shown (inline reply)");
    loop {
        tokio::select! {
            Some(message) = replied.next() => {
                let (which, text): (u32, String) = message.body().deserialize()?;
                if which == id {
                    return Ok(Some(Response::Reply(key, Some(text))));
                }
            }
            Some(message) = invoked.next() => {
                let (which, action): (u32, String) = message.body().deserialize()?;
                if which != id {
                    continue;
                }
                return Ok(match (action.as_str(), &toast.open) {
                    ("default", Some(open)) => Some(Response::Open(open.clone())),
                    // A server that showed the reply as a plain button.
                    (INLINE_REPLY_ACTION, _) => Some(Response::Reply(key, None)),
                    _ => None,
                });
            }
            Some(message) = closed.next() => {
                let (which, _reason): (u32, u32) = message.body().deserialize()?;
                if which == id {
                    return Ok(None);
                }
            }
            else => return Ok(None),
        }
    }
}

/// Shows a notification that asks the toast's question, with [`Toast::answers`] as actions, on a
/// thread of its own. `on_answer` runs with the answer when one of them is invoked. A message on `withdraw` (or
/// its sender going away) closes the notification: the question was answered elsewhere or stopped
/// waiting. `on_done` runs when the notification is gone, whichever way.
pub fn show_question(
    toast: Toast,
    withdraw: tokio::sync::oneshot::Receiver<()>,
    on_answer: impl FnOnce(Answer) + Send + 'static,
    on_done: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("question-notification".into())
        .spawn(move || {
            let mut notification = notify_rust::Notification::new();
            notification
                .appname("Switchboard")
                .summary(&plain_summary(&toast.summary))
                .body(&body_for_server(&toast.body))
                .icon("switchboard")
                // It stays until answered, answered elsewhere or no longer waiting: then it is
                // withdrawn.
                .timeout(notify_rust::Timeout::Never);
            let answers = toast.answers();
            for answer in &answers {
                notification.action(answer.action(), answer.label());
            }
            match notification.show() {
                Ok(handle) => {
                    tracing::info!(id = handle.id(), summary = %toast.summary, "question notification shown");
                    let (withdrawn, chosen) = crate::rt::block_on(async {
                        let mut chosen: Option<String> = None;
                        let withdrawn = tokio::select! {
                            _ = handle.wait_for_action_async(|response| {
                                if let notify_rust::NotificationResponse::Action(action) = response {
                                    chosen = Some(action.clone());
                                }
                            }) => false,
                            _ = withdraw => true,
                        };
                        if withdrawn {
                            handle.close_async().await;
                        }
                        (withdrawn, chosen)
                    });
                    if withdrawn {
                        tracing::info!(id = handle.id(), "question notification withdrawn");
                    } else if let Some(action) = chosen {
                        // Only the question's own answers count (not the default action, a click
                        // on the body).
                        match Answer::from_action(&action).filter(|a| answers.contains(a)) {
                            Some(answer) => {
                                tracing::info!(id = handle.id(), %action, "question notification answered");
                                on_answer(answer);
                            }
                            None => tracing::debug!(id = handle.id(), %action, "a question notification's other action"),
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot show a notification (is a notification daemon running on the session bus?)"),
            }
            on_done();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a thread for a notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_engine::model::{ChannelStatus, DeliveryTarget};

    fn settings() -> NotificationsConfig {
        NotificationsConfig::default()
    }

    fn channel(state: ChannelState, error: Option<&str>) -> EngineEvent {
        EngineEvent::ChannelState {
            status: ChannelStatus {
                name: "telegram".into(),
                enabled: state != ChannelState::Disabled,
                state,
                identity: None,
                last_error: error.map(str::to_owned),
                last_activity_ms: None,
                received: 0,
                sent: 0,
            },
        }
    }

    fn watch(text: &str) -> EngineEvent {
        EngineEvent::WatchNotificationDelivered {
            channel: "telegram".into(),
            target: DeliveryTarget::chat("123"),
            text: text.into(),
            context: None,
            routing_key: Some("telegram:dm:123".into()),
        }
    }

    fn reply() -> EngineEvent {
        EngineEvent::WatchReplyDelivered {
            channel: "telegram".into(),
            routing_key: "telegram:dm:123".into(),
            target: DeliveryTarget::chat("123"),
            text: "The disk is full because of /var/log.".into(),
        }
    }

    #[test]
    fn watch_notifications_and_replies_are_shown() {
        let mut alerts = Alerts::default();
        let toast = alerts
            .decide(&watch("Disk check failed on web-1"), &settings(), 0, 600)
            .expect("a toast");
        assert_eq!(
            toast,
            Toast {
                summary: "telegram/123".into(),
                body: "Disk check failed on web-1".into(),
                open: Some("telegram:dm:123".into()),
                question: None,
                partial: false,
                reply: Some("telegram:dm:123".into()),
                unless_focused: false,
            }
        );
        let toast = alerts
            .decide(&reply(), &settings(), 1, 600)
            .expect("a toast");
        assert_eq!(toast.summary, "Reply in telegram/123");
        assert_eq!(
            toast.open.as_deref(),
            Some("telegram:dm:123"),
            "a click opens the conversation"
        );
    }

    #[test]
    fn the_same_event_is_not_raised_twice() {
        let mut alerts = Alerts::default();
        assert!(alerts.decide(&watch("same"), &settings(), 0, 600).is_some());
        assert!(
            alerts
                .decide(&watch("same"), &settings(), 10_000, 600)
                .is_none(),
            "seen again within a minute"
        );
        assert!(alerts
            .decide(&watch("other"), &settings(), 10_000, 600)
            .is_some());
        assert!(
            alerts
                .decide(&watch("same"), &settings(), 10_000 + REPEAT_WINDOW_MS, 600)
                .is_some(),
            "a later one is new"
        );
    }

    #[test]
    fn a_failing_channel_is_announced_once_per_failure() {
        let mut alerts = Alerts::default();
        let s = settings();
        assert!(alerts
            .decide(&channel(ChannelState::Connecting, None), &s, 0, 600)
            .is_none());
        let first = alerts.decide(
            &channel(ChannelState::Reconnecting, Some("connection reset")),
            &s,
            1,
            600,
        );
        assert_eq!(first.map(|t| t.body), Some("connection reset".to_owned()));
        assert!(
            alerts
                .decide(
                    &channel(ChannelState::Reconnecting, Some("timed out")),
                    &s,
                    2,
                    600
                )
                .is_none(),
            "still the same failure"
        );
        assert!(
            alerts
                .decide(&channel(ChannelState::AuthFailed, Some("401")), &s, 3, 600)
                .is_none(),
            "still failing"
        );
        assert!(alerts
            .decide(&channel(ChannelState::Connected, None), &s, 4, 600)
            .is_none());
        let again = alerts.decide(
            &channel(ChannelState::AuthFailed, Some("401 Unauthorized")),
            &s,
            5,
            600,
        );
        assert_eq!(
            again.map(|t| t.summary),
            Some("The telegram channel refuses the credentials".to_owned())
        );
        assert!(
            alerts
                .decide(&channel(ChannelState::Reconnecting, None), &s, 6, 600)
                .is_none(),
            "no error, no news"
        );
    }

    #[test]
    fn nothing_is_shown_under_do_not_disturb_quiet_hours_or_when_off() {
        let mut alerts = Alerts::default();
        let dnd = NotificationsConfig {
            do_not_disturb: true,
            ..settings()
        };
        assert!(alerts.decide(&watch("a"), &dnd, 0, 600).is_none());
        let off = NotificationsConfig {
            enabled: false,
            ..settings()
        };
        assert!(alerts.decide(&watch("b"), &off, 0, 600).is_none());
        let quiet = NotificationsConfig {
            quiet_hours_start: "22:00".into(),
            quiet_hours_end: "07:00".into(),
            ..settings()
        };
        assert!(
            alerts.decide(&watch("c"), &quiet, 0, 23 * 60).is_none(),
            "23:00 is quiet"
        );
        assert!(
            alerts.decide(&watch("c"), &quiet, 0, 6 * 60 + 59).is_none(),
            "06:59 is quiet"
        );
        assert!(
            alerts.decide(&watch("c"), &quiet, 0, 7 * 60).is_some(),
            "07:00 is not"
        );
    }

    #[test]
    fn a_failure_seen_while_muted_is_not_announced_later() {
        let mut alerts = Alerts::default();
        let dnd = NotificationsConfig {
            do_not_disturb: true,
            ..settings()
        };
        assert!(alerts
            .decide(
                &channel(ChannelState::AuthFailed, Some("401")),
                &dnd,
                0,
                600
            )
            .is_none());
        assert!(alerts
            .decide(
                &channel(ChannelState::AuthFailed, Some("401")),
                &settings(),
                1,
                600
            )
            .is_none());
    }

    fn approval(id: &str, command: &str) -> EngineEvent {
        approval_with(id, serde_json::json!({"command": command}))
    }

    fn approval_with(id: &str, arguments: serde_json::Value) -> EngineEvent {
        let tool = "stakpak__run_command";
        let preview = switchboard_engine::approvals::Preview::of(tool, &arguments);
        EngineEvent::ApprovalRequested {
            approval_id: id.into(),
            routing_key: "chat:dm:42".into(),
            tool: tool.into(),
            arguments,
            summary: preview.summary,
            detail: preview.detail,
            complete: preview.complete,
            requester: "ann".into(),
            deadline_ms: 60_000,
        }
    }

    #[test]
    fn each_approval_is_raised_once_with_masked_arguments() {
        let mut alerts = Alerts::default();
        let s = settings();
        let toast = alerts
            .decide(&approval("a1", "ls"), &s, 0, 600)
            .expect("a toast");
        assert_eq!(toast.summary, "ann asks to run `ls`");
        assert_eq!(toast.body, "$ ls", "the command, whole");
        assert_eq!(toast.question, Some(Question::Approval("a1".into())));
        assert_eq!(toast.answers(), [Answer::Approve, Answer::Reject]);
        let masked = alerts
            .decide(
                &approval_with(
                    "m1",
                    serde_json::json!({"command": "ls", "api_token": "abc123"}),
                ),
                &s,
                0,
                600,
            )
            .expect("a toast");
        assert!(!masked.body.contains("abc123"), "{}", masked.body);
        assert_eq!(
            masked.answers(),
            [Answer::Open, Answer::Reject],
            "what is not shown whole is not approved from here"
        );
        assert!(masked.body.contains("open Switchboard"), "{}", masked.body);
        assert!(
            alerts.decide(&approval("a1", "ls"), &s, 1, 600).is_none(),
            "never twice for one approval"
        );
        assert!(
            alerts.decide(&approval("a2", "ls"), &s, 2, 600).is_some(),
            "another approval asking the same is raised"
        );
        let long = alerts
            .decide(&approval("a3", &"x".repeat(2000)), &s, 3, 600)
            .expect("a toast");
        assert!(
            long.body.chars().count() <= APPROVAL_BODY_CHARS + 100,
            "{}",
            long.body
        );
        assert_eq!(
            long.answers(),
            [Answer::Open, Answer::Reject],
            "cut: no Approve"
        );
    }

    #[test]
    fn approvals_are_silent_under_do_not_disturb_and_not_raised_later() {
        let mut alerts = Alerts::default();
        let dnd = NotificationsConfig {
            do_not_disturb: true,
            ..settings()
        };
        assert!(alerts.decide(&approval("a1", "ls"), &dnd, 0, 600).is_none());
        assert!(
            alerts
                .decide(&approval("a1", "ls"), &settings(), 1, 600)
                .is_none(),
            "held, not postponed"
        );
        let quiet = NotificationsConfig {
            quiet_hours_start: "22:00".into(),
            quiet_hours_end: "07:00".into(),
            ..settings()
        };
        assert!(alerts
            .decide(&approval("a2", "ls"), &quiet, 2, 23 * 60)
            .is_none());
    }

    fn pairing(peer_name: &str, code: &str, first_message: &str) -> EngineEvent {
        EngineEvent::PairingRequested {
            request: PairingRequest {
                channel: "telegram".into(),
                peer_id: "1111".into(),
                peer_name: peer_name.into(),
                code: code.into(),
                first_message: first_message.into(),
                created_ms: 0,
                expires_ms: 3_600_000,
                state: switchboard_engine::access::PairingState::Pending,
            },
        }
    }

    #[test]
    fn a_pairing_request_asks_to_admit_or_refuse_once() {
        let mut alerts = Alerts::default();
        let s = settings();
        let toast = alerts
            .decide(
                &pairing("Ann", "ABCD2345", "hello,\n\nrun ls for me"),
                &s,
                0,
                600,
            )
            .expect("a toast");
        assert_eq!(toast.summary, "Ann asks to talk to the agent");
        assert_eq!(
            toast.body,
            "On Telegram, as 1111: \u{201c}hello, run ls for me\u{201d}\nCode ABCD2345. Admit lets their messages reach the agent; Refuse ignores them from now on."
        );
        assert!(
            !toast.body.contains("from a chat"),
            "the window and the notification admit too"
        );
        let question = Question::Pairing {
            channel: "telegram".into(),
            code: "ABCD2345".into(),
        };
        assert_eq!(toast.question.as_ref(), Some(&question));
        assert_eq!(question.answers(), [Answer::Admit, Answer::Refuse]);
        assert!(
            alerts
                .decide(&pairing("Ann", "ABCD2345", "hello"), &s, 1, 600)
                .is_none(),
            "never twice for one code"
        );
        let nameless = alerts
            .decide(
                &pairing("1111", "WXYZ6789", &"long ".repeat(100)),
                &s,
                2,
                600,
            )
            .expect("a toast");
        assert!(
            nameless.body.starts_with("On Telegram: \u{201c}long long"),
            "{}",
            nameless.body
        );
        assert!(
            nameless.body.contains("…\u{201d}"),
            "a long first message is clipped: {}",
            nameless.body
        );
        let dnd = NotificationsConfig {
            do_not_disturb: true,
            ..settings()
        };
        assert!(alerts
            .decide(&pairing("Bo", "QRST2345", "hi"), &dnd, 3, 600)
            .is_none());
    }

    #[test]
    fn answers_round_trip_through_their_action_names() {
        for answer in Answer::ALL {
            assert_eq!(Answer::from_action(answer.action()), Some(answer));
        }
        assert_eq!(Answer::from_action("default"), None);
        assert_eq!(
            Question::Approval("a1".into()).answers(),
            [Answer::Approve, Answer::Reject]
        );
    }

    #[test]
    fn markup_in_a_body_reads_as_text() {
        assert_eq!(
            escape_markup("<a href=\"https://x\">click</a> & more"),
            "&lt;a href=\"https://x\"&gt;click&lt;/a&gt; &amp; more"
        );
        assert_eq!(escape_markup("plain"), "plain");
        assert_eq!(
            plain_summary("<a href=\"x\">Ann</a> & co\nasks"),
            "‹a href=\"x\"›Ann‹/a› ＆ co asks",
            "a stranger's name can neither link nor break the title"
        );
    }

    #[test]
    fn quiet_hours_table() {
        let cases = [
            (600, 540, 1020, true),   // 10:00 in 09:00–17:00
            (1020, 540, 1020, false), // the end is not quiet
            (539, 540, 1020, false),
            (1380, 1320, 420, true), // 23:00 in 22:00–07:00
            (60, 1320, 420, true),
            (420, 1320, 420, false),
            (720, 1320, 420, false),
            (600, 600, 600, false), // equal ends: none
        ];
        for (minute, start, end, quiet) in cases {
            assert_eq!(
                in_quiet_hours(minute, start, end),
                quiet,
                "{minute} in {start}..{end}"
            );
        }
    }
}
