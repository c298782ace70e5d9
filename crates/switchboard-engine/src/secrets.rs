//! Where the tokens live: the OS keyring (the Secret Service on the session bus) when one is
//! available, otherwise `secrets.toml` beside the configuration file, readable only by the user.
//!
//! The configuration file keeps a reference in a token's place: `keyring:channels.telegram.token`
//! or `secrets-file:channels.telegram.token`. A token written into the file by hand is moved to
//! the keyring (or the fallback file) the next time Switchboard starts, and the reference put in
//! its place; a token in the fallback file moves to the keyring once one is available.
//!
//! Nothing here logs a token: messages name the setting, never the value.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secret_service::{EncryptionType, SecretService};

use crate::config::{self, Config, ConfigError};

/// The settings that hold tokens and live outside the configuration file. The gateway API's own
/// token stays in the file: local scripts read it from there.
pub const SECRET_SETTINGS: [&str; 5] = [
    "server.token",
    "channels.telegram.token",
    "channels.slack.bot_token",
    "channels.slack.app_token",
    "channels.discord.token",
];

/// The environment variable that turns the keyring off (`off`), for machines whose keyring
/// should not be used; the fallback file is used instead.
pub const KEYRING_ENV: &str = "SWITCHBOARD_KEYRING";

/// The name of the fallback file, beside the configuration file.
pub const FALLBACK_FILE: &str = "secrets.toml";

/// How long to wait for the Secret Service to answer before using the fallback file.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a token in the keyring is waited for when the keyring is not there yet.
const KEYRING_PATIENCE: Duration = Duration::from_secs(10);
/// How long to wait for the person to unlock a locked keyring.
const UNLOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one token is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vault {
    /// The Secret Service's default collection.
    Keyring,
    /// The fallback file.
    File,
}

impl Vault {
    fn prefix(self) -> &'static str {
        match self {
            Vault::Keyring => "keyring:",
            Vault::File => "secrets-file:",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vault::Keyring => "the keyring",
            Vault::File => "the secrets file",
        }
    }
}

/// Whether to use the keyring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeyringChoice {
    /// The Secret Service on the session bus, when one answers.
    #[default]
    Session,
    /// Never; the fallback file only.
    Off,
}

impl KeyringChoice {
    /// `Off` when `SWITCHBOARD_KEYRING=off`, otherwise `Session`.
    pub fn from_env() -> KeyringChoice {
        match std::env::var(KEYRING_ENV) {
            Ok(value) if value.eq_ignore_ascii_case("off") => KeyringChoice::Off,
            _ => KeyringChoice::Session,
        }
    }
}

/// What the configuration file keeps in place of the token of `setting`.
pub fn reference(vault: Vault, setting: &str) -> String {
    format!("{}{setting}", vault.prefix())
}

/// The vault and setting a value refers to, when it is a reference rather than a token.
pub fn parse_reference(value: &str) -> Option<(Vault, &str)> {
    [Vault::Keyring, Vault::File]
        .into_iter()
        .find_map(|vault| value.strip_prefix(vault.prefix()).map(|name| (vault, name)))
}

/// The field of `config` that holds `setting`, when its section is present.
fn field_mut<'a>(config: &'a mut Config, setting: &str) -> Option<&'a mut String> {
    let channels = &mut config.channels;
    match setting {
        "server.token" => Some(&mut config.server.token),
        "channels.telegram.token" => channels.telegram.as_mut().map(|c| &mut c.token),
        "channels.slack.bot_token" => channels.slack.as_mut().map(|c| &mut c.bot_token),
        "channels.slack.app_token" => channels.slack.as_mut().map(|c| &mut c.app_token),
        "channels.discord.token" => channels.discord.as_mut().map(|c| &mut c.token),
        _ => None,
    }
}

/// What [`Secrets::settle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Settings whose token moved, and where to.
    pub moved: Vec<(String, Vault)>,
    /// Why the keyring was not used, when a token had to go to the fallback file instead.
    pub keyring_unavailable: Option<String>,
}

/// The tokens of one configuration file.
#[derive(Debug, Clone)]
pub struct Secrets {
    config_file: PathBuf,
    fallback: PathBuf,
    choice: KeyringChoice,
}

