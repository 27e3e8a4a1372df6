//! What the server sent, as text for people: an account's information one `field: value`
//! line each, and the server's messages, with nothing in them that could act on the terminal
//! or make the text read otherwise.

use crate::xml::account::{AccountView, terminal_text};
use crate::xml::legacy::printable;
use crate::xml::sign_in::{CertificateView, SignInEvent};

/// `view`'s text: one `field: value` line per field; a backslash in a value is written `\\`,
/// a line break `\n`, and other control, invisible or direction-changing characters as
/// `\u{...}`, so every field stays on its line and reads as stored.
pub(super) fn view_text(account: &AccountView) -> String {
    account
        .entries()
        .into_iter()
        .map(|(name, value)| format!("{name}: {}\n", terminal_text(&value)))
        .collect()
}

/// `view`'s text for the portal: as [`view_text`], but a line break in a value starts a new
/// line, indented under the value, so a postal address reads as it is written on a letter.
pub(super) fn portal_view_text(account: &AccountView) -> String {
    account
        .entries()
        .into_iter()
        .map(|(name, value)| {
            let indent = format!("\n{}", " ".repeat(name.len() + 2));
            let lines: Vec<String> = value.split('\n').map(terminal_text).collect();
            format!("{name}: {}\n", lines.join(&indent))
        })
        .collect()
}

/// `certs`' text: one line per enrolled certificate, its fingerprint, when it was enrolled
/// and last used, and its label (as stored, see [`terminal_text`]).
pub(crate) fn certificates_text(certificates: &[CertificateView]) -> String {
    if certificates.is_empty() {
        return "No certificates enrolled.\n".into();
    }
    certificates
        .iter()
        .map(|c| {
            format!(
                "{}  enrolled {}  last used {}  {}\n",
                message(&c.fingerprint),
                message(&c.enrolled_at),
                message(c.last_used_at.as_deref().unwrap_or("never")),
                terminal_text(&c.label)
            )
        })
        .collect()
}

/// `history`'s text: one line per sign-in attempt, newest first: when, from where, how, and
/// what it came to.
pub(crate) fn history_text(events: &[SignInEvent]) -> String {
    if events.is_empty() {
        return "No sign-in attempts recorded.\n".into();
    }
    events
        .iter()
        .map(|event| format!("{}\n", message(&event.to_string())))
        .collect()
}

/// A message from the server, safe to print (see [`printable`]).
pub(super) fn message(text: &str) -> String {
    printable(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_on_one_line_as_stored() {
        let account = AccountView {
            username: "alice".into(),
            fields: [
                "Ali\u{202E}ce".into(),
                "a@b.example".into(),
                String::new(),
                "1 Road\nTown \\ Shire\u{2028}".into(),
            ],
            created_at: "c".into(),
            updated_at: "u".into(),
            last_login_at: None,
            version: 2,
        };
        let text = view_text(&account);
        assert!(text.contains("full_name: Ali\\u{202e}ce\n"), "{text}");
        assert!(
            text.contains("address: 1 Road\\nTown \\\\ Shire\\u{2028}\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 9);
        let shown = portal_view_text(&account);
        assert!(
            shown.contains("address: 1 Road\n         Town \\\\ Shire\\u{2028}\n"),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 10);
        assert_eq!(message("x\u{200B}y\u{1b}"), "x\\u{200b}y\\x1b");
    }
}
