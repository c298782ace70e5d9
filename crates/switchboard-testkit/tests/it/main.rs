//! Integration tests of the fake Stakpak server, over real HTTP with reqwest: the fake must follow
//! `shared/contracts/stakpak-server.md` and look like the captures in `fixtures/`.

mod events;
mod http_api;
mod restart;
mod runs;
mod support;
mod tools;
