//! Signing in with a certificate, and the sign-in history: the values the protocol carries
//! for them (an enrolled certificate, a sign-in event, the "Last sign-in" summary), their
//! policies and their XML.

use std::fmt;

use xmltree::{Element, XMLNode};

use super::account::{PolicyError, check_text};
use super::document::{child_elements, text, text_element};

/// Hex digits in a fingerprint: a SHA-256 digest.
pub const FINGERPRINT_HEX_LEN: usize = 64;
/// The longest label of an enrolled certificate, in characters.
pub const LABEL_MAX_CHARS: usize = 64;
/// The most certificates one account may have enrolled.
pub const MAX_CERTIFICATES: usize = 10;
/// The sign-in events kept per account; older ones are removed.
pub const HISTORY_KEPT: usize = 50;

/// A fingerprint as typed (64 hex digits, in either case, with or without `:` between bytes,
/// with or without a leading `SHA256:`) in the form stored and shown: 64 lower-case hex
/// digits.
pub fn parse_fingerprint(typed: &str) -> Result<String, PolicyError> {
    let trimmed = typed.trim();
    let digits: String = trimmed
        .strip_prefix("SHA256:")
        .or_else(|| trimmed.strip_prefix("sha256:"))
        .unwrap_or(trimmed)
        .chars()
        .filter(|&c| c != ':')
        .collect();
    if digits.len() != FINGERPRINT_HEX_LEN || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PolicyError(format!(
            "fingerprint: not a SHA-256 fingerprint ({FINGERPRINT_HEX_LEN} hex digits, as \
             `certs` lists them)"
        )));
    }
    Ok(digits.to_ascii_lowercase())
}

/// Checks a certificate's label: at most [`LABEL_MAX_CHARS`] characters on one line, nothing
/// invisible, no white space around it (empty: no label).
pub fn check_label(label: &str) -> Result<(), PolicyError> {
    check_text("label", label, LABEL_MAX_CHARS, false)
}

/// How a sign-in was attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInMethod {
    /// A user name and password (`login`).
    Password,
    /// An enrolled client certificate (`certlogin`).
    Certificate,
    /// The original's legacy exchange.
    Legacy,
}

impl SignInMethod {
    const ALL: [SignInMethod; 3] = [
        SignInMethod::Password,
        SignInMethod::Certificate,
        SignInMethod::Legacy,
    ];

    /// The method's name on the wire and in the store.
    pub fn name(self) -> &'static str {
        match self {
            SignInMethod::Password => "password",
            SignInMethod::Certificate => "certificate",
            SignInMethod::Legacy => "legacy",
        }
    }

    /// The method called `name`.
    pub fn from_name(name: &str) -> Option<SignInMethod> {
        SignInMethod::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// In words: "password", "certificate", "legacy exchange".
impl fmt::Display for SignInMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            SignInMethod::Legacy => "legacy exchange",
            other => other.name(),
        })
    }
}

/// What a sign-in attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInOutcome {
    /// Signed in.
    SignedIn,
    /// The password was wrong.
    WrongPassword,
    /// The certificate is not enrolled for the account.
    UnknownCertificate,
    /// Refused without checking: too many attempts.
    Throttled,
    /// The credentials were right, but the operator locked the account.
    Locked,
}

impl SignInOutcome {
    const ALL: [SignInOutcome; 5] = [
        SignInOutcome::SignedIn,
        SignInOutcome::WrongPassword,
        SignInOutcome::UnknownCertificate,
        SignInOutcome::Throttled,
        SignInOutcome::Locked,
    ];

    /// The outcome's name on the wire and in the store.
    pub fn name(self) -> &'static str {
        match self {
            SignInOutcome::SignedIn => "signed-in",
            SignInOutcome::WrongPassword => "wrong-password",
            SignInOutcome::UnknownCertificate => "unknown-certificate",
            SignInOutcome::Throttled => "throttled",
            SignInOutcome::Locked => "locked",
        }
    }

    /// The outcome called `name`.
    pub fn from_name(name: &str) -> Option<SignInOutcome> {
        SignInOutcome::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// In words: "signed in", "wrong password", "certificate not enrolled", ...
impl fmt::Display for SignInOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            SignInOutcome::SignedIn => "signed in",
            SignInOutcome::WrongPassword => "wrong password",
            SignInOutcome::UnknownCertificate => "certificate not enrolled",
            SignInOutcome::Throttled => "throttled",
            SignInOutcome::Locked => "locked",
        })
    }
}

/// One sign-in attempt on an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInEvent {
    /// When (ISO 8601, UTC).
    pub at: String,
    /// The client's address (behind a load balancer, the one its PROXY header gave).
    pub address: String,
    /// How.
    pub method: SignInMethod,
    /// What it came to.
    pub outcome: SignInOutcome,
}

/// One line: `TIME  ADDRESS  METHOD  OUTCOME`, in columns.
impl fmt::Display for SignInEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  {:<39}  {:<15}  {}",
            self.at, self.address, self.method, self.outcome
        )
    }
}

/// What a user is told on signing in: the sign-in before this one, if the history holds one,
/// and how many attempts failed since (of those the history holds, if none: it keeps the
/// newest 50, and none from before the store's schema 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSignIn {
    /// The last successful sign-in before this one.
    pub previous: Option<SignInEvent>,
    /// Attempts that did not sign in since then.
    pub failed_since: u32,
}

