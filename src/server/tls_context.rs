//! The server's TLS context: the original's `InitServerCTX` and `LoadCertificates`, client
//! certificates (mutual TLS), and the context's renewal, which replaces the session-ticket
//! keys.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::thread;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::{Id, PKey, Private};
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use openssl::x509::{X509, X509Name, X509Ref};

use super::config::{CertificateFiles, ServerConfig};
use super::listener::Shutdown;
use super::ticket_keys::{load_ticket_keys, set_ticket_keys};
use crate::error::{Error, Result};
use crate::secret_file::read_private;
use crate::tls;

/// The most a private key file may hold (its certificate chain included, if in one file).
const MAX_KEY_FILE_LEN: u64 = 1 << 20;

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
    /// (which rereads every certificate and key). Without `--ticket-key-file`, OpenSSL draws
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

/// The whole TLS set-up of the server: context, certificates and keys, client verification,
/// and the session-ticket keys of `--ticket-key-file` if given.
fn build_acceptor(config: &ServerConfig) -> Result<SslAcceptor> {
    let mut ctx = init_server_ctx(config.allow_tls13)?;
    load_certificates(&mut ctx, &config.certificates)?;
    match &config.verify_client {
        Some(ca_file) => require_client_certificates(&mut ctx, ca_file)?,
        None => request_client_certificates(&mut ctx)?,
    }
    if !config.ticket_key_files.is_empty() {
        set_ticket_keys(&mut ctx, load_ticket_keys(&config.ticket_key_files)?)?;
    }
    Ok(ctx.build())
}

/// Ports `LoadCertificates(ctx, CertFile, KeyFile)`, for each certificate in turn: loads the
/// certificate (chain) and its private key (both may be in one PEM file) and checks that they
/// belong together.
///
/// OpenSSL keeps one certificate and key per key type (RSA, ECDSA, ...) and chooses for each
/// client one that the client's cipher suites and signature algorithms allow, taking the
/// suites in the client's order of preference. A second certificate of a type already loaded
/// would silently take the first one's place, so it is refused, naming both files.
pub(crate) fn load_certificates(
    ctx: &mut SslContextBuilder,
    certificates: &[CertificateFiles],
) -> Result<()> {
    let mut loaded: Vec<(Id, &Path)> = Vec::new();
    for CertificateFiles { cert, key } in certificates {
        check_readable("certificate file", cert)?;
        let private_key = read_private_key(key)?;
        ctx.set_certificate_chain_file(cert)
            .map_err(|e| pem_error("certificate", cert, e))?;
        let leaf = current_certificate(ctx)
            .ok_or_else(|| Error::Config(format!("no certificate in {}", cert.display())))?;
        let kind = leaf
            .public_key()
            .map_err(|e| Error::tls(format!("cannot read the key of {}", cert.display()), e))?
            .id();
        if let Some((_, first)) = loaded.iter().find(|(seen, _)| *seen == kind) {
            let what = if first == cert {
                format!("{} is given twice as --cert", cert.display())
            } else {
                format!(
                    "{} and {} are both {} certificates",
                    first.display(),
                    cert.display(),
                    key_type_name(kind)
                )
            };
            return Err(Error::Config(format!(
                "{what}; give at most one certificate per key type (an RSA and an ECDSA one: \
                 `make cert KEY=ec` writes mycert-ec.pem)"
            )));
        }
        let mismatch = || {
            Error::Config(format!(
                "the private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ))
        };
        ctx.set_private_key(&private_key).map_err(|e| {
            if has_reason(&e, "key values mismatch") {
                mismatch()
            } else {
                pem_error("private key", key, e)
            }
        })?;
        // The key went to the place of its own type, which `check_private_key` checks: of
        // another type than the certificate, it may match another certificate there while
        // this one stays without a key, so the certificate in that place must be this one.
        let belongs = ctx.check_private_key().is_ok()
            && current_certificate(ctx).is_some_and(|current| current == leaf);
        if !belongs {
            return Err(mismatch());
        }
        log::debug!(
            "{} certificate {} with the key in {}",
            key_type_name(kind),
            cert.display(),
            key.display()
        );
        loaded.push((kind, cert));
    }
    Ok(())
}

/// The certificate in the context's current place: that of the key type last loaded.
fn current_certificate(ctx: &SslContextBuilder) -> Option<X509> {
    // SAFETY: `SSL_CTX_get0_certificate` (which the builder does not wrap) gives the context's
    // own certificate or null, without a reference of its own; it is copied (`to_owned` takes
    // a reference) while `ctx` is borrowed, so it cannot be freed meanwhile.
    unsafe {
        let cert = openssl_sys::SSL_CTX_get0_certificate(ctx.as_ptr());
        (!cert.is_null()).then(|| X509Ref::from_ptr(cert).to_owned())
    }
}

/// A key type as people name it in TLS.
fn key_type_name(kind: Id) -> String {
    match kind {
        Id::RSA => "RSA".into(),
        Id::RSA_PSS => "RSA-PSS".into(),
        Id::EC => "ECDSA".into(),
        Id::ED25519 => "Ed25519".into(),
        Id::ED448 => "Ed448".into(),
        Id::DSA => "DSA".into(),
        other => format!("key type {}", other.as_raw()),
    }
}

/// Opens `path`, a file the server needs (`what`: "certificate file"), or says why it
/// cannot.
fn open_readable(what: &str, path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (`make cert` writes a self-signed mycert.pem, `make cert KEY=ec` an ECDSA \
             mycert-ec.pem)"
        } else {
            ""
        };
        Error::Config(format!("cannot read {what} {}: {e}{hint}", path.display()))
    })
}

