//! TLS pieces shared by the server and the client: the TLS 1.2 pin, certificate names in the
//! original's one-line form, and handshake errors in words.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::io;
use std::os::raw::{c_char, c_int};

use foreign_types::ForeignTypeRef;
use openssl::nid::Nid;
use openssl::ssl::{HandshakeError, SslContextBuilder, SslMode, SslRef, SslVersion};
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult};

use crate::error::{Error, Result};

unsafe extern "C" {
    /// `char *X509_NAME_oneline(const X509_NAME *a, char *buf, int size)`: openssl-sys links
    /// libcrypto but has no binding for it.
    fn X509_NAME_oneline(
        name: *const openssl_sys::X509_NAME,
        buf: *mut c_char,
        size: c_int,
    ) -> *mut c_char;
    /// `int SSL_has_pending(const SSL *s)`: whether OpenSSL holds input not yet returned, read
    /// ahead or decrypted (openssl-sys has no binding for it).
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
}

/// Pins a context to TLS 1.2 as both minimum and maximum, as the original's
/// `TLSv1_2_server_method()` / `TLSv1_2_client_method()` did.
pub fn pin_tls12(ctx: &mut SslContextBuilder) -> Result<()> {
    ctx.set_min_proto_version(Some(SslVersion::TLS1_2))
        .and_then(|()| ctx.set_max_proto_version(Some(SslVersion::TLS1_2)))
        .map_err(|e| Error::tls("cannot pin TLS 1.2", e))
}

/// Settings of both sides that spare each handshake work it does not need: records read
/// whole in one system call where they have arrived (read-ahead, instead of a header read and
/// a body read each), and the certificate chain sent as the PEM file gives it, not looked up
/// again in the trust store at every handshake (`SSL_MODE_NO_AUTO_CHAIN`). Neither changes a
/// byte on the wire.
pub fn spare_handshake_work(ctx: &mut SslContextBuilder) {
    ctx.set_read_ahead(true);
    ctx.set_mode(SslMode::NO_AUTO_CHAIN);
}

