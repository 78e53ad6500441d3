//! Session resumption on the hub's listener configurations, with a real rustls client over real
//! TCP: a client that connects, disconnects and reconnects with the same session store resumes
//! instead of doing a full handshake, and a resumed MQTT session still carries the client
//! certificate the device presented when the session began.
#![allow(clippy::unwrap_used)] // the helpers below panic only to fail a test

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What the server saw of one connection.
#[derive(Debug)]
struct Seen {
    kind: HandshakeKind,
    client_certificates: usize,
}

/// A server on 127.0.0.1 that accepts `connections` connections one after another, echoes one
/// byte on each and reports what it saw.
fn serve(config: Arc<ServerConfig>, connections: usize) -> (u16, JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        (0..connections)
            .map(|_| {
                let (tcp, _) = listener.accept().unwrap();
                let conn = ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).unwrap();
                tls.write_all(&byte).unwrap();
                tls.flush().unwrap();
                let seen = Seen {
                    kind: tls.conn.handshake_kind().unwrap(),
                    client_certificates: tls.conn.peer_certificates().map_or(0, <[_]>::len),
                };
                tls.conn.send_close_notify();
                let _ = tls.flush();
                seen
            })
            .collect()
    });
    (port, handle)
}

/// One connection: a byte there and back (which also reads the server's tickets), then close.
/// Returns the handshake kind the client saw.
fn connect(client: &Arc<ClientConfig>, port: u16) -> HandshakeKind {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client.clone(), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    let kind = tls.conn.handshake_kind().unwrap();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    kind
}

struct Hub {
    paths: fleethub_tls::CertificatePaths,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn new() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let paths = fleethub_tls::ensure_certificates(dir.path(), "localhost", None).unwrap();
        Hub { paths, _dir: dir }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.paths.ca.as_ref().unwrap()).unwrap()
    }

    /// A client trusting the hub's CA, speaking only `version`, with its own session store.
    fn client(&self, version: &'static rustls::SupportedProtocolVersion) -> ClientConfig {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(root_store(&self.ca_pem()))
            .with_no_client_auth();
        cfg.resumption = Resumption::in_memory_sessions(16);
        cfg
    }
}

#[test]
fn a_reconnecting_mqtt_client_resumes_over_tls_1_3() {
    let hub = Hub::new();
    let server = fleethub_tls::mqtt_server_config(&hub.paths).unwrap();
    let (port, seen) = serve(server, 3);
    let client = Arc::new(hub.client(&rustls::version::TLS13));
    let kinds: Vec<_> = (0..3).map(|_| connect(&client, port)).collect();
    assert_eq!(
        kinds,
        [
            HandshakeKind::Full,
            HandshakeKind::Resumed,
            HandshakeKind::Resumed
        ]
    );
    let seen = seen.join().unwrap();
    assert_eq!(seen[1].kind, HandshakeKind::Resumed, "{seen:?}");
}

#[test]
fn every_device_of_a_fleet_resumes_not_only_the_last_few_hundred() {
    // rustls' default keeps 256 sessions in server memory; tickets keep none, so a fleet of
    // any size resumes. 300 devices, each with its own session store, connect and reconnect.
    const DEVICES: usize = 300;
    let hub = Hub::new();
    let server = fleethub_tls::mqtt_server_config(&hub.paths).unwrap();
    let (port, seen) = serve(server, 2 * DEVICES);
    let devices: Vec<_> = (0..DEVICES)
        .map(|_| Arc::new(hub.client(&rustls::version::TLS13)))
        .collect();
    for device in &devices {
        assert_eq!(connect(device, port), HandshakeKind::Full);
    }
    let resumed = devices
        .iter()
        .filter(|device| connect(device, port) == HandshakeKind::Resumed)
        .count();
    assert_eq!(resumed, DEVICES);
    let seen = seen.join().unwrap();
    assert!(seen[DEVICES..]
        .iter()
        .all(|s| s.kind == HandshakeKind::Resumed));
}

#[test]
fn a_reconnecting_https_client_resumes_over_tls_1_2() {
    let hub = Hub::new();
    let server = fleethub_tls::https_server_config(&hub.paths).unwrap();
    let (port, seen) = serve(server, 2);
    let client = Arc::new(hub.client(&rustls::version::TLS12));
    assert_eq!(connect(&client, port), HandshakeKind::Full);
    assert_eq!(connect(&client, port), HandshakeKind::Resumed);
    assert_eq!(seen.join().unwrap()[1].kind, HandshakeKind::Resumed);
}

