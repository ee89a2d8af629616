//! The configs driven against each other in memory: a `ServerConnection` and a
//! `ClientConnection` exchange TLS records through byte buffers, no sockets.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, ServerConfig};
use rustls::{ProtocolVersion, ServerConnection};

use super::*;

/// A directory of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ser-tls-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Settings with a self-signed certificate kept in `dir`, not verifying servers.
fn self_signed_in(dir: &Path, names: &[&str]) -> TlsSettings {
    TlsSettings {
        data_dir: Some(dir.to_path_buf()),
        names: names.iter().map(|n| n.to_string()).collect(),
        verify: false,
        ..TlsSettings::default()
    }
}

/// Settings with nothing on disk: an in-memory certificate, not verifying servers.
fn ephemeral() -> TlsSettings {
    TlsSettings {
        verify: false,
        ..TlsSettings::default()
    }
}

/// Moves everything `from` wants to send into `to` and lets `to` process it. Ok(true) when
/// something moved; Err names the side whose processing failed.
fn transfer<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    to_side: &str,
) -> Result<bool, String> {
    let mut moved = false;
    while from.wants_write() {
        let mut buf = Vec::new();
        from.write_tls(&mut buf).expect("write_tls to a Vec");
        let mut rest = &buf[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read_tls from a slice");
            to.process_new_packets()
                .map_err(|e| format!("{to_side}: {e}"))?;
        }
        moved = true;
    }
    Ok(moved)
}

/// Pumps records both ways until neither side has anything to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), String> {
    loop {
        let a = transfer(client, server, "server")?;
        let b = transfer(server, client, "client")?;
        if !a && !b {
            return Ok(());
        }
    }
}

fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), String> {
    let name = server_name(name).map_err(|e| e.to_string())?;
    let mut c = ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
    pump(&mut c, &mut s)?;
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "handshake stalled"
    );
    Ok((c, s))
}

/// Application data both ways over an established pair.
fn exchange(c: &mut ClientConnection, s: &mut ServerConnection) {
    let request = b"OPTIONS sip:localhost;transport=tls SIP/2.0\r\n\r\n";
    c.writer().write_all(request).unwrap();
    pump(c, s).unwrap();
    let mut got = vec![0; request.len()];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, request);

    let reply = b"SIP/2.0 200 OK\r\n\r\n";
    s.writer().write_all(reply).unwrap();
    pump(c, s).unwrap();
    let mut got = vec![0; reply.len()];
    c.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, reply);
}

#[test]
fn self_signed_handshake_and_data_both_ways() {
    let dir = TempDir::new("basic");
    let tls = Tls::load(&self_signed_in(dir.path(), &["sip.example.com"])).unwrap();
    assert_eq!(tls.self_signed, Some(dir.file(SELF_SIGNED_CERT)));
    let (mut c, mut s) = handshake(&tls.client, &tls.server, "localhost").unwrap();
    exchange(&mut c, &mut s);
    let n = negotiated(&c).unwrap();
    assert_eq!(n.version, "TLSv1.3");
    assert!(!n.resumed);
    assert_eq!(negotiated(&s), Some(n));
    assert!(n.to_string().starts_with("TLSv1.3 TLS13_"), "{n}");
    // No client certificate was asked for.
    assert!(s.peer_certificates().is_none());
}

#[test]
fn in_memory_certificate_without_data_dir() {
    let tls = Tls::load(&ephemeral()).unwrap();
    assert_eq!(tls.self_signed, None);
    let (mut c, mut s) = handshake(&tls.client, &tls.server, "localhost").unwrap();
    exchange(&mut c, &mut s);
}

