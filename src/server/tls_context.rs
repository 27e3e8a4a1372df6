//! The server's TLS context: the original's `InitServerCTX` and `LoadCertificates`, client
//! certificates (mutual TLS), and the context's renewal, which replaces the session-ticket
//! keys.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::thread;

use openssl::error::ErrorStack;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslContextBuilder, SslFiletype, SslMethod, SslOptions,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::X509Name;

use super::config::ServerConfig;
use super::listener::Shutdown;
use super::ticket_keys::{load_ticket_keys, set_ticket_keys};
use crate::error::{Error, Result};
use crate::tls;

/// The server's TLS context, shared by every client thread (and so its TLS session cache), and
/// replaced when the session-ticket keys are.
pub(super) struct TlsContext {
    current: RwLock<Arc<SslAcceptor>>,
}

impl TlsContext {
    /// The context `config` asks for.
    pub(super) fn new(config: &ServerConfig) -> Result<TlsContext> {
        Ok(TlsContext {
            current: RwLock::new(Arc::new(build_acceptor(config)?)),
        })
    }

    /// The context to use for a new connection.
    pub(super) fn acceptor(&self) -> Arc<SslAcceptor> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every `ticket_key_lifetime` until `shutdown`, replaces the context with a new one
    /// (which rereads the certificate and key). Without `--ticket-key-file`, OpenSSL draws
    /// its session-ticket keys afresh, tickets issued under the old keys fall back to a full
    /// handshake, and each server instance has its own keys: behind a load balancer, a ticket
    /// resumes only on the instance that issued it. With it, the key files are reread, so
    /// replacing them rotates the keys of every instance that reads them; if the new context
    /// cannot be made (a key file missing, of the wrong size), the old one stays.
    pub(super) fn renew_periodically(
        self: &Arc<Self>,
        config: &ServerConfig,
        shutdown: &Shutdown,
    ) -> Result<()> {
        let (context, config, shutdown) = (Arc::clone(self), config.clone(), shutdown.clone());
        thread::Builder::new()
            .name("ticket keys".into())
            .spawn(move || {
                while !shutdown.wait(config.ticket_key_lifetime) {
                    match build_acceptor(&config) {
                        Ok(fresh) => {
                            *context.current.write().unwrap_or_else(|e| e.into_inner()) =
                                Arc::new(fresh);
                            log::info!(
                                "new TLS context: session-ticket keys {}",
                                if config.ticket_key_files.is_empty() {
                                    "replaced"
                                } else {
                                    "reread from --ticket-key-file"
                                }
                            );
                        }
                        Err(e) => log::error!("cannot renew the TLS context, keeping the old: {e}"),
                    }
                }
            })
            .map(drop)
            .map_err(|e| Error::io("cannot start the ticket-key thread", e))
    }
}

/// Ports `InitServerCTX()`: a server context that speaks TLS 1.2 only (1.3 too if
/// `allow_tls13`), with forward-secret AEAD suites only (Mozilla's intermediate profile: ECDHE
/// or DHE with AES-GCM or ChaCha20-Poly1305), no compression and no renegotiation.
pub(crate) fn init_server_ctx(allow_tls13: bool) -> Result<SslAcceptorBuilder> {
    let mut ctx = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| Error::tls("cannot create the TLS context", e))?;
    tls::pin_tls12(&mut ctx)?;
    tls::spare_handshake_work(&mut ctx);
    if allow_tls13 {
        ctx.set_max_proto_version(Some(SslVersion::TLS1_3))
            .map_err(|e| Error::tls("cannot allow TLS 1.3", e))?;
    }
    ctx.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
    // Sessions stay cached by id (for clients without tickets), but OpenSSL 3.0's clearing
    // of expired ones after every 255th handshake is off: it walks the whole cache (up to
    // 20,480 sessions) under the cache's write lock, stalling the handshakes that finish
    // meanwhile. The cache stays bounded by its size (the oldest session makes room), expired
    // sessions are not resumed, and the whole cache goes with the context at each renewal.
    ctx.set_session_cache_mode(SslSessionCacheMode::SERVER | SslSessionCacheMode::NO_AUTO_CLEAR);
    Ok(ctx)
}

/// The whole TLS set-up of the server: context, certificate and key, client verification,
/// and the session-ticket keys of `--ticket-key-file` if given.
fn build_acceptor(config: &ServerConfig) -> Result<SslAcceptor> {
    let mut ctx = init_server_ctx(config.allow_tls13)?;
    load_certificates(&mut ctx, &config.cert, &config.key)?;
    if let Some(ca_file) = &config.verify_client {
        require_client_certificates(&mut ctx, ca_file)?;
    }
    if !config.ticket_key_files.is_empty() {
        set_ticket_keys(&mut ctx, load_ticket_keys(&config.ticket_key_files)?)?;
    }
    Ok(ctx.build())
}

/// Ports `LoadCertificates(ctx, CertFile, KeyFile)`: loads the certificate and its private key
/// (both may be in one PEM file) and checks that they belong together.
pub(crate) fn load_certificates(
    ctx: &mut SslContextBuilder,
    cert: &Path,
    key: &Path,
) -> Result<()> {
    check_readable("certificate file", cert)?;
    check_readable("key file", key)?;
    check_private("private key file", key)?;
    ctx.set_certificate_chain_file(cert)
        .map_err(|e| pem_error("certificate", cert, e))?;
    ctx.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| pem_error("private key", key, e))?;
    ctx.check_private_key().map_err(|_| {
        Error::Config(format!(
            "the private key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        ))
    })
}

fn check_readable(what: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (`make cert` writes a self-signed mycert.pem)"
        } else {
            ""
        };
        Error::Config(format!("cannot read {what} {}: {e}{hint}", path.display()))
    })
}

/// Refuses a file of secrets (`what`: "private key file") that others than its owner may
/// read.
pub(super) fn check_private(what: &str, key: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .map_err(|e| Error::file(what, key, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "the {what} {0} can be read by others (mode {1:o}); make it private \
             with `chmod 600 {0}`",
            key.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

fn pem_error(what: &str, path: &Path, stack: ErrorStack) -> Error {
    let has = |reason: &str| stack.errors().iter().any(|e| e.reason() == Some(reason));
    if has("ee key too small") || has("ca key too small") {
        Error::Config(format!(
            "the key of {} is too small for OpenSSL's security level (ee key too small); \
             make a 2048-bit one with `make cert FORCE=1`",
            path.display()
        ))
    } else if has("key values mismatch") {
        Error::Config(format!(
            "the private key in {} does not match the certificate",
            path.display()
        ))
    } else {
        Error::tls(format!("cannot load {what} from {}", path.display()), stack)
    }
}

/// Asks every client for a certificate and refuses those without one signed by a CA in
/// `ca_file` (mutual TLS).
fn require_client_certificates(ctx: &mut SslContextBuilder, ca_file: &Path) -> Result<()> {
    check_readable("client CA file", ca_file)?;
    let context = || format!("cannot load client CA file {}", ca_file.display());
    ctx.set_ca_file(ca_file)
        .map_err(|e| Error::tls(context(), e))?;
    let names = X509Name::load_client_ca_file(ca_file).map_err(|e| Error::tls(context(), e))?;
    ctx.set_client_ca_list(names);
    ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Required with client verification, or resumed sessions fail.
    ctx.set_session_id_context(env!("CARGO_PKG_NAME").as_bytes())
        .map_err(|e| Error::tls("cannot set the session id context", e))
}
