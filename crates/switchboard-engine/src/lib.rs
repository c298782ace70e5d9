//! Switchboard's engine: everything that moves messages between chat channels and a Stakpak agent
//! server, with no knowledge of any desktop toolkit.
//!
//! The host (the desktop shell, the headless binary or a test) starts an [`Engine`] from a
//! [`config::Config`], a data directory and a cancellation token, and gets back an
//! [`EngineHandle`] to drive it and a stream of [`EngineEvent`]s to show what it does.
#![forbid(unsafe_code)]

pub mod access;
pub mod agent;
pub mod api;
pub mod approvals;
pub mod backoff;
pub mod channels;
pub mod chunk;
pub mod commands;
pub mod config;
mod dispatch;
mod engine;
pub mod events;
pub mod http;
pub mod media;
pub mod model;
pub mod private;
pub mod routing;
pub mod secrets;
pub mod sse;
pub mod store;
pub mod watch;

pub use dispatch::{CallerContext, InteractiveRun, StartedRun};
pub use engine::{
    ConversationSummary, Engine, EngineBuilder, EngineHandle, EngineOptions, SayError,
};
pub use events::{EngineEvent, RunOutcome, ServerHealth};