/// `Last sign-in: TIME from ADDRESS (METHOD); N failed attempts since.`
impl fmt::Display for LastSignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = match self.failed_since {
            1 => "1 failed attempt".to_string(),
            n => format!("{n} failed attempts"),
        };
        match &self.previous {
            Some(event) => write!(
                f,
                "Last sign-in: {} from {} ({}); {failed} since.",
                event.at, event.address, event.method
            ),
            None => write!(f, "Last sign-in: none on record; {failed} on record."),
        }
    }
}

/// A certificate enrolled for an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateView {
    /// The SHA-256 fingerprint of its public key ([`parse_fingerprint`]'s form).
    pub fingerprint: String,
    /// The label given when it was enrolled (may be empty).
    pub label: String,
    /// When it was enrolled (ISO 8601, UTC).
    pub enrolled_at: String,
    /// When it last signed in, if ever.
    pub last_used_at: Option<String>,
}

/// An `<event>` element.
pub(super) fn event_element(event: &SignInEvent) -> Element {
    let mut el = Element::new("event");
    for (name, value) in [
        ("at", event.at.as_str()),
        ("address", &event.address),
        ("method", event.method.name()),
        ("outcome", event.outcome.name()),
    ] {
        el.children
            .push(XMLNode::Element(text_element(name, value)));
    }
    el
}

/// A [`SignInEvent`] from its `<event>` element.
pub(super) fn read_event(el: &Element) -> Result<SignInEvent, String> {
    let get = |name: &str| el.get_child(name).map(text).unwrap_or_default();
    Ok(SignInEvent {
        at: get("at"),
        address: get("address"),
        method: SignInMethod::from_name(&get("method"))
            .ok_or("<event> without a known <method>")?,
        outcome: SignInOutcome::from_name(&get("outcome"))
            .ok_or("<event> without a known <outcome>")?,
    })
}

/// A `<last_sign_in>` element: the previous sign-in's `<event>` if any, and `<failed_since>`.
pub(super) fn last_sign_in_element(last: &LastSignIn) -> Element {
    let mut el = Element::new("last_sign_in");
    if let Some(event) = &last.previous {
        el.children.push(XMLNode::Element(event_element(event)));
    }
    el.children.push(XMLNode::Element(text_element(
        "failed_since",
        &last.failed_since.to_string(),
    )));
    el
}

/// A [`LastSignIn`] from its `<last_sign_in>` element.
pub(super) fn read_last_sign_in(el: &Element) -> Result<LastSignIn, String> {
    Ok(LastSignIn {
        previous: el.get_child("event").map(read_event).transpose()?,
        failed_since: el
            .get_child("failed_since")
            .map(text)
            .and_then(|n| n.parse().ok())
            .ok_or("<last_sign_in> without a valid <failed_since>")?,
    })
}

/// A `<certificate>` element.
pub(super) fn certificate_element(cert: &CertificateView) -> Element {
    let mut el = Element::new("certificate");
    for (name, value) in [
        ("fingerprint", cert.fingerprint.as_str()),
        ("label", &cert.label),
        ("enrolled_at", &cert.enrolled_at),
        ("last_used_at", cert.last_used_at.as_deref().unwrap_or("")),
    ] {
        el.children
            .push(XMLNode::Element(text_element(name, value)));
    }
    el
}

/// A [`CertificateView`] from its `<certificate>` element.
pub(super) fn read_certificate(el: &Element) -> CertificateView {
    let get = |name: &str| el.get_child(name).map(text).unwrap_or_default();
    let last_used = get("last_used_at");
    CertificateView {
        fingerprint: get("fingerprint"),
        label: get("label"),
        enrolled_at: get("enrolled_at"),
        last_used_at: (!last_used.is_empty()).then_some(last_used),
    }
}

/// The items of a list element (`<history>`, `<certificates>`), each read by `read`.
pub(super) fn read_list<T>(
    el: &Element,
    read: impl Fn(&Element) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    child_elements(el).map(read).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_any_usual_form() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for typed in [
            hex.clone(),
            hex.to_uppercase(),
            colons.clone(),
            format!("SHA256:{colons}"),
            format!(" {hex} "),
        ] {
            assert_eq!(parse_fingerprint(&typed).unwrap(), hex, "{typed}");
        }
        for bad in [
            "",
            "ab",
            &"ab".repeat(33),
            &"zz".repeat(32),
            &"a".repeat(63),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert!(check_label("").is_ok());
        assert!(check_label("laptop (work)").is_ok());
        assert!(check_label(&"x".repeat(LABEL_MAX_CHARS)).is_ok());
        assert!(check_label(&"x".repeat(LABEL_MAX_CHARS + 1)).is_err());
        assert!(check_label("two\nlines").is_err());
        assert!(check_label(" padded").is_err());
    }

    #[test]
    fn the_last_sign_in_line() {
        let previous = SignInEvent {
            at: "2026-12-03T10:00:00.000Z".into(),
            address: "127.0.0.2".into(),
            method: SignInMethod::Certificate,
            outcome: SignInOutcome::SignedIn,
        };
        let last = LastSignIn {
            previous: Some(previous),
            failed_since: 2,
        };
        assert_eq!(
            last.to_string(),
            "Last sign-in: 2026-12-03T10:00:00.000Z from 127.0.0.2 (certificate); 2 failed \
             attempts since."
        );
        let first = LastSignIn {
            previous: None,
            failed_since: 1,
        };
        assert_eq!(
            first.to_string(),
            "Last sign-in: none on record; 1 failed attempt on record."
        );
        for m in SignInMethod::ALL {
            assert_eq!(SignInMethod::from_name(m.name()), Some(m));
        }
        for o in SignInOutcome::ALL {
            assert_eq!(SignInOutcome::from_name(o.name()), Some(o));
        }
    }
}
