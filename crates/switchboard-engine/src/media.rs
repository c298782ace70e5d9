//! Files people send: the pure rules (what a saved file is called and where it goes, which images
//! the agent reads as images, what the agent is told of each file) and the one download loop
//! every channel fetches through (a size cap, a stall timeout and an overall timeout).
//!
//! A message and its attachments' references are stored before the platform is acknowledged;
//! the files are fetched after, by the conversation's task, before the run that needs them
//! (`dispatch::media`), so a crash in between loses nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use crate::model::{Attachment, AttachmentKind, Fetched};

/// What a download may take: bytes, and time without a byte and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    /// How long it may go without receiving a byte before it is given up.
    pub stall: Duration,
    /// How long the whole of it may take.
    pub total: Duration,
}

impl Limits {
    /// The cap in whole megabytes, for what a person is told.
    pub fn max_mb(&self) -> u64 {
        self.max_bytes.div_ceil(1024 * 1024)
    }
}

/// Why an attachment could not be fetched, in words a chat can be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("it is larger than the {max_mb} MB limit")]
    TooLarge { max_mb: u64 },
    #[error("its address is not on the platform's own file host ({0})")]
    NotAllowed(String),
    #[error("the download stalled")]
    Stalled,
    #[error("this channel cannot fetch files")]
    Unsupported,
    #[error("{0}")]
    Failed(String),
}

/// Sends `request` (a file's GET, already checked and with whatever credential its host wants)
/// and reads the file within `limits`; `describe` words a failure to reach the host.
pub async fn fetch(
    request: reqwest::RequestBuilder,
    limits: &Limits,
    describe: impl FnOnce(reqwest::Error) -> String,
) -> Result<Vec<u8>, FetchError> {
    let response = request
        .timeout(limits.total)
        .send()
        .await
        .map_err(|e| FetchError::Failed(describe(e.without_url())))?;
    read_body(response, limits).await
}

/// Reads a response body into memory, refusing it as soon as it passes the byte limit (a
/// `Content-Length` above it is refused before anything is read), and giving up when no byte
/// comes for the stall time or the whole takes longer than the total.
pub async fn read_body(
    response: reqwest::Response,
    limits: &Limits,
) -> Result<Vec<u8>, FetchError> {
    let Limits {
        max_bytes,
        stall,
        total,
    } = *limits;
    let max_mb = limits.max_mb();
    if !response.status().is_success() {
        return Err(FetchError::Failed(format!(
            "the file host answered {}",
            response.status()
        )));
    }
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(FetchError::TooLarge { max_mb });
    }
    let deadline = tokio::time::Instant::now() + total;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    loop {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + stall),
            stream.next(),
        );
        match next.await {
            Err(_) => return Err(FetchError::Stalled),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => {
                return Err(FetchError::Failed(format!(
                    "the download broke off: {}",
                    e.without_url()
                )))
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() as u64 + chunk.len() as u64 > max_bytes {
                    return Err(FetchError::TooLarge { max_mb });
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// Checks that `url` is https (or plain http to loopback, for a local server or a test) on one
/// of `hosts`, before any token goes with a request to it.
pub fn check_file_url(url: &str, hosts: &[String]) -> Result<url::Url, FetchError> {
    let parsed =
        url::Url::parse(url).map_err(|_| FetchError::NotAllowed("not an address".into()))?;
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let scheme_ok = parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback);
    if !scheme_ok
        || !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))
        || !parsed.username().is_empty()
    {
        return Err(FetchError::NotAllowed(if host.is_empty() {
            parsed.scheme().to_owned()
        } else {
            host
        }));
    }
    Ok(parsed)
}

/// The host of a configured API base, so a self-hosted or test server's own files are allowed.
pub fn host_of(base: &str) -> Option<String> {
    url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}

/// The image formats the agent reads as images: the MIME type to send them with (the type is
/// the one the file's bytes showed, see [`sniff_image`]).
pub fn agent_image_mime(mime: &str) -> Option<&'static str> {
    match mime.to_ascii_lowercase().as_str() {
        "image/png" => Some("image/png"),
        "image/jpeg" | "image/jpg" => Some("image/jpeg"),
        "image/webp" => Some("image/webp"),
        "image/gif" => Some("image/gif"),
        _ => None,
    }
}