#[test]
fn verify_against_ca_list() {
    let dir = TempDir::new("verify");
    let server = Tls::load(&self_signed_in(
        dir.path(),
        &["sip.example.com", "192.0.2.1", "0.0.0.0"],
    ))
    .unwrap();
    let client = Tls::load(&TlsSettings {
        ca_list: Some(dir.file(SELF_SIGNED_CERT)),
        verify: true,
        ..TlsSettings::default()
    })
    .unwrap();
    for name in [
        "localhost",
        "sip.example.com",
        "SIP.Example.COM",
        "192.0.2.1",
    ] {
        let (mut c, mut s) = handshake(&client.client, &server.server, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        exchange(&mut c, &mut s);
    }
    for name in ["other.example.com", "192.0.2.2", "0.0.0.0"] {
        let err = handshake(&client.client, &server.server, name).unwrap_err();
        assert!(
            err.starts_with("client: ") && err.contains("not valid for name"),
            "{name}: {err}"
        );
    }
    // Another ser's self-signed certificate does not chain to the CA list, and is reported as
    // such although both are named "localhost" only.
    let only_localhost = TempDir::new("verify-localhost");
    Tls::load(&self_signed_in(only_localhost.path(), &[])).unwrap();
    let trusting = Tls::load(&TlsSettings {
        ca_list: Some(only_localhost.file(SELF_SIGNED_CERT)),
        verify: true,
        ..self_signed_in(only_localhost.path(), &[])
    })
    .unwrap();
    let stranger = Tls::load(&ephemeral()).unwrap();
    let err = handshake(&trusting.client, &stranger.server, "localhost").unwrap_err();
    assert!(
        err.starts_with("client: ") && err.contains("UnknownIssuer"),
        "{err}"
    );
    handshake(&trusting.client, &trusting.server, "localhost").unwrap();
}

#[test]
fn method_decides_the_version() {
    let any = Tls::load(&ephemeral()).unwrap();
    let only = |method| {
        Tls::load(&TlsSettings {
            method,
            ..ephemeral()
        })
        .unwrap()
    };
    let (tls12, tls13) = (only(TlsMethod::Tls12), only(TlsMethod::Tls13));

    let (c, s) = handshake(&tls12.client, &any.server, "localhost").unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(negotiated(&s).unwrap().version, "TLSv1.2");
    let (c, _) = handshake(&any.client, &tls12.server, "localhost").unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    let (c, _) = handshake(&tls13.client, &any.server, "localhost").unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    let (c, _) = handshake(&any.client, &any.server, "localhost").unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));

    let err = handshake(&tls13.client, &tls12.server, "localhost").unwrap_err();
    assert!(err.starts_with("server: "), "{err}");
    let err = handshake(&tls12.client, &tls13.server, "localhost").unwrap_err();
    assert!(err.starts_with("server: "), "{err}");
}