/// Whether `ssl` holds input that a read would return without waiting on the socket.
pub fn has_buffered_input(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL; the call only reads its buffers' lengths.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// A name in OpenSSL's one-line form (`/C=../O=../CN=..`), exactly as the original prints it.
pub fn name_oneline(name: &X509NameRef) -> String {
    // SAFETY: with a null buffer X509_NAME_oneline allocates the string it returns (or returns
    // null on allocation failure); we copy it and free it with OPENSSL_free, as its docs say.
    unsafe {
        let line = X509_NAME_oneline(name.as_ptr(), std::ptr::null_mut(), 0);
        if line.is_null() {
            return String::new();
        }
        let text = CStr::from_ptr(line).to_string_lossy().into_owned();
        openssl_sys::OPENSSL_free(line.cast());
        text
    }
}

/// The lines the original's `ShowCerts` prints for the peer's certificate, or `None` when the
/// peer sent none.
pub fn peer_certificate_lines(ssl: &SslRef) -> Option<String> {
    let cert = ssl.peer_certificate()?;
    let mut out = String::from("Server certificates:\n");
    let _ = writeln!(out, "Subject: {}", name_oneline(cert.subject_name()));
    let _ = writeln!(out, "Issuer: {}", name_oneline(cert.issuer_name()));
    Some(out)
}

/// The SHA-256 fingerprint of `cert`'s public key (its DER SubjectPublicKeyInfo), as 64
/// lower-case hex digits: what binds a certificate to an account (docs/PROTOCOL.md says why
/// of the key and not of the whole certificate).
pub fn public_key_fingerprint(cert: &X509Ref) -> Result<String> {
    use sha2::{Digest, Sha256};
    let key = cert
        .public_key()
        .and_then(|key| key.public_key_to_der())
        .map_err(|e| Error::tls("cannot read the certificate's public key", e))?;
    Ok(Sha256::digest(key)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// The [`public_key_fingerprint`] of the certificate the peer presented (kept with the TLS
/// session, so a resumed session has it too), if it presented one.
pub fn peer_key_fingerprint(ssl: &SslRef) -> Option<String> {
    let cert = ssl.peer_certificate()?;
    public_key_fingerprint(&cert)
        .inspect_err(|e| log::warn!("client certificate: {e}"))
        .ok()
}

/// The cipher suite's name, as `SSL_get_cipher` gives it.
pub fn cipher_name(ssl: &SslRef) -> &'static str {
    ssl.current_cipher().map_or("(NONE)", |c| c.name())
}

/// Why a handshake failed, as far as a hint to the user depends on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate is not trusted (or not valid).
    Untrusted,
    /// The certificate is trusted but names another host or address: the names it holds
    /// (subjectAltName DNS and IP entries, then the subject's CN), if it was seen.
    NameMismatch(Vec<String>),
    /// The server refused the handshake because it wants a client certificate
    /// (alert 40 handshake_failure or 116 certificate_required).
    ClientCertificateRequired,
    /// The server does not accept the client certificate given (alert 48 unknown_ca or
    /// 42 bad_certificate, or another certificate alert).
    ClientCertificateRefused,
    /// Anything else.
    Other,
}

/// TLS alerts, as OpenSSL reports a received one: reason code 1000 + the alert's number.
const ALERT_REASON_BASE: c_int = 1000;
const ALERT_HANDSHAKE_FAILURE: c_int = 40;
const ALERT_BAD_CERTIFICATE: c_int = 42;
const ALERT_UNSUPPORTED_CERTIFICATE: c_int = 43;
const ALERT_CERTIFICATE_REVOKED: c_int = 44;
const ALERT_CERTIFICATE_EXPIRED: c_int = 45;
const ALERT_CERTIFICATE_UNKNOWN: c_int = 46;
const ALERT_UNKNOWN_CA: c_int = 48;
const ALERT_CERTIFICATE_REQUIRED: c_int = 116;
/// `X509_V_ERR_HOSTNAME_MISMATCH` and `X509_V_ERR_IP_ADDRESS_MISMATCH`.
const NAME_MISMATCH: [c_int; 2] = [62, 64];

/// Sorts a client's failed handshake into what the user can do about it; `presented` says
/// whether a client certificate was configured.
pub fn classify_handshake_failure<S>(err: &HandshakeError<S>, presented: bool) -> HandshakeFailure {
    let mid = match err {
        HandshakeError::SetupFailure(_) => return HandshakeFailure::Other,
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => mid,
    };
    let verdict = mid.ssl().verify_result();
    if verdict != X509VerifyResult::OK {
        if !NAME_MISMATCH.contains(&verdict.as_raw()) {
            return HandshakeFailure::Untrusted;
        }
        // The leaf is not yet the session's peer certificate when verification fails, but
        // it heads the chain the server sent.
        let names = mid
            .ssl()
            .peer_cert_chain()
            .and_then(|chain| chain.iter().next())
            .map(certificate_names)
            .unwrap_or_default();
        return HandshakeFailure::NameMismatch(names);
    }
    let alerts: Vec<c_int> = mid
        .error()
        .ssl_error()
        .map(|stack| {
            stack
                .errors()
                .iter()
                .map(|e| e.reason_code() - ALERT_REASON_BASE)
                .collect()
        })
        .unwrap_or_default();
    let got = |alert: c_int| alerts.contains(&alert);
    if got(ALERT_CERTIFICATE_REQUIRED) || (got(ALERT_HANDSHAKE_FAILURE) && !presented) {
        HandshakeFailure::ClientCertificateRequired
    } else if presented
        && [
            ALERT_UNKNOWN_CA,
            ALERT_BAD_CERTIFICATE,
            ALERT_UNSUPPORTED_CERTIFICATE,
            ALERT_CERTIFICATE_REVOKED,
            ALERT_CERTIFICATE_EXPIRED,
            ALERT_CERTIFICATE_UNKNOWN,
            ALERT_HANDSHAKE_FAILURE,
        ]
        .into_iter()
        .any(got)
    {
        HandshakeFailure::ClientCertificateRefused
    } else {
        HandshakeFailure::Other
    }
}

/// The names a certificate is valid for: its subjectAltName DNS names and IP addresses, then
/// its subject's common name(s).
pub fn certificate_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    for alt in cert.subject_alt_names().iter().flatten() {
        if let Some(dns) = alt.dnsname() {
            names.push(dns.to_string());
        } else if let Some(ip) = alt.ipaddress() {
            let ip = match ip.len() {
                4 => <[u8; 4]>::try_from(ip).ok().map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(ip).ok().map(std::net::IpAddr::from),
                _ => None,
            };
            names.extend(ip.map(|ip| ip.to_string()));
        }
    }
    for cn in cert.subject_name().entries_by_nid(Nid::COMMONNAME) {
        if let Ok(text) = cn.data().to_string()
            && !names.contains(&text)
        {
            names.push(text);
        }
    }
    names
}

/// A failed handshake in words: the certificate check's verdict when that is what failed, a
/// timeout, or OpenSSL's own reason.
pub fn describe_handshake_error<S>(err: &HandshakeError<S>) -> String {
    match err {
        HandshakeError::SetupFailure(stack) => format!("TLS setup failed: {stack}"),
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => {
            let verdict = mid.ssl().verify_result();
            if verdict != X509VerifyResult::OK {
                return format!(
                    "certificate verification failed: {}",
                    verdict.error_string()
                );
            }
            let error = mid.error();
            match error.io_error() {
                Some(io) => describe_io(io),
                None => match error.ssl_error() {
                    Some(stack) => stack.to_string(),
                    None => "the peer closed the connection".to_string(),
                },
            }
        }
    }
}

/// An io error in words, an expired timeout as "timed out".
pub fn describe_io(e: &io::Error) -> String {
    if is_timeout(e) {
        "timed out".into()
    } else {
        e.to_string()
    }
}

/// Whether an io error is an expired socket timeout (Linux reports `WouldBlock`).
pub fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509Name;

    #[test]
    fn oneline_matches_openssl_form() {
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("C", "IN").unwrap();
        name.append_entry_by_text("O", "aticle world").unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        assert_eq!(name_oneline(&name), "/C=IN/O=aticle world/CN=localhost");
    }

    #[test]
    fn names_come_from_the_alt_names_then_the_cn() {
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::X509;
        use openssl::x509::extension::SubjectAlternativeName;
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "server.example").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        let alt = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .ip("::1")
            .build(&cert.x509v3_context(None, None))
            .unwrap();
        cert.append_extension(alt).unwrap();
        cert.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        assert_eq!(
            certificate_names(&cert.build()),
            ["localhost", "127.0.0.1", "::1", "server.example"]
        );
    }
}
