//! `switchboard`: the desktop app. See `lib.rs`.
#![forbid(unsafe_code)]
// No console window on Windows release builds.
#![cfg_attr(
    all(not(debug_assertions), target_os = "windows"),
    windows_subsystem = "windows"
)]

/// The engine's allocator, as in the headless gateway (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    switchboard::run();
}
