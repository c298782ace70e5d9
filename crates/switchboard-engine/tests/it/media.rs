//! Photos, files and voice notes: stored with their message before the platform is told, fetched
//! after, and handed to the agent — images as images, other files saved where the agent can open
//! them and named in the message, voice notes transcribed — and every file that cannot be taken
//! told in the chat, the rest of the message going on. Per platform, against its fake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_engine::config::{Config, DmPolicy, TelegramConfig};
use switchboard_engine::model::AttachmentKind;
use switchboard_engine::{Engine, EngineHandle, EngineOptions};
use switchboard_testkit::discord::{DiscordFile, FakeDiscord, UserMessage};
use switchboard_testkit::slack::{FakeSlack, SlackFile};
use switchboard_testkit::stakpak::{FakeStakpak, PostedMessage};
use switchboard_testkit::telegram::{FakeTelegram, Media, Person};
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, runtime, WAIT};

/// A PNG: the signature and an empty IHDR, enough to be told from anything else.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n";

fn options() -> EngineOptions {
    EngineOptions {
        download_stall: Duration::from_millis(800),
        ..fast_options()
    }
}

/// A transcriber that "hears" a fixed sentence: a script that prints it, as whisper.cpp would.
fn transcriber(dir: &Path) -> String {
    let script = dir.join("transcribe.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n# Prints what the voice note says; the file is its last argument.\n[ -f \"$2\" ] || exit 3\necho 'restart the web server please'\n",
    )
    .expect("write the transcriber");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    format!("{} --file {{file}}", script.display())
}

/// The chat platform a test runs on, through its fake.
#[derive(Clone)]
enum Chat {
    Telegram(FakeTelegram),
    Slack(FakeSlack),
    Discord(FakeDiscord),
}

/// Who writes to the bot in these tests, on each platform.
const ANN: i64 = 1111;
const ANN_SLACK: &str = "U0ANN";
const ANN_DISCORD: &str = "3000000000000001";

/// A file a test sends.
#[derive(Clone)]
struct File {
    kind: AttachmentKind,
    name: &'static str,
    mime: &'static str,
    bytes: Vec<u8>,
}

fn png() -> File {
    File {
        kind: AttachmentKind::Image,
        name: "screenshot.png",
        mime: "image/png",
        bytes: PNG.to_vec(),
    }
}

fn pdf() -> File {
    File {
        kind: AttachmentKind::Document,
        name: "report.pdf",
        mime: "application/pdf",
        bytes: PDF.to_vec(),
    }
}

fn voice() -> File {
    File {
        kind: AttachmentKind::Voice,
        name: "voice-message.ogg",
        mime: "audio/ogg",
        bytes: b"OggS\0voice".to_vec(),
    }
}

fn document(name: &'static str, bytes: Vec<u8>) -> File {
    File {
        kind: AttachmentKind::Document,
        name,
        mime: "text/plain",
        bytes,
    }
}

impl Chat {
    async fn start(platform: &str) -> Chat {
        match platform {
            "telegram" => Chat::Telegram(FakeTelegram::start().await),
            "slack" => Chat::Slack(FakeSlack::start().await),
            "discord" => Chat::Discord(FakeDiscord::start().await),
            other => panic!("no platform {other}"),
        }
    }

    /// The configuration's table for this platform: anyone may write to the bot.
    fn configure(&self, config: &mut Config) {
        match self {
            Chat::Telegram(tg) => {
                config.channels.telegram = Some(TelegramConfig {
                    token: tg.token(),
                    api_base: tg.api_base(),
                    dm_policy: DmPolicy::Open,
                    ..TelegramConfig::default()
                })
            }
            Chat::Slack(slack) => config.channels.slack = Some(crate::harness::open_slack(slack)),
            Chat::Discord(dc) => config.channels.discord = Some(crate::harness::open_discord(dc)),
        }
    }

    async fn ready(&self) {
        match self {
            Chat::Telegram(tg) => {
                tg.wait_for("the bot to poll", |tg| tg.active_polls() == 1)
                    .await
            }
            Chat::Slack(slack) => {
                slack
                    .wait_for("the bot to connect", |s| s.open_sockets() == 1)
                    .await
            }
            Chat::Discord(dc) => {
                dc.wait_for("the bot on the gateway", FakeDiscord::is_connected)
                    .await
            }
        }
    }

    /// The folder the person's files go in (their DM conversation's).
    fn folder(&self) -> String {
        match self {
            Chat::Telegram(_) => format!("telegram_dm_{ANN}"),
            Chat::Slack(_) => format!("slack_dm_{ANN_SLACK}"),
            Chat::Discord(_) => format!("discord_dm_{ANN_DISCORD}"),
        }
    }

