//! TLS for `wss://` and `https://`: the rustls server configuration, read from PEM files
//! at start (ring provider, ALPN `http/1.1`), and the per-socket session the poller
//! drives after the handshake.
//!
//! A bad file, a key that does not decrypt or a missing CA file is an error at start that
//! names the setting and the file.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::FromPyObject;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// The `ssl_*` fields of Python's `Config`, read by attribute name (uvicorn's names).
#[derive(FromPyObject)]
pub struct TlsSettings {
    ssl_certfile: Option<String>,
    ssl_keyfile: Option<String>,
    ssl_keyfile_password: Option<String>,
    ssl_ca_certs: Option<String>,
    ssl_cert_reqs: u8,
}

impl TlsSettings {
    /// The TLS configuration they describe (`None` without a certificate); the error names
    /// the setting and the file if they are not usable.
    pub fn server_config(self) -> Result<Option<Arc<ServerConfig>>, String> {
        match (self.ssl_certfile, self.ssl_keyfile) {
            (Some(certfile), Some(keyfile)) => server_config(&TlsFiles {
                certfile,
                keyfile,
                keyfile_password: self.ssl_keyfile_password,
                ca_certs: self.ssl_ca_certs,
                cert_reqs: self.ssl_cert_reqs,
            })
            .map(Some),
            (None, None) if self.ssl_cert_reqs == 0 => Ok(None),
            (None, None) => Err(
                "ssl_cert_reqs asks for client certificates, but ssl_certfile is not set"
                    .to_owned(),
            ),
            _ => Err("ssl_certfile and ssl_keyfile go together: give both, or neither".to_owned()),
        }
    }
}

/// The TLS files, once both are given.
pub struct TlsFiles {
    pub certfile: String,
    pub keyfile: String,
    pub keyfile_password: Option<String>,
    pub ca_certs: Option<String>,
    /// 0: no client certificate asked; 1: asked, optional; 2: required.
    pub cert_reqs: u8,
}

/// Build the server configuration; the error names the setting and the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("ssl_certfile", &files.certfile)?;
    let key = read_key(files)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (files.cert_reqs, &files.ca_certs) {
        (0, _) => builder.with_no_client_auth(),
        (1 | 2, None) => {
            return Err(format!(
                "ssl_cert_reqs={} asks for client certificates: ssl_ca_certs must name the \
                 CA file that signs them",
                files.cert_reqs
            ))
        }
        (reqs @ (1 | 2), Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("ssl_ca_certs", ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ssl_ca_certs: {ca_file}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if reqs == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("ssl_ca_certs: {ca_file}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        (other, _) => return Err(format!("ssl_cert_reqs must be 0, 1 or 2, not {other}")),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "ssl_keyfile: {} does not fit ssl_certfile {}: {e}",
            files.keyfile, files.certfile
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_file(setting: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting}: cannot read {path}: {e}"))
}

fn read_certs(setting: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting}: {path} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{setting}: {path} holds no certificate"));
    }
    Ok(certs)
}

fn read_key(files: &TlsFiles) -> Result<PrivateKeyDer<'static>, String> {
    let path = &files.keyfile;
    let pem = read_file("ssl_keyfile", path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = &files.keyfile_password else {
            return Err(format!(
                "ssl_keyfile: {path} is encrypted: give its password with ssl_keyfile_password"
            ));
        };
        let start = text
            .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            .expect("found");
        let (label, document) = pkcs8::der::SecretDocument::from_pem(&text[start..])
            .map_err(|e| format!("ssl_keyfile: {path} is not PEM: {e}"))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(format!(
                "ssl_keyfile: {path} holds a {label}, not a private key"
            ));
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes())
            .map_err(|e| format!("ssl_keyfile: {path}: {e}"))?;
        let key = info.decrypt(password).map_err(|_| {
            format!("ssl_keyfile_password: does not decrypt {path} (wrong password?)")
        })?;
        return Ok(PrivatePkcs8KeyDer::from(key.as_bytes().to_vec()).into());
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("ssl_keyfile: {path} holds no usable private key: {e}"))
}

/// One socket's TLS session after the handshake: plaintext in and out, ciphertext through
/// the descriptor.
pub struct Session {
    conn: ServerConnection,
}

impl Session {
    pub fn new(conn: ServerConnection) -> Self {
        Self { conn }
    }

    /// Read plaintext into `buf`: what the session holds first, then from the socket.
    /// `WouldBlock` only when both are empty; 0 at the peer's close_notify or EOF.
    pub fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // EOF without close_notify: the stream ended all the same.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(error) => return Err(error),
            }
            if self.conn.read_tls(&mut Fd(fd))? == 0 {
                return Ok(0);
            }
            if let Err(error) = self.conn.process_new_packets() {
                // Tell the peer why (an alert), then fail.
                let _ = self.flush(fd);
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            // Reading may produce records to send (a key update's answer).
            if self.conn.wants_write() {
                match self.flush(fd) {
                    Err(error) if error.kind() != io::ErrorKind::WouldBlock => return Err(error),
                    _ => {}
                }
            }
        }
    }

    /// Take plaintext from `slices` and send it encrypted; returns the plaintext bytes
    /// taken. What the socket does not take now stays in the session (`has_pending`);
    /// `WouldBlock` when earlier output is still waiting.
    pub fn write(&mut self, fd: RawFd, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush(fd)?;
        let taken = self.conn.writer().write_vectored(slices)?;
        match self.flush(fd) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(taken),
        }
    }

    /// Send what the session holds; `WouldBlock` if the socket is full before the end.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut Fd(fd))?;
        }
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Say goodbye at the TLS layer (best effort: the socket is about to close).
    pub fn close(&mut self, fd: RawFd) {
        self.conn.send_close_notify();
        let _ = self.flush(fd);
    }
}

/// `Read`/`Write` on a borrowed non-blocking descriptor.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
