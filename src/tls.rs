//! TLS pieces shared by the server and the client: the TLS 1.2 pin, certificate names in the
//! original's one-line form, and handshake errors in words.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::io;
use std::os::raw::{c_char, c_int};

use foreign_types::ForeignTypeRef;
use openssl::ssl::{HandshakeError, SslContextBuilder, SslRef, SslVersion};
use openssl::x509::{X509NameRef, X509VerifyResult};

use crate::error::{Error, Result};

unsafe extern "C" {
    /// `char *X509_NAME_oneline(const X509_NAME *a, char *buf, int size)`: openssl-sys links
    /// libcrypto but has no binding for it.
    fn X509_NAME_oneline(
        name: *const openssl_sys::X509_NAME,
        buf: *mut c_char,
        size: c_int,
    ) -> *mut c_char;
}

/// Pins a context to TLS 1.2 as both minimum and maximum, as the original's
/// `TLSv1_2_server_method()` / `TLSv1_2_client_method()` did.
pub fn pin_tls12(ctx: &mut SslContextBuilder) -> Result<()> {
    ctx.set_min_proto_version(Some(SslVersion::TLS1_2))
        .and_then(|()| ctx.set_max_proto_version(Some(SslVersion::TLS1_2)))
        .map_err(|e| Error::tls("cannot pin TLS 1.2", e))
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

/// The cipher suite's name, as `SSL_get_cipher` gives it.
pub fn cipher_name(ssl: &SslRef) -> &'static str {
    ssl.current_cipher().map_or("(NONE)", |c| c.name())
}

/// Whether a handshake failed because the peer's certificate did not pass verification.
pub fn failed_verification<S>(err: &HandshakeError<S>) -> bool {
    match err {
        HandshakeError::SetupFailure(_) => false,
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => {
            mid.ssl().verify_result() != X509VerifyResult::OK
        }
    }
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
}