/// The image format the bytes are, by their signature: what a picture really is, whatever the
/// platform or the file's name says.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The MIME type a file is given when the platform did not say: from its name, else unknown.
pub fn guess_mime(kind: AttachmentKind, name: &str) -> String {
    let by_ext = match extension(name).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("txt" | "log") => "text/plain",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("md") => "text/markdown",
        Some("zip") => "application/zip",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("mp3") => "audio/mpeg",
        Some("m4a") => "audio/mp4",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        _ => match kind {
            AttachmentKind::Voice => "audio/ogg",
            AttachmentKind::Image => "image/jpeg",
            _ => "application/octet-stream",
        },
    };
    by_ext.to_owned()
}

fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.len() <= 8).then(|| ext.to_ascii_lowercase())
}

/// The longest name a saved file gets (bytes; file systems allow 255).
const MAX_NAME: usize = 120;

/// A safe name for a saved file from what the person called it: only its last path component,
/// no leading dots (no hidden files, no `..`), no control or path characters, not empty, not too
/// long (the extension kept). Without a usable name, one from the kind and type.
pub fn safe_file_name(name: Option<&str>, kind: AttachmentKind, mime: Option<&str>) -> String {
    let base = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned
        .trim()
        .trim_start_matches(['.', '-', ' '])
        .trim_end_matches(['.', ' ']);
    let name = if cleaned.is_empty() {
        let ext = match mime.unwrap_or_default() {
            "image/png" => "png",
            "image/webp" => "webp",
            "image/gif" => "gif",
            "image/jpeg" => "jpg",
            "application/pdf" => "pdf",
            "audio/ogg" => "ogg",
            "audio/mpeg" => "mp3",
            "video/mp4" => "mp4",
            _ => match kind {
                AttachmentKind::Image => "jpg",
                AttachmentKind::Voice => "ogg",
                AttachmentKind::Video => "mp4",
                AttachmentKind::Audio => "mp3",
                AttachmentKind::Document => "bin",
            },
        };
        format!("{}.{ext}", kind.as_str())
    } else {
        cleaned.to_owned()
    };
    shorten(&name)
}

/// Cuts a name to [`MAX_NAME`] bytes on a character boundary, keeping its extension.
fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if ext.len() <= 8 && !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    let mut cut = MAX_NAME.saturating_sub(ext.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// The folder a conversation's files go in, from its routing key: letters, digits, `-` and `_`
/// only, so no key can point outside the files directory.
pub fn conversation_dir(routing_key: &str) -> String {
    let folder: String = routing_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if folder.trim_matches('_').is_empty() {
        "conversation".to_owned()
    } else {
        folder
    }
}

/// Writes `bytes` to a new file in `dir` named `name`, else `stem (2).ext`, `stem (3).ext`…,
/// whichever is free, and returns its path. Each name is created exclusively (never through
/// anything already there, a link included), the user's alone, so two downloads never share a
/// file and nothing planted in the folder redirects one.
pub fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    for n in 1..=10_000u32 {
        let path = match n {
            1 => dir.join(name),
            n => dir.join(format!("{stem} ({n}){ext}")),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(bytes)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{} has no free name left for {name}", dir.display()),
    ))
}

/// A size in words: `812 B`, `4.2 KB`, `1.3 MB`.
pub fn size_words(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// The largest picture sent to the agent as an image part: 5 MB once base64-encoded, the limit of
/// the strictest model providers; a larger one is saved and named by its path instead.
pub const MAX_IMAGE_PART: u64 = 3_750_000;
/// The most picture bytes one message sends as image parts.
pub const MAX_IMAGE_PARTS_TOTAL: u64 = 4 * MAX_IMAGE_PART;

/// An image the agent is sent as an image, by where it is saved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImagePart {
    pub path: String,
    pub mime: String,
}

