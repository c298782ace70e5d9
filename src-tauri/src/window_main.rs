//! `switchboard-window`: the desktop app's windows, in a process the app starts while one is
//! open. See `window.rs`.
#![forbid(unsafe_code)]
#![cfg_attr(
    all(not(debug_assertions), target_os = "windows"),
    windows_subsystem = "windows"
)]

/// The engine's allocator, as in the app.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    switchboard::window::main();
}
