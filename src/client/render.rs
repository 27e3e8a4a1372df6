//! An account's information as text for people: one `field: value` line each.

use crate::xml::account::AccountView;

/// `view`'s text: one `field: value` line per field; a backslash in a value is written `\\`
/// and a line break `\n`, so every field stays on its line.
pub(super) fn view_text(account: &AccountView) -> String {
    account
        .entries()
        .into_iter()
        .map(|(name, value)| {
            format!(
                "{name}: {}\n",
                value.replace('\\', "\\\\").replace('\n', "\\n")
            )
        })
        .collect()
}