impl Secrets {
    /// The tokens of the configuration at `config_file`, using the keyring unless
    /// `SWITCHBOARD_KEYRING=off`.
    pub fn new(config_file: &Path) -> Secrets {
        // The keyring entries carry the file's path, so two configurations on one machine keep
        // their own tokens.
        let config_file = std::path::absolute(config_file).unwrap_or_else(|_| config_file.into());
        let fallback = config_file.with_file_name(FALLBACK_FILE);
        Secrets {
            config_file,
            fallback,
            choice: KeyringChoice::from_env(),
        }
    }

    pub fn keyring(mut self, choice: KeyringChoice) -> Secrets {
        self.choice = choice;
        self
    }

    /// The fallback file.
    pub fn fallback_file(&self) -> &Path {
        &self.fallback
    }

    /// Puts the tokens in `config` in place of its references, and moves tokens found in the
    /// configuration file (or in the fallback file, once a keyring is available) to the keyring,
    /// writing references into the file. A reference whose token cannot be found is an error
    /// naming the setting.
    pub async fn settle(&self, config: &mut Config) -> Result<Settled, ConfigError> {
        let mut settled = Settled::default();
        let mut keyring = LazyKeyring::new(&self.choice);
        let mut file = self.read_fallback()?;
        let mut file_changed = false;
        let mut references = Vec::new();
        for setting in SECRET_SETTINGS {
            let Some(field) = field_mut(config, setting) else {
                continue;
            };
            if field.is_empty() {
                continue;
            }
            // The token when the file holds a reference to the fallback file; None when the
            // file holds the token itself.
            let from_fallback = match parse_reference(field) {
                None => None,
                Some((_, named)) if named != setting => {
                    return Err(self.invalid(
                        setting,
                        format!(
                            "\"{field}\" names another setting; write the token itself here and \
                             Switchboard moves it to the keyring"
                        ),
                    ));
                }
                Some((Vault::Keyring, _)) => {
                    let found = match keyring.get_patiently().await {
                        Ok(ring) => ring.get(&self.attributes(setting)).await,
                        Err(reason) => Err(reason),
                    };
                    match found {
                        Ok(Some(token)) => {
                            *field = token;
                            continue;
                        }
                        Ok(None) => {
                            return Err(self.invalid(
                                setting,
                                "the keyring has no token for this setting (was it removed?); \
                                 write the token here again, or set it in Settings",
                            ));
                        }
                        Err(reason) => return Err(self.keyring_error(setting, &reason)),
                    }
                }
                Some((Vault::File, _)) => match file.get(setting) {
                    Some(token) => Some(token.clone()),
                    None => {
                        return Err(self.invalid(
                            setting,
                            format!(
                                "{} has no token for this setting; write the token here again, \
                                 or set it in Settings",
                                self.fallback.display()
                            ),
                        ));
                    }
                },
            };
            let in_fallback = from_fallback.is_some();
            let token = from_fallback.unwrap_or_else(|| field.clone());
            // A token written in the configuration file, or one in the fallback file while a
            // keyring is available: move it.
            let vault = match keyring.get().await {
                Ok(ring) => match ring
                    .put(&self.attributes(setting), &self.label(setting), &token)
                    .await
                {
                    Ok(()) => Vault::Keyring,
                    Err(reason) => {
                        tracing::warn!(%setting, %reason, "cannot store a token in the keyring; using the secrets file");
                        settled.keyring_unavailable = Some(reason);
                        Vault::File
                    }
                },
                Err(reason) => {
                    settled.keyring_unavailable = Some(reason);
                    Vault::File
                }
            };
            *field = token.clone();
            match (vault, in_fallback) {
                // Already there, and no keyring to move it to.
                (Vault::File, true) => continue,
                (Vault::File, false) => {
                    file.insert(setting.to_owned(), token);
                    file_changed = true;
                }
                (Vault::Keyring, true) => {
                    file.remove(setting);
                    file_changed = true;
                }
                (Vault::Keyring, false) => {}
            }
            references.push((setting, vault));
        }
        if file_changed {
            self.write_fallback(&file)?;
        }
        // The tokens are safe where they went; only now does the file lose them.
        for (setting, vault) in references {
            config::set_value(&self.config_file, setting, &reference(vault, setting))?;
            tracing::info!(%setting, to = vault.as_str(), file = %self.config_file.display(), "moved a token out of the configuration file");
            settled.moved.push((setting.to_owned(), vault));
        }
        Ok(settled)
    }

