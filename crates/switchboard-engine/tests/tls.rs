//! HTTPS as people behind a company's own CA meet it: a server whose certificate chains to a
//! root the system trusts is reached, and one whose root nobody trusts is refused.
//!
//! Its own test binary, because it points the process at a root store of its own
//! (`SSL_CERT_FILE`, which the system's root loading honours, as OpenSSL does) before any client
//! is built.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("a CA certificate");
    Authority {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Serves HTTPS on loopback as `localhost` with a certificate from `ca`, answering "ok" to
/// every request; returns the port.
async fn serve(ca: &Authority) -> u16 {
    let key = KeyPair::generate().expect("a server key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("a server certificate");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("a server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = vec![0u8; 4096];
                let _ = tls.read(&mut request).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_server_under_a_root_the_system_trusts_is_reached_and_another_is_refused() {
    let company = authority("Example Corp Root CA");
    let stranger = authority("Nobody's Root CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, &company.pem).expect("write the root store");
    // Before any client exists (this binary has this one test).
    std::env::set_var("SSL_CERT_FILE", &roots);
    std::env::remove_var("SSL_CERT_DIR");

    let trusted = serve(&company).await;
    let untrusted = serve(&stranger).await;
    let http = switchboard_engine::http::client_builder()
        .no_proxy()
        .build()
        .expect("a client");

    let answer = http
        .get(format!("https://localhost:{trusted}/"))
        .send()
        .await
        .expect("the company's server is reached");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), "ok");

    let refused = http
        .get(format!("https://localhost:{untrusted}/"))
        .send()
        .await
        .expect_err("a root nobody trusts is refused");
    let chain = format!("{:?}", refused);
    assert!(
        chain.contains("UnknownIssuer"),
        "refused for its certificate: {chain}"
    );
}