    /// The person sends `file` with `caption`; `url` puts it at another address.
    fn send(&self, file: File, caption: Option<&str>, url: Option<&str>) {
        match self {
            Chat::Telegram(tg) => {
                let media = match file.kind {
                    AttachmentKind::Image => Media::Photo(file.bytes),
                    AttachmentKind::Voice => Media::Voice(file.bytes),
                    _ => Media::Document {
                        name: file.name.into(),
                        mime: file.mime.into(),
                        bytes: file.bytes,
                    },
                };
                tg.send_media_dm(&Person::new(ANN, "Ann"), media, caption);
            }
            Chat::Slack(slack) => {
                slack.send_file_dm(
                    ANN_SLACK,
                    caption.unwrap_or_default(),
                    SlackFile {
                        name: file.name.into(),
                        mimetype: file.mime.into(),
                        bytes: file.bytes,
                        voice: file.kind == AttachmentKind::Voice,
                        url: url.map(str::to_owned),
                    },
                );
            }
            Chat::Discord(dc) => {
                dc.send_message(UserMessage {
                    author: ANN_DISCORD.into(),
                    text: caption.unwrap_or_default().into(),
                    files: vec![DiscordFile {
                        filename: file.name.into(),
                        content_type: file.mime.into(),
                        bytes: file.bytes,
                        url: url.map(str::to_owned),
                    }],
                    voice: file.kind == AttachmentKind::Voice,
                    ..UserMessage::default()
                });
            }
        }
    }

    fn send_text(&self, text: &str) {
        match self {
            Chat::Telegram(tg) => {
                tg.send_dm(ANN, "Ann", text);
            }
            Chat::Slack(slack) => {
                slack.send_dm(ANN_SLACK, text);
            }
            Chat::Discord(dc) => {
                dc.send_dm(ANN_DISCORD, text);
            }
        }
    }

    fn stall(&self, on: bool) {
        match self {
            Chat::Telegram(tg) => tg.stall_files(on),
            Chat::Slack(slack) => slack.stall_files(on),
            Chat::Discord(dc) => dc.stall_files(on),
        }
    }

    fn downloads(&self) -> usize {
        match self {
            Chat::Telegram(tg) => tg.file_downloads(),
            Chat::Slack(slack) => slack.file_downloads(),
            Chat::Discord(dc) => dc.file_downloads(),
        }
    }

    /// What the bot said to the person.
    fn sent(&self) -> Vec<String> {
        match self {
            Chat::Telegram(tg) => tg.sent_to(ANN).into_iter().map(|s| s.text).collect(),
            Chat::Slack(slack) => slack
                .posted_in(&slack.dm_channel(ANN_SLACK))
                .into_iter()
                .map(|p| p.text)
                .collect(),
            Chat::Discord(dc) => dc.posted_to(&dc.dm_channel(ANN_DISCORD)),
        }
    }

