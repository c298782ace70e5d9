//! Builds the web UI when it is missing or older than its sources, then lets `tauri-build` embed it,
//! check the capabilities and generate the application manifest.
//!
//! The UI is built here, not by a separate step, so that a plain `cargo build` (and `cargo test`,
//! `cargo clippy`) from a fresh clone works: `tauri::generate_context!` embeds `ui/dist` at compile
//! time and fails without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

include!("src/command_names.rs");

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    if let Err(message) = build_ui(&root) {
        // A build script reports a failure by panicking; the message is what cargo shows.
        panic!("\n\nswitchboard: cannot build the web UI: {message}\n\n");
    }
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(COMMAND_NAMES));
    if let Err(error) = tauri_build::try_build(attributes) {
        panic!("\n\nswitchboard: tauri-build failed: {error:#}\n\n");
    }
}

/// Runs `npm run build` when `ui/dist/index.html` is missing or older than any UI source.
fn build_ui(root: &Path) -> Result<(), String> {
    let sources = [
        root.join("ui/src"),
        root.join("ui/index.html"),
        root.join("ui/vite.config.ts"),
        root.join("ui/tsconfig.json"),
        root.join("package.json"),
        root.join("package-lock.json"),
    ];
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    let built = root.join("ui/dist/index.html");
    println!("cargo:rerun-if-changed={}", built.display());
    let built_at = modified(&built);
    let newest_source = sources.iter().filter_map(|s| newest(s)).max();
    let stale = match (built_at, newest_source) {
        (None, _) => true,
        (Some(built), Some(source)) => source > built,
        (Some(_), None) => false,
    };
    if !stale {
        return Ok(());
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        return Err(
            "npm was not found on PATH; install Node.js 20 and npm (scripts/setup.sh does), \
                    then build again"
                .into(),
        );
    }
    if !root.join("node_modules/.bin").exists() {
        // `npm ci` fails against a registry mirror that lacks other platforms' optional packages;
        // `npm install` then keeps the locked versions it can resolve (as scripts/setup.sh does).
        let ci = run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root),
            "npm ci",
        );
        if ci.is_err() {
            run(
                Command::new(npm)
                    .args(["install", "--no-audit", "--no-fund"])
                    .current_dir(root),
                "npm install",
            )?;
        }
    }
    run(
        Command::new(npm).args(["run", "build"]).current_dir(root),
        "npm run build",
    )
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
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
