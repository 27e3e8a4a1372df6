//! The legacy exchange of the original programs, as exact bytes.
//!
//! The original's "XML" is not well-formed (`<UserName>` and `<Password>` are never closed and
//! the body ends with `<\Body>`), so it is built and read as exact byte templates, not by an
//! XML parser. docs/LEGACY.md describes every byte.

use super::account::is_invisible;

/// The most the original server reads of a request (`char buf[1024]` and one `SSL_read`).
pub const LEGACY_REQUEST_MAX: usize = 1024;

/// The original's `ServerResponse`: the reply to a request with valid credentials (220 bytes).
pub const LEGACY_VALID_REPLY: &[u8] = b"<\\Body>                               <Name>aticleworld.com</Name>                 <year>1.5</year>                 <BlogType>Embedede and c\\c++<\\BlogType>                 <Author>amlendra<Author>                 <\\Body>";

/// The reply to any other request.
pub const LEGACY_INVALID_REPLY: &[u8] = b"Invalid Message";

/// `<Body>`, 31 spaces, `<UserName>`: what precedes the user name in a request.
const BEFORE_USER: &[u8] = b"<Body>                               <UserName>";
/// What stands between the user name and the password.
const BETWEEN: &[u8] = b"<UserName>                 <Password>";
/// What follows the password.
const AFTER_PASSWORD: &[u8] = b"<Password>                 <\\Body>";
/// The start of the tag after which the original's request carries the password, in lower
/// case: requests are searched for it in any letter case.
const PASSWORD_TAG_NAME: &[u8] = b"<password";
/// What replaces the password when a request is shown.
const PASSWORD_MASK: &[u8] = b"***";

/// The user name and password carried by a legacy request.
#[derive(Debug, PartialEq, Eq)]
pub struct LegacyCredentials<'a> {
    /// The user name, as sent.
    pub username: &'a [u8],
    /// The password, as sent.
    pub password: &'a [u8],
}

/// Builds the request the original client sends (`sprintf(acClientRequest, cpRequestMessage,
/// acUsername, acPassword)`).
pub fn legacy_request(username: &[u8], password: &[u8]) -> Vec<u8> {
    [BEFORE_USER, username, BETWEEN, password, AFTER_PASSWORD].concat()
}

/// Reads a request of exactly the original's form; `None` for anything else.
pub fn parse_legacy_request(request: &[u8]) -> Option<LegacyCredentials<'_>> {
    let middle = request
        .strip_prefix(BEFORE_USER)?
        .strip_suffix(AFTER_PASSWORD)?;
    let split = middle.windows(BETWEEN.len()).position(|w| w == BETWEEN)?;
    Some(LegacyCredentials {
        username: &middle[..split],
        password: &middle[split + BETWEEN.len()..],
    })
}

/// The request as the server may show it, the password replaced by `***`: exactly the
/// password, for a request of the original's form (whatever its user name holds); otherwise
/// everything from the first password tag (`<Password>` in any letter case) to the last
/// password tag after it, opening or closing (or to the end).
pub fn mask_legacy_password(request: &[u8]) -> Vec<u8> {
    if let Some(credentials) = parse_legacy_request(request) {
        return legacy_request(credentials.username, PASSWORD_MASK);
    }
    let lower = request.to_ascii_lowercase();
    let Some(name_end) = find(&lower, PASSWORD_TAG_NAME).map(|i| i + PASSWORD_TAG_NAME.len())
    else {
        return request.to_vec();
    };
    // The tag's `>` stays; anything else after the name (attributes, say) may be the secret.
    let start = name_end + usize::from(lower.get(name_end) == Some(&b'>'));
    let end = (start..lower.len())
        .rev()
        .find(|&i| {
            let rest = &lower[i..];
            rest.starts_with(PASSWORD_TAG_NAME) || rest.starts_with(b"</password")
        })
        .unwrap_or(request.len());
    [&request[..start], PASSWORD_MASK, &request[end..]].concat()
}

