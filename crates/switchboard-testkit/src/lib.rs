//! Loopback fakes of the services Switchboard talks to, built to the contracts in
//! `shared/contracts/`, for tests and demos. Each fake binds `127.0.0.1`, tells its address, records
//! what it received and can be scripted to misbehave.

#![forbid(unsafe_code)]

pub mod discord;
pub mod process;
pub mod slack;
pub mod stakpak;
pub mod telegram;