    /// Stores the tokens of `config` (the keyring when available, else the fallback file) and
    /// saves `config` to the configuration file with references in their place. Emptied tokens
    /// are removed from where they were kept. Returns where the tokens went.
    pub async fn save(&self, config: &Config) -> Result<Vault, ConfigError> {
        let mut keyring = LazyKeyring::new(&self.choice);
        let mut file = self.read_fallback()?;
        let before = file.clone();
        let mut on_disk = config.clone();
        let mut used = match keyring.get().await {
            Ok(_) => Vault::Keyring,
            Err(_) => Vault::File,
        };
        for setting in SECRET_SETTINGS {
            let Some(field) = field_mut(&mut on_disk, setting) else {
                continue;
            };
            if parse_reference(field).is_some() {
                // Not resolved (the engine never started); it stays where it is.
                continue;
            }
            let attributes = self.attributes(setting);
            if field.is_empty() {
                file.remove(setting);
                if let Ok(ring) = keyring.get().await {
                    if let Err(reason) = ring.delete(&attributes).await {
                        tracing::warn!(%setting, %reason, "cannot remove a token from the keyring");
                    }
                }
                continue;
            }
            let mut vault = Vault::File;
            if let Ok(ring) = keyring.get().await {
                match ring.put(&attributes, &self.label(setting), field).await {
                    Ok(()) => vault = Vault::Keyring,
                    Err(reason) => {
                        tracing::warn!(%setting, %reason, "cannot store a token in the keyring; using the secrets file");
                        used = Vault::File;
                    }
                }
            }
            match vault {
                Vault::Keyring => {
                    file.remove(setting);
                }
                Vault::File => {
                    file.insert(setting.to_owned(), field.clone());
                }
            }
            *field = reference(vault, setting);
        }
        if file != before {
            self.write_fallback(&file)?;
        }
        on_disk.save(&self.config_file)?;
        Ok(used)
    }

    fn attributes(&self, setting: &str) -> Vec<(&'static str, String)> {
        vec![
            ("application", "switchboard".to_owned()),
            ("config", self.config_file.display().to_string()),
            ("setting", setting.to_owned()),
        ]
    }

    fn label(&self, setting: &str) -> String {
        format!("Switchboard: {setting} ({})", self.config_file.display())
    }

    fn invalid(&self, setting: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.config_file.clone(),
            field: setting.to_owned(),
            message: message.into(),
        }
    }

    fn keyring_error(&self, setting: &str, reason: &str) -> ConfigError {
        self.invalid(
            setting,
            format!(
                "the token is in the keyring, which cannot be read ({reason}); unlock the \
                 keyring (log in to the desktop), or write the token here again"
            ),
        )
    }

    /// The fallback file's tokens by setting; none when it does not exist. A file others could
    /// read is made private first.
    fn read_fallback(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let text = match fs::read_to_string(&self.fallback) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: self.fallback.clone(),
                    source,
                });
            }
        };
        make_private(&self.fallback)?;
        toml::from_str::<BTreeMap<String, String>>(&text).map_err(|error| ConfigError::Invalid {
            path: self.fallback.clone(),
            field: "file".into(),
            message: format!(
                "not a list of setting = \"token\" lines ({}); fix or delete the file and set \
                 the tokens again",
                error.message()
            ),
        })
    }

    fn write_fallback(&self, tokens: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let mut text = String::from(
            "# Switchboard's tokens, kept here because no keyring (Secret Service) was available.\n\
             # Only you can read this file. Do not share it; they move to the keyring once one is.\n",
        );
        for (setting, token) in tokens {
            let line = toml::to_string(&BTreeMap::from([(setting, token)])).map_err(|e| {
                ConfigError::Write {
                    path: self.fallback.clone(),
                    source: io::Error::other(e.to_string()),
                }
            })?;
            text.push_str(&line);
        }
        config::write_atomically(&self.fallback, &text)
    }
}

#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the secrets file was readable by others; made it private");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            ConfigError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// The keyring, connected on first use; the reason it cannot be used is kept.
struct LazyKeyring<'c> {
    choice: &'c KeyringChoice,
    state: Option<Result<Keyring, String>>,
}

impl<'c> LazyKeyring<'c> {
    fn new(choice: &'c KeyringChoice) -> Self {
        LazyKeyring {
            choice,
            state: None,
        }
    }