/// Bytes from the network made safe to print on a terminal: printable text as it is, control
/// characters, invisible and direction-changing characters ([`is_invisible`]) and invalid
/// UTF-8 as escapes (`\x1b`, `\u{85}`, `\u{202e}`), so a peer can neither send terminal control
/// sequences to the console nor make what it shows read otherwise. A request of the
/// original's form prints unchanged.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() || is_invisible(c) => {
                    out.push_str(&c.escape_unicode().to_string());
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn request_matches_original_bytes() {
        let request = legacy_request(b"aticle", b"123");
        assert_eq!(request.len(), 127);
        assert_eq!(
            sha256_hex(&request),
            "0a4f49d91dd1b7f54d6e6dd47167721606982f44861fed14d056eee38eae3a53"
        );
    }

    #[test]
    fn reply_matches_original_bytes() {
        assert_eq!(LEGACY_VALID_REPLY.len(), 220);
        assert_eq!(
            sha256_hex(LEGACY_VALID_REPLY),
            "36ff59446645fc9185af59fbc71f4b47216a987b55abef5272944c68b27a98bb"
        );
        assert_eq!(LEGACY_INVALID_REPLY, b"Invalid Message");
    }

    #[test]
    fn parses_what_it_builds() {
        let request = legacy_request(b"aticle", b"123");
        assert_eq!(
            parse_legacy_request(&request),
            Some(LegacyCredentials {
                username: b"aticle",
                password: b"123"
            })
        );
        let empty = legacy_request(b"", b"");
        assert_eq!(
            parse_legacy_request(&empty),
            Some(LegacyCredentials {
                username: b"",
                password: b""
            })
        );
    }

    #[test]
    fn rejects_near_misses() {
        let good = legacy_request(b"aticle", b"123");
        let mut newline = good.clone();
        newline.push(b'\n');
        let text = String::from_utf8(good.clone()).unwrap();
        let slash = text.replace("<\\Body>", "</Body>");
        let fewer_spaces = text.replacen(&" ".repeat(31), &" ".repeat(30), 1);
        for bad in [
            &b""[..],
            &b"Hello"[..],
            &good[..good.len() - 1],
            &good[1..],
            &newline,
            slash.as_bytes(),
            fewer_spaces.as_bytes(),
        ] {
            assert_eq!(parse_legacy_request(bad), None, "{}", printable(bad));
        }
    }

    #[test]
    fn masks_password() {
        let masked = mask_legacy_password(&legacy_request(b"aticle", b"s3cret"));
        assert_eq!(masked, legacy_request(b"aticle", b"***"));
        assert_eq!(
            mask_legacy_password(b"<Password>s3cret and the rest"),
            b"<Password>***"
        );
        assert_eq!(mask_legacy_password(b"no tag here"), b"no tag here");
        // A user name or password holding the tag does not let the password out.
        let tricky = legacy_request(b"x<Password>y", b"TOPSECRET-PW");
        let shown = mask_legacy_password(&tricky);
        assert!(
            find(&shown, b"TOPSECRET").is_none(),
            "{}",
            printable(&shown)
        );
        let inside = legacy_request(b"x", b"a<Password>TOPSECRET<Password>b");
        assert!(find(&mask_legacy_password(&inside), b"TOPSECRET").is_none());
        let broken = b"<Password>a<Password>TOPSECRET<Password>b";
        assert_eq!(mask_legacy_password(broken), b"<Password>***<Password>b");
        for (request, shown) in [
            (
                &b"<password>TOPSECRET<password>x"[..],
                &b"<password>***<password>x"[..],
            ),
            (
                b"<PASSWORD>TOPSECRET</PASSWORD> rest",
                b"<PASSWORD>***</PASSWORD> rest",
            ),
            (b"u<pAssWord x='1'>TOPSECRET", b"u<pAssWord***"),
            (b"<passwordTOPSECRET<Password>b", b"<password***<Password>b"),
        ] {
            assert_eq!(
                mask_legacy_password(request),
                shown,
                "{}",
                printable(request)
            );
        }
    }

    #[test]
    fn printable_escapes_controls_only() {
        let request = legacy_request(b"aticle", b"123");
        assert_eq!(printable(&request).as_bytes(), &request[..]);
        assert_eq!(printable(b"a\x1b[2Jb\n"), "a\\x1b[2Jb\\x0a");
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "caf\u{e9} \\xff");
        assert_eq!(printable("x\u{85}".as_bytes()), "x\\u{85}");
        assert_eq!(
            printable("a\u{202E}b\u{200B}c\u{2028}d".as_bytes()),
            "a\\u{202e}b\\u{200b}c\\u{2028}d"
        );
    }
}
