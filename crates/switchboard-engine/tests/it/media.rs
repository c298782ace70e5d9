//! Photos, files and voice notes: stored with their message before the platform is told, fetched
//! after, and handed to the agent — images as images, other files saved where the agent can open
//! them and named in the message, voice notes transcribed — and every file that cannot be taken
//! told in the chat, the rest of the message going on. Per platform, against its fake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_engine::config::{Config, DmPolicy, TelegramConfig};
use switchboard_engine::{Engine, EngineHandle, EngineOptions};
use switchboard_testkit::stakpak::{FakeStakpak, PostedMessage};
use switchboard_testkit::telegram::{FakeTelegram, Media, Person};
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options};

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

struct Telegram {
    engine: EngineHandle,
    shutdown: CancellationToken,
    tg: FakeTelegram,
    agent: FakeStakpak,
    data: PathBuf,
}

const ANN: i64 = 1111;

fn ann() -> Person {
    Person::new(ANN, "Ann")
}

fn telegram_config(agent: &FakeStakpak, tg: &FakeTelegram) -> Config {
    let mut config = config_for(agent);
    config.channels.telegram = Some(TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        dm_policy: DmPolicy::Open,
        ..TelegramConfig::default()
    });
    config
}

impl Telegram {
    async fn start(dir: &Path, change: impl FnOnce(&mut Config)) -> Telegram {
        let agent = FakeStakpak::start().await;
        let tg = FakeTelegram::start().await;
        let mut config = telegram_config(&agent, &tg);
        change(&mut config);
        let data = dir.join("data");
        let (engine, shutdown) = start(config, &data).await;
        tg.wait_for("the bot to poll", |tg| tg.active_polls() == 1)
            .await;
        Telegram {
            engine,
            shutdown,
            tg,
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

    /// Waits until Ann's chat has a message containing `needle`.
    async fn said(&self, needle: &str) -> String {
        let needle = needle.to_owned();
        self.tg
            .wait_for(&format!("{needle:?} in the chat"), |tg| {
                tg.sent_to(ANN).iter().any(|s| s.text.contains(&needle))
            })
            .await;
        self.tg
            .sent_to(ANN)
            .into_iter()
            .find(|s| s.text.contains(&needle))
            .map(|s| s.text)
            .unwrap_or_default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_a_photo_with_a_caption_reaches_the_agent_as_an_image_with_the_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Telegram::start(dir.path(), |_| {}).await;
    t.tg.send_media_dm(
        &ann(),
        Media::Photo(PNG.to_vec()),
        Some("what does this error mean?"),
    );
    let posted = t.posted(1).await;
    assert!(
        posted.text.starts_with("what does this error mean?"),
        "the caption is the text: {}",
        posted.text
    );
    use base64::Engine as _;
    let expected = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    );
    assert_eq!(posted.images, [expected], "the photo is an image part");
    t.said("echo: what does this error mean?").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_a_pdf_is_saved_where_the_agent_can_open_it_and_named_in_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Telegram::start(dir.path(), |_| {}).await;
    let pdf = || Media::Document {
        name: "report.pdf".into(),
        mime: "application/pdf".into(),
        bytes: PDF.to_vec(),
    };
    t.tg.send_media_dm(&ann(), pdf(), Some("summarise this"));
    let first = t.posted(1).await;
    let path = saved_path(&first.text, "report.pdf");
    assert!(
        path.starts_with(t.data.join("files").join("telegram_dm_1111")),
        "saved in the conversation's folder: {}",
        path.display()
    );
    assert_eq!(std::fs::read(&path).expect("the saved file"), PDF);
    assert!(
        first.text.contains("(application/pdf, "),
        "its type and size: {}",
        first.text
    );
    assert!(first.images.is_empty(), "a PDF is no image");
    // The same name again is kept beside the first, not over it.
    t.tg.send_media_dm(&ann(), pdf(), None);
    let second = t.posted(2).await;
    let again = saved_path(&second.text, "report (2).pdf");
    assert_eq!(std::fs::read(&again).expect("the second file"), PDF);
    assert_eq!(std::fs::read(&path).expect("the first file"), PDF);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_a_voice_note_is_transcribed_echoed_and_sent_as_its_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let command = transcriber(dir.path());
    let t = Telegram::start(dir.path(), |c| c.media.transcribe_command = command).await;
    t.tg.send_media_dm(&ann(), Media::Voice(b"OggS\0voice".to_vec()), None);
    let heard = t.said("Heard:").await;
    assert_eq!(heard, "🎙 Heard: restart the web server please");
    let posted = t.posted(1).await;
    assert!(
        posted.text.starts_with("restart the web server please"),
        "the words are the message: {}",
        posted.text
    );
    assert!(
        posted.text.contains("voice.ogg"),
        "the audio is named too: {}",
        posted.text
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_an_oversize_file_a_stalled_download_and_a_hostile_name_each_get_a_note_and_harm_nothing(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Telegram::start(dir.path(), |c| c.media.max_mb = 1).await;

    // Too big: told, not downloaded, and the text goes on.
    t.tg.send_media_dm(
        &ann(),
        Media::Document {
            name: "dump.bin".into(),
            mime: "application/octet-stream".into(),
            bytes: vec![0u8; 2 * 1024 * 1024],
        },
        Some("look at the dump"),
    );
    let note = t.said("dump.bin").await;
    assert!(note.contains("larger than the 1 MB limit"), "{note}");
    let posted = t.posted(1).await;
    assert!(
        posted.text.starts_with("look at the dump") && posted.text.contains("could not be fetched"),
        "the agent gets the text and is told: {}",
        posted.text
    );
    assert_eq!(t.tg.file_downloads(), 0, "nothing was downloaded");

    // A hostile name is saved inside the conversation's folder under a plain name.
    t.tg.send_media_dm(
        &ann(),
        Media::Document {
            name: "../../.bashrc".into(),
            mime: "text/plain".into(),
            bytes: b"rm -rf ~\n".to_vec(),
        },
        None,
    );
    let posted = t.posted(2).await;
    let path = saved_path(&posted.text, "bashrc");
    assert!(
        path.starts_with(t.data.join("files").join("telegram_dm_1111")),
        "{}",
        path.display()
    );
    assert!(!dir.path().join(".bashrc").exists() && !t.data.join(".bashrc").exists());

    // A download that stalls is given up, said, and the conversation goes on.
    t.tg.stall_files(true);
    t.tg.send_media_dm(&ann(), Media::Photo(PNG.to_vec()), Some("and this one"));
    let note = t.said("stalled").await;
    assert!(
        note.contains("the photo") || note.contains("image"),
        "{note}"
    );
    let posted = t.posted(3).await;
    assert!(posted.text.starts_with("and this one") && posted.images.is_empty());
    t.tg.stall_files(false);
    t.tg.send_dm(ANN, "Ann", "still there?");
    t.said("echo: still there?").await;
    t.stop().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The engine is killed after Telegram was told the message is taken but before its file was
/// fetched; after the restart the file is fetched and the agent gets it, once.
#[test]
fn telegram_a_kill_between_the_acknowledgement_and_the_download_still_delivers_the_file() {
    let fakes_rt = runtime();
    let (agent, tg) =
        fakes_rt.block_on(async { (FakeStakpak::start().await, FakeTelegram::start().await) });
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = telegram_config(&agent, &tg);
    tg.stall_files(true);

    let crashed = runtime();
    crashed.block_on(async {
        let (_engine, _shutdown) = start(config.clone(), &data).await;
        tg.send_media_dm(
            &ann(),
            Media::Document {
                name: "notes.txt".into(),
                mime: "text/plain".into(),
                bytes: b"the notes".to_vec(),
            },
            Some("read my notes"),
        );
        // Acknowledged: the bot polled past the update.
        tg.wait_for("the update confirmed", |tg| {
            tg.pending_updates() == 0 && tg.file_downloads() > 0
        })
        .await;
    });
    crashed.shutdown_background();
    tg.stall_files(false);

    let restarted = runtime();
    restarted.block_on(async {
        let (engine, shutdown) = start(config, &data).await;
        agent
            .wait_for("the message posted after the restart", |a| {
                !a.posted_messages().is_empty()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let posted = agent.posted_messages();
        assert_eq!(posted.len(), 1, "posted once: {posted:?}");
        let path = saved_path(&posted[0].text, "notes.txt");
        assert_eq!(std::fs::read(path).expect("saved"), b"the notes");
        tg.wait_for("the answer in the chat", |tg| {
            tg.sent_to(ANN)
                .iter()
                .any(|s| s.text.starts_with("echo: read my notes"))
        })
        .await;
        shutdown.cancel();
        engine.stopped().await;
    });
}
