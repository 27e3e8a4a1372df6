//! The library's one error type.

use std::fmt;
use std::io;
use std::path::Path;

/// The result type used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in words a user can act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; `context` says what was being done.
    Io {
        /// What was being done, e.g. "cannot open certificate file mycert.pem".
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// OpenSSL refused something; `context` says what was being done.
    Tls {
        /// What was being done.
        context: String,
        /// OpenSSL's error queue at the time.
        source: openssl::error::ErrorStack,
    },
    /// The account store failed; the source says how, in the backend's words.
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// An account with this user name exists already.
    UserExists(String),
    /// The account does not exist (any more).
    NoSuchAccount,
    /// The password given to confirm a change is not the account's.
    WrongPassword,
    /// The account changed since the version the caller saw.
    Conflict,
    /// A session's account is gone, or the operator reset its password or locked it, since
    /// the session logged in; the text says which.
    SessionEnded(&'static str),
    /// The certificate is enrolled for the account already.
    CertificateEnrolled,
    /// No certificate with that fingerprint is enrolled for the account.
    NoSuchCertificate,
    /// The account has as many certificates enrolled as it may have.
    TooManyCertificates,
    /// Too many password hashes are being computed; the wait for a turn ran out.
    Busy,
    /// Too many failed (or successful) password checks, or signups: try again after this
    /// long.
    Throttled(std::time::Duration, crate::db::Limit),
    /// The connection to the server failed or was closed; the text says how.
    ConnectionLost(String),
    /// A stored password hash cannot be read (damaged or foreign database).
    BadPasswordHash(String),
    /// The TLS handshake with the server failed; the text says with whom and why.
    Handshake(String),
    /// The peer sent something this program cannot read; the text says what.
    Protocol(String),
    /// What the user typed or gave cannot be used (too long, not UTF-8, ended); the text says
    /// which and why.
    Input(String),
    /// A setting or file is unusable; the text says which and why.
    Config(String),
    /// The account database's schema is not at this program's version: newer than this
    /// program knows, or older and not to be migrated by this opening.
    Schema {
        /// The version the database is at (0: no schema yet).
        found: i64,
        /// This program's version.
        known: i64,
    },
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Tls`] with its context.
    pub fn tls(context: impl Into<String>, source: openssl::error::ErrorStack) -> Self {
        Error::Tls {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Io`] for a file that could not be opened or read.
    pub fn file(what: &str, path: &Path, source: io::Error) -> Self {
        Error::io(format!("cannot read {what} {}", path.display()), source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Tls { context, source } => write!(f, "{context}: {source}"),
            Error::Store(e) => write!(f, "account database: {}", with_causes(e.as_ref())),
            Error::UserExists(name) => write!(f, "an account named {name:?} exists already"),
            Error::NoSuchAccount => f.write_str("the account does not exist"),
            Error::WrongPassword => f.write_str("the password is wrong"),
            Error::Conflict => f.write_str("the account was changed meanwhile"),
            Error::SessionEnded(why) => write!(f, "the session ended: {why}"),
            Error::CertificateEnrolled => {
                f.write_str("the certificate is enrolled for the account already")
            }
            Error::NoSuchCertificate => {
                f.write_str("no certificate with that fingerprint is enrolled for the account")
            }
            Error::TooManyCertificates => write!(
                f,
                "an account may have at most {} certificates enrolled",
                crate::xml::sign_in::MAX_CERTIFICATES
            ),
            Error::Busy => f.write_str("the server is busy hashing passwords"),
            Error::Throttled(wait, _) => write!(
                f,
                "too many attempts; retry after {} s",
                wait.as_secs_f64().ceil()
            ),
            Error::ConnectionLost(why) => write!(f, "the connection to the server was lost: {why}"),
            Error::BadPasswordHash(why) => write!(f, "stored password hash unreadable: {why}"),
            Error::Handshake(why)
            | Error::Protocol(why)
            | Error::Input(why)
            | Error::Config(why) => f.write_str(why),
            Error::Schema { found, known } if found > known => write!(
                f,
                "account database schema version {found} is newer than this program knows \
                 ({known}); use a newer server"
            ),
            Error::Schema { found, known } => write!(
                f,
                "account database schema version {found} is older than this program's \
                 ({known}) and was not migrated"
            ),
        }
    }
}

/// `e` and each of its causes not already said, after one another: a driver's own words may
/// be only "db error" or "error connecting to server", and its causes say what.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = inner.source();
    }
    text
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tls { source, .. } => Some(source),
            Error::Store(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}
