//! The engine end to end: the real dispatcher, store and API against the fake agent server and an
//! in-memory chat.

mod harness;

mod access;
mod api;
mod approvals;
mod commands;
mod desktop;
mod discord;
mod durability;
mod faults;
mod media;
mod resilience;
mod routing;
mod runs;
mod scheduler;
mod slack;
mod streaming;
mod telegram;
mod watch;
