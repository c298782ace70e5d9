//! Checks that the web UI is built and current, then lets `tauri-build` embed it, check the
//! capabilities and generate the application manifest.
//!
//! `tauri::generate_context!` embeds `ui/dist` at compile time. Building it is not this script's
//! job (a build script must not download packages or run npm: that breaks offline and packaged
//! builds): `scripts/build-ui.sh` does, and `scripts/setup.sh` runs it; a missing or stale build
//! stops here with the command to run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

include!("src/command_names.rs");

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    // Without `custom-protocol` (`npm run tauri dev`) the page comes from Vite's dev server and
    // nothing is embedded.
    let embeds_ui = std::env::var_os("CARGO_FEATURE_CUSTOM_PROTOCOL").is_some();
    if embeds_ui {
        if let Err(message) = check_ui(&root) {
            // A build script reports a failure by panicking; the message is what cargo shows.
            panic!("\n\nswitchboard: the web UI is not ready: {message}\n\n");
        }
    }
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(COMMAND_NAMES));
    if let Err(error) = tauri_build::try_build(attributes) {
        panic!("\n\nswitchboard: tauri-build failed: {error:#}\n\n");
    }
}

/// Fails, saying what to run, when `ui/dist/index.html` is missing or older than a UI source.
fn check_ui(root: &Path) -> Result<(), String> {
    let sources = [
        root.join("ui/src"),
        root.join("ui/index.html"),
        root.join("ui/vite.config.ts"),
        root.join("ui/tsconfig.json"),
        root.join("package.json"),
    ];
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    let built = root.join("ui/dist/index.html");
    println!("cargo:rerun-if-changed={}", built.display());
    let newest_source = sources.iter().filter_map(|s| newest(s)).max();
    match (modified(&built), newest_source) {
        (None, _) => Err(format!(
            "{} is missing; build the UI first: scripts/build-ui.sh (or `npm ci && npm run build`)",
            built.display()
        )),
        (Some(built_at), Some(source)) if source > built_at => Err(
            "ui/dist is older than the UI's sources; rebuild it: scripts/build-ui.sh (or `npm run build`)"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of any file under a directory.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = path.metadata().ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest(&entry.path()))
        .max()
}