    /// Like [`LazyKeyring::get`], but a keyring that is not there yet is waited for a while:
    /// at login, Switchboard may start before the keyring daemon has opened the login keyring.
    async fn get_patiently(&mut self) -> Result<&Keyring, String> {
        let deadline = tokio::time::Instant::now() + KEYRING_PATIENCE;
        while self.get().await.is_err()
            && *self.choice != KeyringChoice::Off
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.state = None;
        }
        self.get().await
    }

    async fn get(&mut self) -> Result<&Keyring, String> {
        if self.state.is_none() {
            let opened = match self.choice {
                KeyringChoice::Off => Err(format!("{KEYRING_ENV} is off")),
                KeyringChoice::Session => Keyring::open().await,
            };
            if let Err(reason) = &opened {
                tracing::info!(%reason, "no keyring; tokens go to the secrets file");
            }
            self.state = Some(opened);
        }
        match self.state.as_ref() {
            Some(Ok(keyring)) => Ok(keyring),
            Some(Err(reason)) => Err(reason.clone()),
            None => Err("not connected".into()),
        }
    }
}

/// A session with the Secret Service.
struct Keyring {
    service: SecretService<'static>,
}

impl Keyring {
    async fn open() -> Result<Keyring, String> {
        let connect = async {
            let service = SecretService::connect(EncryptionType::Dh)
                .await
                .map_err(|e| format!("no Secret Service on the session bus: {e}"))?;
            // The default collection must exist; creating one would ask the person for a
            // password out of nowhere, so without one the fallback file is used.
            service
                .get_default_collection()
                .await
                .map_err(|e| format!("the Secret Service has no default keyring: {e}"))?;
            Ok::<_, String>(Keyring { service })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| "the Secret Service did not answer".to_owned())?
    }

    async fn get(&self, attributes: &[(&str, String)]) -> Result<Option<String>, String> {
        let found = self
            .service
            .search_items(as_map(attributes))
            .await
            .map_err(|e| e.to_string())?;
        let item = match (found.unlocked.first(), found.locked.first()) {
            (Some(item), _) => item,
            (None, Some(item)) => {
                tokio::time::timeout(UNLOCK_TIMEOUT, item.unlock())
                    .await
                    .map_err(|_| "the keyring is locked".to_owned())?
                    .map_err(|e| format!("the keyring is locked: {e}"))?;
                item
            }
            (None, None) => return Ok(None),
        };
        let secret = item.get_secret().await.map_err(|e| e.to_string())?;
        String::from_utf8(secret)
            .map(Some)
            .map_err(|_| "the stored token is not text".to_owned())
    }

