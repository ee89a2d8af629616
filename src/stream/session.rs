//! One TLS session over a stream connection: rustls's buffered connection, driven with bytes
//! (no socket of its own, no thread): records in, plaintext out; plaintext in, records out.
//!
//! The handshake runs inside the same calls; until it is done, plaintext written waits in
//! rustls (bounded by its buffer limit) and goes out once keys exist.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

/// A TLS session (server or client side).
pub struct Session {
    conn: rustls::Connection,
    /// The handshake was seen complete (for counting it once).
    pub counted: bool,
}

/// Plaintext one session may hold unsent (before the handshake ends, or while the peer is
/// slow): 1 MiB.
const BUFFER_LIMIT: usize = 1 << 20;

impl Session {
    pub fn server(cfg: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        let mut c = rustls::ServerConnection::new(cfg)?;
        c.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Self {
            conn: c.into(),
            counted: false,
        })
    }

    pub fn client(
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let mut c = rustls::ClientConnection::new(cfg, name)?;
        c.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Self {
            conn: c.into(),
            counted: false,
        })
    }

    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Takes records read from the socket; the plaintext they carry is appended to `plain`.
    pub fn read(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if !data.is_empty() {
                match self.conn.read_tls(&mut data) {
                    Ok(_) => {}
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                }
            }
            let state = self.conn.process_new_packets()?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                match self.conn.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        plain.extend_from_slice(&chunk[..n]);
                        left = left.saturating_sub(n);
                    }
                    Err(_) => break,
                }
            }
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    /// Queues plaintext to send.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.conn.writer().write_all(data)
    }

    /// Appends the records waiting to be sent (handshake, data, alerts) to `out`.
    pub fn drain(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// The negotiated protocol version and cipher suite, for listings ("TLSv1.3",
    /// "TLS13_AES_256_GCM_SHA384").
    pub fn describe(&self) -> Option<(String, String)> {
        let v = self.conn.protocol_version()?;
        let c = self.conn.negotiated_cipher_suite()?;
        Some((format!("{v:?}"), format!("{:?}", c.suite())))
    }

    /// Whether the session was resumed (no full handshake).
    pub fn resumed(&self) -> bool {
        matches!(
            self.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }
}