fn check_readable(what: &str, path: &Path) -> Result<()> {
    open_readable(what, path).map(drop)
}

/// The private key in the PEM file `path`, read from the file whose permissions were checked
/// (OpenSSL's `SSL_CTX_use_PrivateKey_file` would open the path again); the file's bytes are
/// wiped once parsed.
fn read_private_key(path: &Path) -> Result<PKey<Private>> {
    let file = open_readable("key file", path)?;
    let pem = read_private("private key file", path, file, MAX_KEY_FILE_LEN + 1)?;
    if pem.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::Config(format!(
            "the private key file {} holds more than {} KiB; a key is a few KiB",
            path.display(),
            MAX_KEY_FILE_LEN / 1024
        )));
    }
    PKey::private_key_from_pem(&pem).map_err(|e| pem_error("private key", path, e))
}

/// Whether OpenSSL gave `reason` among the errors of `stack`.
fn has_reason(stack: &ErrorStack, reason: &str) -> bool {
    stack.errors().iter().any(|e| e.reason() == Some(reason))
}

fn pem_error(what: &str, path: &Path, stack: ErrorStack) -> Error {
    let has = |reason: &str| has_reason(&stack, reason);
    if has("ee key too small") || has("ca key too small") {
        Error::Config(format!(
            "the key of {} is too small for OpenSSL's security level (ee key too small); \
             make a 2048-bit one with `make cert FORCE=1`",
            path.display()
        ))
    } else {
        Error::tls(format!("cannot load {what} from {}", path.display()), stack)
    }
}

/// Asks every client for a certificate, without requiring one or any CA: a client that
/// presents none is served as before, and one that presents any certificate, self-signed
/// included, proves in the handshake that it holds the certificate's key. Who it is comes
/// only from an account that enrolled that key (`certlogin`), never from the certificate's
/// names.
fn request_client_certificates(ctx: &mut SslContextBuilder) -> Result<()> {
    ctx.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    set_session_id_context(ctx, "ssc-request")
}