/// A CA and a client certificate it signed, as PEM files in `dir`: (ca, cert, key).
fn ca_signed_client(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["client.example.com".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();

    let paths = (
        dir.file("ca.pem"),
        dir.file("client.pem"),
        dir.file("client.key"),
    );
    fs::write(&paths.0, ca_cert.pem()).unwrap();
    fs::write(&paths.1, cert.pem()).unwrap();
    fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn require_certificate() {
    let dir = TempDir::new("require");
    let (ca, cert, key) = ca_signed_client(&dir);
    let server = Tls::load(&TlsSettings {
        require_certificate: true,
        ca_list: Some(ca),
        ..ephemeral()
    })
    .unwrap();

    // Without a certificate: refused by the server.
    let anonymous = Tls::load(&ephemeral()).unwrap();
    let err = handshake(&anonymous.client, &server.server, "localhost").unwrap_err();
    assert!(err.starts_with("server: "), "{err}");

    // A configured certificate is presented, and it chains to the server's CA list.
    let signed = Tls::load(&TlsSettings {
        certificate: Some(cert),
        private_key: Some(key),
        ..ephemeral()
    })
    .unwrap();
    let (mut c, mut s) = handshake(&signed.client, &server.server, "localhost").unwrap();
    exchange(&mut c, &mut s);
    assert_eq!(s.peer_certificates().map(<[_]>::len), Some(1));

    // A certificate that does not chain to the CA list is refused.
    let other_dir = TempDir::new("require-other");
    let stranger = Tls::load(&TlsSettings {
        require_certificate: true,
        ca_list: Some(dir.file("ca.pem")),
        ..self_signed_in(other_dir.path(), &[])
    })
    .unwrap();
    let err = handshake(&stranger.client, &server.server, "localhost").unwrap_err();
    assert!(
        err.starts_with("server: ") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn mesh_of_self_signed_servers_verifying_each_other() {
    let (a_dir, b_dir) = (TempDir::new("mesh-a"), TempDir::new("mesh-b"));
    // Make both certificates first: each names the other's as its CA list.
    Tls::load(&self_signed_in(a_dir.path(), &["a.example.com"])).unwrap();
    Tls::load(&self_signed_in(b_dir.path(), &["b.example.com"])).unwrap();
    let peer = |own: &TempDir, other: &TempDir| TlsSettings {
        require_certificate: true,
        verify: true,
        ca_list: Some(other.file(SELF_SIGNED_CERT)),
        ..self_signed_in(own.path(), &[])
    };
    let a = Tls::load(&peer(&a_dir, &b_dir)).unwrap();
    let b = Tls::load(&peer(&b_dir, &a_dir)).unwrap();
    let (mut c, mut s) = handshake(&a.client, &b.server, "b.example.com").unwrap();
    exchange(&mut c, &mut s);
    assert!(s.peer_certificates().is_some());
    let (mut c, mut s) = handshake(&b.client, &a.server, "a.example.com").unwrap();
    exchange(&mut c, &mut s);
    // Neither trusts itself: a's client does not accept a's own certificate.
    assert!(handshake(&a.client, &a.server, "a.example.com").is_err());
}

#[test]
fn sessions_resume() {
    for method in [TlsMethod::Tls13, TlsMethod::Tls12] {
        let tls = Tls::load(&TlsSettings {
            method,
            ..ephemeral()
        })
        .unwrap();
        let (mut c, mut s) = handshake(&tls.client, &tls.server, "localhost").unwrap();
        // In TLS 1.3 the tickets arrive after the handshake; the exchange delivers them.
        exchange(&mut c, &mut s);
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full), "{method}");

        let (mut c, mut s) = handshake(&tls.client, &tls.server, "localhost").unwrap();
        assert_eq!(c.handshake_kind(), Some(HandshakeKind::Resumed), "{method}");
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed), "{method}");
        assert!(negotiated(&c).unwrap().resumed);
        exchange(&mut c, &mut s);
    }
}

#[test]
fn tls12_resumes_by_session_id_without_tickets() {
    // A client that takes no tickets exercises the server's session cache.
    let tls = Tls::load(&TlsSettings {
        method: TlsMethod::Tls12,
        ..ephemeral()
    })
    .unwrap();
    let mut client = (*tls.client).clone();
    client.resumption = rustls::client::Resumption::in_memory_sessions(8)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    let client = Arc::new(client);
    let (mut c, mut s) = handshake(&client, &tls.server, "localhost").unwrap();
    exchange(&mut c, &mut s);
    let (c, s) = handshake(&client, &tls.server, "localhost").unwrap();
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed));
}

