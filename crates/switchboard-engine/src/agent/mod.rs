//! The client of the Stakpak agent server (`../shared/contracts/stakpak-server.md`).

mod client;
pub(crate) mod wire;

pub use client::{AgentClient, EventStream, Timeouts};
pub use wire::{
    AgentError, AgentEvent, Envelope, GapInfo, Health, Message, PendingTools, ProposedToolCall,
    RunStatus, SessionDto, StreamItem, ToolDecision, Usage,
};
