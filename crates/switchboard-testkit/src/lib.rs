//! Loopback fakes of the services Switchboard talks to, built to the contracts in
//! `shared/contracts/`, for tests and demos. Each fake binds `127.0.0.1`, tells its address, records
//! what it received and can be scripted to misbehave.

#![forbid(unsafe_code)]

pub mod discord;
pub mod model;
pub mod process;
pub mod slack;
pub mod stakpak;
pub mod telegram;

/// An HTTP client for the fakes' own tests: reqwest is built without a TLS provider (the engine
/// installs ring), so the tests install it too.
#[cfg(test)]
pub(crate) fn test_http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A path segment percent-encoded (everything but unreserved characters), as the platforms
/// write a file's name into its address.
pub(crate) fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