#[test]
fn a_tls_1_2_client_without_tickets_resumes_by_session_id() {
    let hub = Hub::new();
    let server = fleethub_tls::mqtt_server_config(&hub.paths).unwrap();
    let (port, _seen) = serve(server, 2);
    let mut cfg = hub.client(&rustls::version::TLS12);
    cfg.resumption = cfg
        .resumption
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    let client = Arc::new(cfg);
    assert_eq!(connect(&client, port), HandshakeKind::Full);
    assert_eq!(connect(&client, port), HandshakeKind::Resumed);
}

#[test]
fn a_resumed_mqtt_session_still_carries_the_device_certificate() {
    let hub = Hub::new();
    let server = fleethub_tls::mqtt_server_config(&hub.paths).unwrap();
    let (port, seen) = serve(server, 2);
    let device_ca = fleethub_tls::LocalCa::generate("device CA").unwrap();
    let device = device_ca
        .issue_server("device-1", &["device-1".into()])
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = device.chain.clone();
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(root_store(&hub.ca_pem()))
        .with_client_auth_cert(chain, device.key())
        .unwrap();
    cfg.resumption = Resumption::in_memory_sessions(16);
    let client = Arc::new(cfg);
    assert_eq!(connect(&client, port), HandshakeKind::Full);
    assert_eq!(connect(&client, port), HandshakeKind::Resumed);
    let seen = seen.join().unwrap();
    assert_eq!(seen[1].kind, HandshakeKind::Resumed);
    assert_eq!(
        seen[1].client_certificates, seen[0].client_certificates,
        "the resumed session lost the device's certificate: {seen:?}"
    );
    assert!(seen[1].client_certificates > 0, "{seen:?}");
}

#[test]
fn an_https_session_does_not_resume_on_the_mqtt_listener() {
    let hub = Hub::new();
    let https = fleethub_tls::https_server_config(&hub.paths).unwrap();
    let mqtt = fleethub_tls::mqtt_server_config(&hub.paths).unwrap();
    let (https_port, _) = serve(https, 1);
    let (mqtt_port, seen) = serve(mqtt, 1);
    let client = Arc::new(hub.client(&rustls::version::TLS13));
    assert_eq!(connect(&client, https_port), HandshakeKind::Full);
    // Same server name, same certificate: the client offers the HTTPS ticket, and the MQTT
    // listener, whose ticketer is its own, must not accept it.
    assert_eq!(connect(&client, mqtt_port), HandshakeKind::Full);
    assert_eq!(seen.join().unwrap()[0].kind, HandshakeKind::Full);
}

/// One listener configuration per "run" of the hub: each call builds it again from the files,
/// as a restarted hub does.
fn across_a_restart(
    paths: &fleethub_tls::CertificatePaths,
    listener: fn(
        &fleethub_tls::CertificatePaths,
    ) -> Result<Arc<ServerConfig>, fleethub_tls::TlsError>,
    client: &Arc<ClientConfig>,
) -> [HandshakeKind; 2] {
    let run = || {
        let (port, seen) = serve(listener(paths).unwrap(), 1);
        let kind = connect(client, port);
        assert_eq!(seen.join().unwrap()[0].kind, kind);
        kind
    };
    [run(), run()]
}

#[test]
fn a_device_resumes_after_the_hub_restarts() {
    let hub = Hub::new();
    let mqtt = Arc::new(hub.client(&rustls::version::TLS13));
    let kinds = across_a_restart(&hub.paths, fleethub_tls::mqtt_server_config, &mqtt);
    assert_eq!(kinds, [HandshakeKind::Full, HandshakeKind::Resumed]);
    let https = Arc::new(hub.client(&rustls::version::TLS12));
    let kinds = across_a_restart(&hub.paths, fleethub_tls::https_server_config, &https);
    assert_eq!(kinds, [HandshakeKind::Full, HandshakeKind::Resumed]);
}

#[test]
fn without_a_key_directory_a_restart_costs_one_full_handshake() {
    let mut hub = Hub::new();
    hub.paths.ticket_keys_dir = None;
    let client = Arc::new(hub.client(&rustls::version::TLS13));
    let kinds = across_a_restart(&hub.paths, fleethub_tls::mqtt_server_config, &client);
    assert_eq!(kinds, [HandshakeKind::Full, HandshakeKind::Full]);
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(ca_pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}