#[test]
fn self_signed_files_are_made_once_and_reused() {
    let dir = TempDir::new("reuse");
    let sub = dir.file("state"); // created on demand
    let settings = self_signed_in(&sub, &["sip.example.com", "[2001:db8::1]"]);
    let first = Tls::load(&settings).unwrap();
    let cert = sub.join(SELF_SIGNED_CERT);
    let key = sub.join(SELF_SIGNED_KEY);
    assert_eq!(first.self_signed.as_deref(), Some(cert.as_path()));
    let (cert_bytes, key_bytes) = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
    }
    assert!(!sub.join(format!("{SELF_SIGNED_KEY}.tmp")).exists());

    // Later starts reuse the pair, whatever the names now are.
    let again = Tls::load(&TlsSettings {
        names: vec!["other.example.com".into()],
        ..settings.clone()
    })
    .unwrap();
    assert_eq!(again.self_signed.as_deref(), Some(cert.as_path()));
    assert_eq!(fs::read(&cert).unwrap(), cert_bytes);
    assert_eq!(fs::read(&key).unwrap(), key_bytes);
    // And the reused pair verifies under the names it was made for (an IPv6 SAN among them).
    let verifier = Tls::load(&TlsSettings {
        ca_list: Some(cert.clone()),
        verify: true,
        ..TlsSettings::default()
    })
    .unwrap();
    for name in [
        "sip.example.com",
        "[2001:db8::1]",
        "2001:db8::1",
        "localhost",
    ] {
        handshake(&verifier.client, &again.server, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // A certificate whose key is gone is an error naming both files.
    fs::remove_file(&key).unwrap();
    let err = Tls::load(&settings).unwrap_err().to_string();
    assert!(
        err.contains(&*cert.to_string_lossy()) && err.contains(&*key.to_string_lossy()),
        "{err}"
    );
    // A key without its certificate (an interrupted first start) is replaced by a new pair.
    fs::write(&key, &key_bytes).unwrap();
    fs::remove_file(&cert).unwrap();
    Tls::load(&settings).unwrap();
    assert_ne!(fs::read(&key).unwrap(), key_bytes);
    assert_ne!(fs::read(&cert).unwrap(), cert_bytes);
}

/// `load`'s error as text, which must name `path`.
fn error_naming(settings: &TlsSettings, path: &Path) -> String {
    let err = Tls::load(settings).unwrap_err().to_string();
    assert!(
        err.contains(&*path.to_string_lossy()),
        "{err} does not name {}",
        path.display()
    );
    err
}

#[test]
fn bad_files_are_named() {
    let dir = TempDir::new("bad");
    let good = self_signed_in(dir.path(), &[]);
    Tls::load(&good).unwrap();
    let cert = dir.file(SELF_SIGNED_CERT);
    let key = dir.file(SELF_SIGNED_KEY);
    let with = |c: &Path, k: &Path| TlsSettings {
        certificate: Some(c.to_path_buf()),
        private_key: Some(k.to_path_buf()),
        ..ephemeral()
    };
    // The pair itself is fine when configured.
    let tls = Tls::load(&with(&cert, &key)).unwrap();
    assert_eq!(tls.self_signed, None);

    let missing = dir.file("missing.pem");
    let err = error_naming(&with(&missing, &key), &missing);
    assert!(err.contains("cannot read"), "{err}");
    let err = error_naming(&with(&cert, &missing), &missing);
    assert!(err.contains("cannot read"), "{err}");

    let err = error_naming(
        &TlsSettings {
            private_key: None,
            ..with(&cert, &key)
        },
        &cert,
    );
    assert!(err.contains("without a private key"), "{err}");
    let err = error_naming(
        &TlsSettings {
            certificate: None,
            ..with(&cert, &key)
        },
        &key,
    );
    assert!(err.contains("without a certificate"), "{err}");

    // The files swapped: no certificate in the key file, no key in the certificate file.
    let err = error_naming(&with(&key, &key), &key);
    assert!(err.contains("no certificate"), "{err}");
    let err = error_naming(&with(&cert, &cert), &cert);
    assert!(err.contains("no private key"), "{err}");

    // A key of another pair.
    let other_dir = TempDir::new("bad-other");
    Tls::load(&self_signed_in(other_dir.path(), &[])).unwrap();
    let other_key = other_dir.file(SELF_SIGNED_KEY);
    let err = error_naming(&with(&cert, &other_key), &other_key);
    assert!(
        err.contains("does not belong") && err.contains(&*cert.to_string_lossy()),
        "{err}"
    );

    // Broken PEM and garbage inside PEM armour.
    let broken = dir.file("broken.pem");
    fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let err = error_naming(&with(&broken, &key), &broken);
    assert!(
        err.contains("bad PEM: no \"-----END CERTIFICATE-----\" line"),
        "{err}"
    );
    let garbage = dir.file("garbage.pem");
    fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    error_naming(&with(&garbage, &key), &garbage);
    error_naming(
        &TlsSettings {
            ca_list: Some(garbage.clone()),
            verify: true,
            ..good.clone()
        },
        &garbage,
    );
    let empty = dir.file("empty.pem");
    fs::write(&empty, "").unwrap();
    let err = error_naming(
        &TlsSettings {
            ca_list: Some(empty.clone()),
            ..good.clone()
        },
        &empty,
    );
    assert!(err.contains("no certificate"), "{err}");

    let err = Tls::load(&TlsSettings {
        require_certificate: true,
        ..good.clone()
    })
    .unwrap_err();
    assert!(matches!(err, TlsError::NoCaListForClients), "{err}");
}

#[test]
fn method_spellings() {
    for (s, m) in [
        ("any", TlsMethod::Any),
        ("ANY", TlsMethod::Any),
        ("TLSv1.2+", TlsMethod::Any),
        ("tlsv1_2+", TlsMethod::Any),
        ("TLSv1.2", TlsMethod::Tls12),
        ("TLSv1_2", TlsMethod::Tls12),
        ("tlsv1.3", TlsMethod::Tls13),
        ("TLSv1_3", TlsMethod::Tls13),
        ("TLSv1.3+", TlsMethod::Tls13),
    ] {
        assert_eq!(s.parse::<TlsMethod>().unwrap(), m, "{s}");
        assert_eq!(m.to_string().parse::<TlsMethod>().unwrap(), m);
    }
    for s in ["SSLv23", "TLSv1", "TLSv1_1", "TLSv1.1+", "sslv3"] {
        let err = s.parse::<TlsMethod>().unwrap_err();
        assert!(matches!(err, TlsError::OldMethod(_)), "{s}: {err}");
        assert!(err.to_string().contains("only TLS 1.2 and 1.3"), "{err}");
    }
    assert!(matches!(
        "TLSv2".parse::<TlsMethod>(),
        Err(TlsError::UnknownMethod(_))
    ));
    assert_eq!(TlsMethod::default(), TlsMethod::Any);
}

#[test]
fn server_names() {
    assert!(matches!(
        server_name("sip.example.com"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(matches!(
        server_name("192.0.2.1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("[2001:db8::1]"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("2001:db8::1"),
        Ok(ServerName::IpAddress(_))
    ));
    for bad in ["", "bad name", "[sip.example.com]", "exa_mple..com"] {
        assert!(
            matches!(server_name(bad), Err(TlsError::BadServerName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn self_signed_names_must_be_ascii() {
    let err = Tls::load(&TlsSettings {
        names: vec!["sip.exämple.com".into()],
        ..ephemeral()
    })
    .unwrap_err();
    assert!(matches!(err, TlsError::BadName(_)), "{err}");
}

#[test]
fn servers_starting_together_make_one_pair() {
    let dir = TempDir::new("together");
    let sub = dir.file("state");
    let settings = self_signed_in(&sub, &["sip.example.com"]);
    let loads: Vec<_> = (0..6)
        .map(|_| {
            let s = settings.clone();
            std::thread::spawn(move || Tls::load(&s).map(|t| t.self_signed))
        })
        .collect();
    for l in loads {
        let got = l.join().unwrap();
        assert!(got.is_ok(), "every start loads a matching pair: {got:?}");
    }
    // One pair, and it still loads.
    assert!(Tls::load(&settings).is_ok());
}

#[test]
#[allow(deprecated)] // ring's default provider, as src/tls.rs uses it
fn sha256_suites_are_preferred_over_a_clients_sha384_first() {
    let dir = TempDir::new("suites");
    let tls = Tls::load(&self_signed_in(dir.path(), &["sip.example.com"])).unwrap();
    // rustls' own client (like OpenSSL's) lists TLS13_AES_256_GCM_SHA384 first.
    let plain = rustls::crypto::ring::default_provider();
    assert_eq!(
        plain.cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let algorithms = plain.signature_verification_algorithms;
    let client = ClientConfig::builder_with_provider(Arc::new(plain))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
            algorithms,
            accept: true,
        }))
        .with_no_client_auth();
    let (c, _s) = handshake(&Arc::new(client), &tls.server, "localhost").unwrap();
    assert_eq!(
        c.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}
