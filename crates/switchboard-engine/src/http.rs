//! How the engine makes HTTP clients: reqwest over rustls with ring as the crypto provider (no
//! cmake or assembler at build time, unlike aws-lc) and the platform verifier, which checks
//! certificates against the system's roots, so a company CA the system trusts works here too.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// Makes ring the process's rustls provider unless one is installed already. reqwest is built
/// without a provider of its own, so this must run before the first client is built;
/// [`client_builder`] does it.
pub fn install_tls_provider() {
    PROVIDER.call_once(|| {
        // Err means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder, with the TLS provider in place.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
}

/// A builder for a chat platform's API, which carries a token: no redirects (a redirect must not
/// carry the token, in the URL for Telegram and a header for the others, to another host; the
/// platforms' APIs never redirect) and a bounded connect.
pub fn platform_api_builder() -> reqwest::ClientBuilder {
    client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
}

/// A client with reqwest's defaults, for tests and tools.
///
/// # Panics
/// When TLS cannot be set up at all (no usable provider), which no input can cause.
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("an HTTP client with the ring provider builds")
}