/// What the agent is told of a message's attachments: the lines added to its text (each file's
/// path, type and size, so it can open them) and the images sent as images. A voice note with a
/// transcript is told by the transcript, which stands in for the text when there is none.
pub fn for_agent(text: &str, attachments: &[Attachment]) -> (String, Vec<ImagePart>) {
    let mut lines: Vec<String> = Vec::new();
    let mut images = Vec::new();
    let mut image_bytes = 0u64;
    let mut body = text.trim().to_owned();
    for attachment in attachments {
        let name = attachment
            .name
            .as_deref()
            .unwrap_or(attachment.kind.as_str());
        match &attachment.fetched {
            Fetched::Saved {
                path,
                bytes,
                mime,
                transcript,
            } => {
                let size = size_words(*bytes);
                match (attachment.kind, transcript, agent_image_mime(mime)) {
                    (AttachmentKind::Voice | AttachmentKind::Audio, Some(transcript), _) => {
                        let heard = transcript.trim();
                        if body.is_empty() {
                            body = heard.to_owned();
                            lines.push(format!("[The message above is a transcribed voice note; the audio is at {path} ({mime}, {size})]"));
                        } else {
                            lines.push(format!("[Voice note, transcribed: {heard}]\n[The audio is at {path} ({mime}, {size})]"));
                        }
                    }
                    (AttachmentKind::Image, _, Some(image))
                        if *bytes <= MAX_IMAGE_PART
                            && image_bytes + bytes <= MAX_IMAGE_PARTS_TOTAL =>
                    {
                        image_bytes += bytes;
                        lines.push(format!(
                            "[Attached image {path} ({image}, {size}), sent with this message]"
                        ));
                        images.push(ImagePart {
                            path: path.clone(),
                            mime: image.to_owned(),
                        });
                    }
                    (AttachmentKind::Image, _, Some(_)) => lines.push(format!(
                        "[Attached image: {path} ({mime}, {size}); too large to send as a picture, so it is only saved there]"
                    )),
                    _ => lines.push(format!(
                        "[Attached {}: {path} ({mime}, {size})]",
                        attachment.kind.as_str()
                    )),
                }
            }
            Fetched::Failed { reason } => lines.push(format!(
                "[An attachment, {name}, could not be fetched: {reason}]"
            )),
            Fetched::Pending => lines.push(format!("[An attachment, {name}, was not fetched]")),
        }
    }
    if !lines.is_empty() {
        if !body.is_empty() {
            body.push_str("\n\n");
        }
        body.push_str(&lines.join("\n"));
    }
    (body, images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe() {
        let table = [
            (Some("report.pdf"), "report.pdf"),
            (Some("../../.bashrc"), "bashrc"),
            (Some("..\\..\\win.ini"), "win.ini"),
            (Some("/etc/passwd"), "passwd"),
            (Some(".hidden"), "hidden"),
            (Some("a\u{0}b\nc.txt"), "a_b_c.txt"),
            (Some("   "), "document.bin"),
            (Some(".."), "document.bin"),
            (Some("what?<>|.log"), "what____.log"),
            (None, "document.bin"),
        ];
        for (name, want) in table {
            assert_eq!(
                safe_file_name(name, AttachmentKind::Document, None),
                want,
                "{name:?}"
            );
        }
        assert_eq!(
            safe_file_name(None, AttachmentKind::Image, Some("image/png")),
            "image.png"
        );
        assert_eq!(
            safe_file_name(None, AttachmentKind::Voice, None),
            "voice.ogg"
        );
        let long = format!("{}.pdf", "é".repeat(200));
        let short = safe_file_name(Some(&long), AttachmentKind::Document, None);
        assert!(
            short.len() <= MAX_NAME && short.ends_with(".pdf"),
            "{short}"
        );
    }

    #[test]
    fn conversation_folders_and_new_files() {
        assert_eq!(conversation_dir("telegram:dm:4242"), "telegram_dm_4242");
        assert_eq!(conversation_dir("../.."), "conversation");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(write_new(d, "a.pdf", b"1").expect("write"), d.join("a.pdf"));
        assert_eq!(
            write_new(d, "a.pdf", b"2").expect("write"),
            d.join("a (2).pdf")
        );
        assert_eq!(
            write_new(d, "a.pdf", b"3").expect("write"),
            d.join("a (3).pdf")
        );
        assert_eq!(
            std::fs::read(d.join("a.pdf")).expect("read"),
            b"1",
            "never overwritten"
        );
        assert_eq!(write_new(d, "noext", b"x").expect("write"), d.join("noext"));
        assert_eq!(
            write_new(d, "noext", b"y").expect("write"),
            d.join("noext (2)")
        );
        // A link planted where the file would go is not followed, dangling or not.
        #[cfg(unix)]
        {
            let target = d.join("elsewhere");
            std::os::unix::fs::symlink(&target, d.join("b.png")).expect("symlink");
            assert_eq!(
                write_new(d, "b.png", b"z").expect("write"),
                d.join("b (2).png")
            );
            assert!(!target.exists(), "the link was not written through");
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(d.join("b (2).png"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the file is the user's alone");
        }
    }

    #[test]
    fn only_the_platforms_own_hosts_are_fetched_from() {
        let hosts = vec!["files.slack.com".to_owned(), "127.0.0.1".to_owned()];
        assert!(check_file_url(
            "https://files.slack.com/files-pri/T-F/download/a.png",
            &hosts
        )
        .is_ok());
        assert!(check_file_url("http://127.0.0.1:9/files/a.png", &hosts).is_ok());
        for bad in [
            "https://evil.example/a.png",
            "http://files.slack.com/a.png",
            "https://files.slack.com.evil.example/a.png",
            "https://user@files.slack.com/a.png",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(
                matches!(check_file_url(bad, &hosts), Err(FetchError::NotAllowed(_))),
                "{bad} is refused"
            );
        }
    }

    #[test]
    fn images_formats_and_types() {
        assert_eq!(agent_image_mime("image/png"), Some("image/png"));
        assert_eq!(agent_image_mime("IMAGE/JPEG"), Some("image/jpeg"));
        assert_eq!(agent_image_mime("image/heic"), None);
        assert_eq!(
            guess_mime(AttachmentKind::Document, "r.pdf"),
            "application/pdf"
        );
        assert_eq!(guess_mime(AttachmentKind::Voice, "voice"), "audio/ogg");
        assert_eq!(
            guess_mime(AttachmentKind::Document, "blob"),
            "application/octet-stream"
        );
        assert_eq!(size_words(812), "812 B");
        assert_eq!(size_words(1536), "1.5 KB");
        assert_eq!(size_words(3 * 1024 * 1024), "3.0 MB");
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n\0\0"), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            sniff_image(b"<html>"),
            None,
            "a page called a picture is no picture"
        );
    }

    #[test]
    fn the_agent_is_told_where_each_file_is_and_gets_the_images() {
        let saved = |kind, path: &str, mime: &str, transcript: Option<&str>| Attachment {
            fetched: Fetched::Saved {
                path: path.into(),
                bytes: 2048,
                mime: mime.into(),
                transcript: transcript.map(Into::into),
            },
            ..Attachment::new(kind, "src")
        };
        let (text, images) = for_agent(
            "what is wrong here?",
            &[
                saved(AttachmentKind::Image, "/d/shot.png", "image/png", None),
                saved(AttachmentKind::Document, "/d/log.txt", "text/plain", None),
                Attachment {
                    name: Some("big.zip".into()),
                    fetched: Fetched::Failed {
                        reason: "it is larger than the 20 MB limit".into(),
                    },
                    ..Attachment::new(AttachmentKind::Document, "src")
                },
            ],
        );
        assert_eq!(
            text,
            "what is wrong here?\n\n[Attached image /d/shot.png (image/png, 2.0 KB), sent with this message]\n[Attached document: /d/log.txt (text/plain, 2.0 KB)]\n[An attachment, big.zip, could not be fetched: it is larger than the 20 MB limit]"
        );
        assert_eq!(
            images,
            [ImagePart {
                path: "/d/shot.png".into(),
                mime: "image/png".into()
            }]
        );
        let huge = Attachment {
            fetched: Fetched::Saved {
                path: "/d/huge.png".into(),
                bytes: MAX_IMAGE_PART + 1,
                mime: "image/png".into(),
                transcript: None,
            },
            ..Attachment::new(AttachmentKind::Image, "src")
        };
        let (text, images) = for_agent("look", &[huge]);
        assert!(images.is_empty(), "a picture too large is not sent as one");
        assert!(
            text.contains("[Attached image: /d/huge.png (image/png, 3.6 MB); too large"),
            "{text}"
        );
        let (text, images) = for_agent(
            "",
            &[saved(
                AttachmentKind::Voice,
                "/d/voice.ogg",
                "audio/ogg",
                Some(" restart the web server "),
            )],
        );
        assert!(images.is_empty());
        assert!(
            text.starts_with(
                "restart the web server\n\n[The message above is a transcribed voice note"
            ),
            "{text}"
        );
    }
}