    /// Waits until the bot said something containing `needle`, and returns it.
    async fn said(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.sent().into_iter().find(|t| t.contains(needle)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{needle:?} never reached the chat; it has {:?}",
                self.sent()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The engine, the chat and the agent of one test.
struct Bridge {
    engine: EngineHandle,
    shutdown: CancellationToken,
    chat: Chat,
    agent: FakeStakpak,
    data: PathBuf,
}

impl Bridge {
    async fn start(platform: &str, dir: &Path, change: impl FnOnce(&mut Config)) -> Bridge {
        let agent = FakeStakpak::start().await;
        let chat = Chat::start(platform).await;
        let mut config = config_for(&agent);
        chat.configure(&mut config);
        change(&mut config);
        let data = dir.join("data");
        let (engine, shutdown) = start(config, &data).await;
        chat.ready().await;
        Bridge {
            engine,
            shutdown,
            chat,
            agent,
            data,
        }
    }

    /// Waits for the `n`th message posted to the agent and returns it.
    async fn posted(&self, n: usize) -> PostedMessage {
        self.agent
            .wait_for(&format!("{n} messages posted to the agent"), |a| {
                a.posted_messages().len() >= n
            })
            .await;
        self.agent.posted_messages()[n - 1].clone()
    }

    fn folder(&self) -> PathBuf {
        self.data.join("files").join(self.chat.folder())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

async fn start(config: Config, data: &Path) -> (EngineHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, data)
        .options(options())
        .start(shutdown.clone())
        .await
        .expect("the engine starts");
    (engine, shutdown)
}

/// The saved path the agent's text names for `name` (`[Attached …: PATH (type, size)]`).
fn saved_path(text: &str, name: &str) -> PathBuf {
    let needle = format!("/{name} (");
    let line = text
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("{name} is not named in {text:?}"));
    let end = line.find(&needle).map_or(0, |at| at + 1 + name.len());
    let start = line[..end].find(" /").map_or(0, |at| at + 1);
    PathBuf::from(&line[start..end])
}

const PLATFORMS: [&str; 3] = ["telegram", "slack", "discord"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_with_a_caption_reaches_the_agent_as_an_image_with_the_text() {
    use base64::Engine as _;
    let expected = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    );
    for platform in PLATFORMS {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Bridge::start(platform, dir.path(), |_| {}).await;
        b.chat.send(png(), Some("what does this error mean?"), None);
        let posted = b.posted(1).await;
        assert!(
            posted.text.starts_with("what does this error mean?"),
            "{platform}: the caption is the text: {}",
            posted.text
        );
        assert_eq!(
            posted.images,
            std::slice::from_ref(&expected),
            "{platform}: the photo is an image part"
        );
        b.chat.said("echo: what does this error mean?").await;
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_is_saved_where_the_agent_can_open_it_and_named_in_the_message() {
    for platform in PLATFORMS {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Bridge::start(platform, dir.path(), |_| {}).await;
        b.chat.send(pdf(), Some("summarise this"), None);
        let first = b.posted(1).await;
        let path = saved_path(&first.text, "report.pdf");
        assert_eq!(
            path,
            b.folder().join("report.pdf"),
            "{platform}: the conversation's folder"
        );
        assert_eq!(std::fs::read(&path).expect("the saved file"), PDF);
        assert!(
            first.text.contains("(application/pdf, ") && first.images.is_empty(),
            "{platform}: its type and size, and no image: {}",
            first.text
        );
        // The same name again is kept beside the first, not over it.
        b.chat.send(pdf(), None, None);
        let second = b.posted(2).await;
        let again = saved_path(&second.text, "report (2).pdf");
        assert_eq!(std::fs::read(&again).expect("the second file"), PDF);
        assert_eq!(std::fs::read(&path).expect("the first file"), PDF);
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_is_transcribed_echoed_and_sent_as_its_words() {
    for platform in PLATFORMS {
        let dir = tempfile::tempdir().expect("tempdir");
        let command = transcriber(dir.path());
        let b = Bridge::start(platform, dir.path(), |c| {
            c.media.transcribe_command = command
        })
        .await;
        b.chat.send(voice(), None, None);
        let heard = b.chat.said("Heard:").await;
        assert_eq!(
            heard, "🎙 Heard: restart the web server please",
            "{platform}"
        );
        let posted = b.posted(1).await;
        assert!(
            posted.text.starts_with("restart the web server please")
                && posted.text.contains(&b.folder().display().to_string()),
            "{platform}: the words are the message, the audio is named: {}",
            posted.text
        );
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_file_a_stalled_download_a_hostile_name_and_a_foreign_address_each_get_a_note_and_harm_nothing(
) {
    for platform in PLATFORMS {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Bridge::start(platform, dir.path(), |c| c.media.max_mb = 1).await;
        let mut n = 0;

        // Too big: told, not downloaded, and the text goes on.
        b.chat.send(
            document("dump.bin", vec![0u8; 2 * 1024 * 1024]),
            Some("look at the dump"),
            None,
        );
        let note = b.chat.said("dump.bin").await;
        assert!(
            note.contains("larger than the 1 MB limit"),
            "{platform}: {note}"
        );
        n += 1;
        let posted = b.posted(n).await;
        assert!(
            posted.text.starts_with("look at the dump")
                && posted.text.contains("could not be fetched"),
            "{platform}: the agent gets the text and is told: {}",
            posted.text
        );
        assert_eq!(b.chat.downloads(), 0, "{platform}: nothing was downloaded");

        // A hostile name is saved inside the conversation's folder under a plain name.
        b.chat.send(
            document("../../.bashrc", b"rm -rf ~\n".to_vec()),
            None,
            None,
        );
        n += 1;
        let posted = b.posted(n).await;
        assert_eq!(
            saved_path(&posted.text, "bashrc"),
            b.folder().join("bashrc"),
            "{platform}"
        );
        assert!(!dir.path().join(".bashrc").exists() && !b.data.join(".bashrc").exists());

        // A download that stalls is given up, said, and the conversation goes on.
        b.chat.stall(true);
        b.chat.send(png(), Some("and this one"), None);
        b.chat.said("stalled").await;
        n += 1;
        let posted = b.posted(n).await;
        assert!(
            posted.text.starts_with("and this one") && posted.images.is_empty(),
            "{platform}"
        );
        b.chat.stall(false);

        // A file at an address off the platform's own file host is not fetched.
        if platform != "telegram" {
            let downloads = b.chat.downloads();
            b.chat.send(
                png(),
                Some("from elsewhere"),
                Some("https://evil.example/steal.png"),
            );
            let note = b.chat.said("own file host").await;
            assert!(note.contains("evil.example"), "{platform}: {note}");
            n += 1;
            b.posted(n).await;
            assert_eq!(b.chat.downloads(), downloads, "{platform}: nothing fetched");
        }
        b.chat.send_text("still there?");
        b.chat.said("echo: still there?").await;
        b.stop().await;
    }
}

/// The engine is killed after the platform was told the message is taken but before its file
/// was fetched; after the restart the file is fetched and the agent gets it, once.
#[test]
fn a_kill_between_the_acknowledgement_and_the_download_still_delivers_the_file() {
    for platform in PLATFORMS {
        let fakes = runtime();
        let (agent, chat) =
            fakes.block_on(async { (FakeStakpak::start().await, Chat::start(platform).await) });
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut config = config_for(&agent);
        chat.configure(&mut config);
        chat.stall(true);

        let crashed = runtime();
        crashed.block_on(async {
            let (_engine, _shutdown) = start(config.clone(), &data).await;
            chat.ready().await;
            chat.send(
                document("notes.txt", b"the notes".to_vec()),
                Some("read my notes"),
                None,
            );
            // The download began: the message was stored and confirmed to the platform before.
            let deadline = tokio::time::Instant::now() + WAIT;
            while chat.downloads() == 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{platform}: no download"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        crashed.shutdown_background();
        chat.stall(false);

        let restarted = runtime();
        restarted.block_on(async {
            let (engine, shutdown) = start(config, &data).await;
            agent
                .wait_for("the message posted after the restart", |a| {
                    !a.posted_messages().is_empty()
                })
                .await;
            chat.said("echo: read my notes").await;
            let posted = agent.posted_messages();
            assert_eq!(posted.len(), 1, "{platform}: posted once: {posted:?}");
            let path = saved_path(&posted[0].text, "notes.txt");
            assert_eq!(
                std::fs::read(path).expect("saved"),
                b"the notes",
                "{platform}"
            );
            shutdown.cancel();
            engine.stopped().await;
        });
        drop(fakes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_files_than_allowed_and_a_file_of_no_known_type_are_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Bridge::start("discord", dir.path(), |c| c.media.max_files = 2).await;
    let Chat::Discord(dc) = &b.chat else {
        panic!("a Discord chat")
    };
    let file = |name: &str, content_type: &str| DiscordFile {
        filename: name.into(),
        content_type: content_type.into(),
        bytes: b"\x00\x01\x02".to_vec(),
        url: None,
    };
    dc.send_message(UserMessage {
        author: ANN_DISCORD.into(),
        text: "three files".into(),
        files: vec![
            file("blob", "application/octet-stream"),
            file("notes.txt", "text/plain"),
            file("third.txt", "text/plain"),
        ],
        ..UserMessage::default()
    });
    let note = b.chat.said("third.txt").await;
    assert!(
        note.contains("only the first 2 attachments"),
        "the third is not taken, and said: {note}"
    );
    assert!(
        note.contains("could not tell what kind of file") && note.contains("blob"),
        "a file of no known type is taken, and said: {note}"
    );
    let posted = b.posted(1).await;
    assert_eq!(
        std::fs::read(saved_path(&posted.text, "blob")).expect("saved"),
        b"\x00\x01\x02"
    );
    assert!(
        posted.text.contains("notes.txt") && posted.text.contains("third.txt"),
        "{}",
        posted.text
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stopped_while_its_file_downloads_never_reaches_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Bridge::start("telegram", dir.path(), |_| {}).await;
    let Chat::Telegram(tg) = b.chat.clone() else {
        unreachable!()
    };
    tg.stall_files(true);
    b.chat.send(png(), Some("delete the old releases"), None);
    tg.wait_for("the download under way", |tg| tg.file_downloads() >= 1)
        .await;
    b.chat.send_text("/stop");
    // The message being prepared is the task stopped, not a queued one.
    let stopped = b.chat.said("Stopping").await;
    assert!(
        stopped.starts_with("⏹ Stopping the current task") && !stopped.contains("dropped"),
        "{stopped}"
    );
    // The download gives up; the message it belonged to stays dropped.
    b.chat.said("stalled").await;
    tg.stall_files(false);
    b.chat.send_text("hello");
    let first = b.posted(1).await;
    assert_eq!(first.text, "hello", "the stopped message was never posted");
    assert_eq!(b.agent.posted_messages().len(), 1);
    b.stop().await;
}
