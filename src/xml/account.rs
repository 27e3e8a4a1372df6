//! What an account holds, and the policy for each value: one definition used alike by the XML
//! protocol, the client's `--set FIELD=VALUE` and `view`'s output.

use std::fmt;

/// Shortest and longest user name, in bytes (ASCII only).
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;
/// Shortest and longest password, in bytes, for signup and password changes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;

/// The information a user keeps about themself, each value changeable with `update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// The user's full name.
    FullName,
    /// An e-mail address.
    Email,
    /// A telephone number.
    Phone,
    /// A postal address; may span several lines.
    Address,
}

impl Field {
    /// Every field, in the order they are shown.
    pub const ALL: [Field; 4] = [Field::FullName, Field::Email, Field::Phone, Field::Address];

    /// The field's name in XML, in `--set` and in `view`'s output.
    pub fn name(self) -> &'static str {
        match self {
            Field::FullName => "full_name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Address => "address",
        }
    }

    /// The field called `name`.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The longest value accepted, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            Field::FullName => 128,
            Field::Email => 254,
            Field::Phone => 32,
            Field::Address => 512,
        }
    }

    /// Checks a value against the field's policy; the empty value (clearing the field) is
    /// always accepted. The error says what is wrong, naming the field.
    pub fn check(self, value: &str) -> Result<(), PolicyError> {
        if value.is_empty() {
            return Ok(());
        }
        check_text(self.name(), value, self.max_chars(), self == Field::Address)?;
        let fail = |why: &str| Err(PolicyError(format!("{}: {why}", self.name())));
        match self {
            Field::Email if !is_email(value) => fail("not an e-mail address (name@domain.example)"),
            Field::Phone if !is_phone(value) => {
                fail("a telephone number has digits, spaces and + ( ) - . only")
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value outside the policy, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a text value given as the element `name`: at most `max_chars` characters, no
/// control characters (but line breaks if `multi_line`), nothing invisible or
/// direction-changing, no leading or trailing white space.
pub fn check_text(
    name: &str,
    value: &str,
    max_chars: usize,
    multi_line: bool,
) -> Result<(), PolicyError> {
    let fail = |why: &str| Err(PolicyError(format!("{name}: {why}")));
    if value.chars().count() > max_chars {
        return fail(&format!("longer than {max_chars} characters"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(multi_line && c == '\n'))
    {
        return fail(if multi_line {
            "control characters other than line breaks are not allowed"
        } else {
            "control characters and line breaks are not allowed"
        });
    }
    if value.chars().any(is_invisible) {
        return fail("invisible or direction-changing characters are not allowed");
    }
    if value.trim() != value {
        return fail("leading or trailing white space is not allowed");
    }
    Ok(())
}

/// Checks a user name: 3 to 32 of letters, digits, `.`, `_` and `-` (so bytes and characters
/// count alike).
pub fn check_username(name: &str) -> Result<(), PolicyError> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(PolicyError(
            "username: only letters, digits, '.', '_' and '-' are allowed".into(),
        ));
    }
    if !USERNAME_LEN.contains(&name.len()) {
        return Err(PolicyError(format!(
            "username: must be {} to {} characters long",
            USERNAME_LEN.start(),
            USERNAME_LEN.end()
        )));
    }
    Ok(())
}

/// Checks a new password, given as the element `name`: 8 to 1024 bytes.
pub fn check_new_password(name: &str, password: &str) -> Result<(), PolicyError> {
    if !PASSWORD_LEN.contains(&password.len()) {
        return Err(PolicyError(format!(
            "{name}: must be {} to {} bytes long",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        )));
    }
    Ok(())
}

/// A stored value as text for a terminal: a backslash written `\\`, a line break `\n`, and
/// other control, invisible or direction-changing characters ([`is_invisible`]) as
/// `\u{...}`, so the value stays on its line, reads as stored and cannot act on the terminal.
/// The client's `view` and the operator's `show` and `list` print values so.
pub fn terminal_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() || is_invisible(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` changes how text reads without being seen: the bidirectional marks,
/// embeddings, overrides and isolates, zero-width characters and joiners, the line and
/// paragraph separators, and other invisible format characters. Refused in fields, and
/// escaped wherever received text is printed.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    !local.is_empty()
        && local.len() <= 64
        && !local.contains(['@', ' ', '"', '<', '>', '(', ')', ',', ';', ':', '\\'])
        && domain.contains('.')
        && labels_ok
}

fn is_phone(value: &str) -> bool {
    value.chars().filter(char::is_ascii_digit).count() >= 3
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '(' | ')' | '-' | '.'))
}

/// Everything stored about an account except its password hash: what `view` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    /// The user name, as chosen at signup.
    pub username: String,
    /// The values of [`Field::ALL`], in that order.
    pub fields: [String; 4],
    /// When the account was made (ISO 8601, UTC).
    pub created_at: String,
    /// When its information or password last changed.
    pub updated_at: String,
    /// When its owner last logged in, if ever.
    pub last_login_at: Option<String>,
    /// Counts changes; an update may name the version it expects.
    pub version: i64,
}

impl AccountView {
    /// The value of one field.
    pub fn get(&self, field: Field) -> &str {
        &self.fields[field as usize]
    }

    /// Every value as `(name, value)`, in the order `view` shows them.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("username", self.username.clone())];
        out.extend(Field::ALL.map(|f| (f.name(), self.get(f).to_string())));
        out.extend([
            ("created_at", self.created_at.clone()),
            ("updated_at", self.updated_at.clone()),
            (
                "last_login_at",
                self.last_login_at.clone().unwrap_or_default(),
            ),
            ("version", self.version.to_string()),
        ]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        assert_eq!(Field::from_name("password"), None);
        assert_eq!(Field::from_name("username"), None);
    }

    #[test]
    fn usernames() {
        for good in ["abc", "aticle", "a.b_c-d", "X9Y", &"u".repeat(32)] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            &"u".repeat(33),
            "al ice",
            "al/ice",
            "ålice",
            "a<b",
            "",
        ] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        // Characters are checked first, so a length is always a count of characters.
        let accented = check_username(&"\u{e5}".repeat(20)).unwrap_err();
        assert!(accented.0.contains("only letters"), "{accented}");
    }

    #[test]
    fn passwords() {
        assert!(check_new_password("password", "12345678").is_ok());
        let short = check_new_password("new_password", "1234567").unwrap_err();
        assert!(short.0.starts_with("new_password: "));
        assert!(check_new_password("password", &"p".repeat(1024)).is_ok());
        assert!(check_new_password("password", &"p".repeat(1025)).is_err());
    }

    #[test]
    fn field_policies() {
        use Field::*;
        for (field, good) in [
            (FullName, "Amlendra Kumar"),
            (Email, "a.b+c@example.co.uk"),
            (Phone, "+91 (11) 555-0100"),
            (Address, "1 Main St\nDelhi"),
            (Email, ""),
        ] {
            assert!(field.check(good).is_ok(), "{field}: {good:?}");
        }
        for (field, bad) in [
            (FullName, "tab\there"),
            (FullName, "two\nlines"),
            (FullName, " padded"),
            (Email, "no-at-sign"),
            (Email, "a@nodot"),
            (Email, "a@b..c"),
            (Email, "a b@c.d"),
            (Phone, "call me"),
            (Phone, "12"),
            (Address, "bell\u{7}"),
            (FullName, "Ali\u{202E}ce"),
            (FullName, "zero\u{200B}width"),
            (Address, "1 Road\u{2028}Town"),
        ] {
            let err = field.check(bad).unwrap_err();
            assert!(err.0.starts_with(field.name()), "{err}");
        }
        assert!(FullName.check(&"x".repeat(129)).is_err());
        let hidden = FullName.check("Ali\u{202E}ce").unwrap_err();
        assert_eq!(
            hidden.0,
            "full_name: invisible or direction-changing characters are not allowed"
        );
        assert!(Address.check(&"x".repeat(512)).is_ok());
    }
}