    async fn put(
        &self,
        attributes: &[(&str, String)],
        label: &str,
        token: &str,
    ) -> Result<(), String> {
        let collection = self
            .service
            .get_default_collection()
            .await
            .map_err(|e| e.to_string())?;
        if collection.is_locked().await.map_err(|e| e.to_string())? {
            tokio::time::timeout(UNLOCK_TIMEOUT, collection.unlock())
                .await
                .map_err(|_| "the keyring is locked".to_owned())?
                .map_err(|e| format!("the keyring is locked: {e}"))?;
        }
        collection
            .create_item(
                label,
                as_map(attributes),
                token.as_bytes(),
                true,
                "text/plain",
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, attributes: &[(&str, String)]) -> Result<(), String> {
        let found = self
            .service
            .search_items(as_map(attributes))
            .await
            .map_err(|e| e.to_string())?;
        for item in found.unlocked.iter().chain(found.locked.iter()) {
            item.delete().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn as_map<'a>(attributes: &'a [(&'a str, String)]) -> HashMap<&'a str, &'a str> {
    attributes.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# my setup\n[server]\nurl = \"http://127.0.0.1:4096\"\ntoken = \"server-secret\" # from the admin page\n[channels.telegram]\ntoken = \"123:tg-secret\"\n[channels.slack]\nenabled = false\nbot_token = \"\"\n";

    fn install(text: &str) -> (tempfile::TempDir, PathBuf, Secrets) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        fs::write(&path, text).expect("write");
        let secrets = Secrets::new(&path).keyring(KeyringChoice::Off);
        (dir, path, secrets)
    }

    fn load(path: &Path) -> Config {
        Config::load(path).expect("load")
    }

    #[test]
    fn references_name_their_vault_and_setting() {
        for vault in [Vault::Keyring, Vault::File] {
            let text = reference(vault, "channels.discord.token");
            assert_eq!(
                parse_reference(&text),
                Some((vault, "channels.discord.token"))
            );
        }
        assert_eq!(parse_reference("123:abc"), None);
        assert_eq!(parse_reference("xoxb-1"), None);
    }

    #[tokio::test]
    async fn without_a_keyring_tokens_move_to_a_private_file_and_come_back() {
        let (_dir, path, secrets) = install(FILE);
        let mut config = load(&path);
        let settled = secrets.settle(&mut config).await.expect("settle");
        assert_eq!(
            settled.moved,
            vec![
                ("server.token".to_owned(), Vault::File),
                ("channels.telegram.token".to_owned(), Vault::File)
            ]
        );
        assert!(settled.keyring_unavailable.is_some());
        assert_eq!(
            config.server.token, "server-secret",
            "the engine gets the token"
        );

        let text = fs::read_to_string(&path).expect("config");
        assert!(
            !text.contains("server-secret") && !text.contains("tg-secret"),
            "{text}"
        );
        assert!(text.contains("token = \"secrets-file:server.token\" # from the admin page"));
        assert!(text.contains("# my setup"));
        let fallback = fs::read_to_string(secrets.fallback_file()).expect("fallback");
        assert!(
            fallback.contains("\"channels.telegram.token\" = \"123:tg-secret\""),
            "{fallback}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(secrets.fallback_file())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // The next start reads them back and moves nothing.
        let mut again = load(&path);
        let settled = secrets.settle(&mut again).await.expect("settle again");
        assert!(settled.moved.is_empty());
        assert_eq!(again, config);
    }

    #[tokio::test]
    async fn a_reference_without_its_token_names_the_setting_and_the_fix() {
        let (_dir, path, secrets) =
            install("[channels.telegram]\ntoken = \"secrets-file:channels.telegram.token\"\n");
        let error = secrets
            .settle(&mut load(&path))
            .await
            .expect_err("no token");
        let ConfigError::Invalid { field, message, .. } = error else {
            panic!("not a settings error: {error}");
        };
        assert_eq!(field, "channels.telegram.token");
        assert!(message.contains("write the token here again"), "{message}");

        let (_dir, path, secrets) =
            install("[channels.telegram]\ntoken = \"keyring:server.token\"\n");
        let error = secrets
            .settle(&mut load(&path))
            .await
            .expect_err("misnamed");
        assert!(
            error.to_string().contains("names another setting"),
            "{error}"
        );

        let (_dir, path, secrets) =
            install("[channels.telegram]\ntoken = \"keyring:channels.telegram.token\"\n");
        let error = secrets
            .settle(&mut load(&path))
            .await
            .expect_err("no keyring");
        assert!(error.to_string().contains("unlock the keyring"), "{error}");
    }

    #[tokio::test]
    async fn saving_stores_changed_tokens_and_forgets_emptied_ones() {
        let (_dir, path, secrets) = install(FILE);
        let mut config = load(&path);
        secrets.settle(&mut config).await.expect("settle");

        config.server.token = String::new();
        if let Some(telegram) = config.channels.telegram.as_mut() {
            telegram.token = "456:new-secret".into();
        }
        assert_eq!(secrets.save(&config).await.expect("save"), Vault::File);

        let text = fs::read_to_string(&path).expect("config");
        assert!(!text.contains("new-secret"), "{text}");
        assert!(
            text.contains("[server]\nurl = \"http://127.0.0.1:4096\"\ntoken = \"\""),
            "{text}"
        );
        let fallback = fs::read_to_string(secrets.fallback_file()).expect("fallback");
        assert!(
            fallback.contains("new-secret") && !fallback.contains("server-secret"),
            "{fallback}"
        );
        let mut reloaded = load(&path);
        secrets.settle(&mut reloaded).await.expect("settle");
        assert_eq!(reloaded, config);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_fallback_file_others_can_read_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path, secrets) =
            install("[channels.telegram]\ntoken = \"secrets-file:channels.telegram.token\"\n");
        fs::write(
            secrets.fallback_file(),
            "\"channels.telegram.token\" = \"1:a\"\n",
        )
        .expect("write");
        fs::set_permissions(secrets.fallback_file(), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let mut config = load(&path);
        secrets.settle(&mut config).await.expect("settle");
        assert_eq!(
            config.channels.telegram.map(|t| t.token).as_deref(),
            Some("1:a")
        );
        let mode = fs::metadata(secrets.fallback_file())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