/// A session cache that resumes sessions with their client certificate: required when
/// client certificates are asked for, or resumed sessions fail ("session id context
/// uninitialized"). The context names how the certificate was checked (`context`, at most
/// 32 bytes): a session made where any certificate was taken is not resumed where only a
/// CA's are, even with shared ticket keys.
fn set_session_id_context(ctx: &mut SslContextBuilder, context: &str) -> Result<()> {
    ctx.set_session_id_context(context.as_bytes())
        .map_err(|e| Error::tls("cannot set the session id context", e))
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
    // Named by the CAs' file: sessions resume only where the same CAs are required.
    let cas = std::fs::read(ca_file).map_err(|e| Error::file("client CA file", ca_file, e))?;
    let digest: String = openssl::sha::sha256(&cas)[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    set_session_id_context(ctx, &format!("ssc-ca:{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn rsa_key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn ec_key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// A self-signed certificate for `key` in `dir/file`, with `key_in_file` after it if
    /// given (mode 0600, as the server wants key files).
    fn write_certificate(
        dir: &Path,
        file: &str,
        key: &PKey<Private>,
        key_in_file: Option<&PKey<Private>>,
    ) -> PathBuf {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut cert = X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
        cert.set_serial_number(&serial).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(key, MessageDigest::sha256()).unwrap();
        let mut pem = cert.build().to_pem().unwrap();
        if let Some(key) = key_in_file {
            pem.extend(key.private_key_to_pem_pkcs8().unwrap());
        }
        let path = dir.join(file);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn load(pairs: &[(&Path, &Path)]) -> Result<()> {
        let pairs: Vec<CertificateFiles> = pairs
            .iter()
            .map(|(cert, key)| CertificateFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
            .collect();
        let mut ctx = init_server_ctx(false)?;
        load_certificates(&mut ctx, &pairs)
    }

    #[test]
    fn one_certificate_per_key_type_each_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (rsa, ec, other_rsa) = (rsa_key(), ec_key(), rsa_key());
        let rsa_pem = write_certificate(dir.path(), "rsa.pem", &rsa, Some(&rsa));
        let ec_pem = write_certificate(dir.path(), "ec.pem", &ec, Some(&ec));
        let other_pem = write_certificate(dir.path(), "other.pem", &other_rsa, Some(&other_rsa));
        // The key in another file.
        let ec_alone = write_certificate(dir.path(), "ec-cert.pem", &ec, None);

        load(&[(&rsa_pem, &rsa_pem), (&ec_pem, &ec_pem)]).unwrap();
        load(&[(&ec_alone, &ec_pem), (&rsa_pem, &rsa_pem)]).unwrap();

        let error = |pairs: &[(&Path, &Path)]| load(pairs).unwrap_err().to_string();
        let two_rsa = error(&[(&rsa_pem, &rsa_pem), (&other_pem, &other_pem)]);
        assert!(
            two_rsa.starts_with(&format!(
                "{} and {} are both RSA certificates; give at most one certificate per key type",
                rsa_pem.display(),
                other_pem.display()
            )),
            "{two_rsa}"
        );
        let twice = error(&[(&ec_pem, &ec_pem), (&ec_pem, &ec_pem)]);
        assert!(
            twice.starts_with(&format!(
                "{} is given twice as --cert; give at most one certificate per key type",
                ec_pem.display()
            )),
            "{twice}"
        );
        let mismatch = |key: &Path, cert: &Path| {
            format!(
                "the private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            )
        };
        // A key of the same type as the certificate, another one.
        assert_eq!(
            error(&[(&rsa_pem, &other_pem)]),
            mismatch(&other_pem, &rsa_pem)
        );
        // A key of another type, with no certificate in its place, then with the one that
        // it belongs to there: OpenSSL's `check_private_key` alone would pass the second.
        assert_eq!(error(&[(&ec_pem, &rsa_pem)]), mismatch(&rsa_pem, &ec_pem));
        assert_eq!(
            error(&[(&rsa_pem, &rsa_pem), (&ec_alone, &rsa_pem)]),
            mismatch(&rsa_pem, &ec_alone)
        );
    }
}
