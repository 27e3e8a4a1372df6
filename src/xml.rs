//! XML of both protocols.
//!
//! - The legacy exchange: the original's "XML" is not well-formed (`<UserName>` and
//!   `<Password>` are never closed and the body ends with `<\Body>`), so it is built and read as
//!   exact byte templates, not by an XML parser.
//! - The account protocol: real XML documents, read by [`parse_document`] (xmltree, with explicit
//!   limits on size, depth, element count, attributes and names, and no DTD, so no entity can
//!   expand) and written by [`write_document`].
//!
//! Everything here is pure: bytes in, bytes or trees out.

use xmltree::{Element, EmitterConfig, ParserConfig};

use crate::frame::MAX_FRAME;

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
/// The tag after which the original's request carries the password.
const PASSWORD_TAG: &[u8] = b"<Password>";
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
/// everything from the first `<Password>` tag to the last one (or to the end).
pub fn mask_legacy_password(request: &[u8]) -> Vec<u8> {
    if let Some(credentials) = parse_legacy_request(request) {
        return legacy_request(credentials.username, PASSWORD_MASK);
    }
    let Some(start) = find(request, PASSWORD_TAG).map(|i| i + PASSWORD_TAG.len()) else {
        return request.to_vec();
    };
    let end = request[start..]
        .windows(PASSWORD_TAG.len())
        .rposition(|w| w == PASSWORD_TAG)
        .map_or(request.len(), |i| start + i);
    [&request[..start], PASSWORD_MASK, &request[end..]].concat()
}

/// Bytes from the network made safe to print on a terminal: printable text as it is, control
/// characters and invalid UTF-8 as escapes (`\x1b`, `\u{85}`), so a peer cannot send terminal
/// control sequences to the console. A request of the original's form prints unchanged.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if !c.is_control() => out.push(c),
                c if c.is_ascii() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&c.escape_unicode().to_string()),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The deepest nesting of elements accepted in a document.
pub const MAX_DEPTH: usize = 8;
/// The most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 64;
const MAX_ATTRIBUTES: usize = 4;
const MAX_ATTRIBUTE_LEN: usize = 64;
const MAX_NAME_LEN: usize = 64;

/// The most characters of a parser's message put in a reply: it may quote the input.
const MAX_ERROR_CHARS: usize = 200;

/// Why a document was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct XmlError {
    /// What is wrong, for the peer that sent the document (at most 200 characters).
    pub message: String,
    /// Whether `message` quotes the peer's input (the XML parser's messages may: a name, an
    /// entity, even part of a password), and so must stay out of logs.
    quotes_input: bool,
}

impl XmlError {
    fn ours(message: impl Into<String>) -> XmlError {
        XmlError {
            message: message.into(),
            quotes_input: false,
        }
    }

    fn parser(error: impl std::fmt::Display) -> XmlError {
        XmlError {
            message: format!("malformed XML: {error}")
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect(),
            quotes_input: true,
        }
    }

    /// The reason as it may be logged: without anything quoted from the input.
    pub fn for_log(&self) -> &str {
        if self.quotes_input {
            "malformed XML"
        } else {
            &self.message
        }
    }
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads one XML document of the account protocol. It must be UTF-8, have one root element,
/// no DOCTYPE, at most [`MAX_DEPTH`] levels and [`MAX_ELEMENTS`] elements; the limits are
/// checked by a streaming pass before the (recursive) tree is built.
pub fn parse_document(bytes: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| XmlError::ours(format!("the document is not UTF-8: {e}")))?;
    check_shape(text)?;
    let root =
        Element::parse_with_config(text.as_bytes(), parser_config()).map_err(XmlError::parser)?;
    check_characters(&root)?;
    Ok(root)
}

/// Refuses C0 control characters other than tab and line feed in text and attribute values.
/// XML 1.1 lets them in as character references, but an XML 1.0 document (every document
/// written here) cannot carry them, so a value holding one could never be sent back; a
/// carriage return (`&#13;`) would come back as a line feed, since parsers normalise line
/// ends. The tree is at most [`MAX_DEPTH`] deep, so the recursion is bounded.
fn check_characters(el: &Element) -> Result<(), XmlError> {
    let bad = |text: &str| text.chars().any(|c| c < ' ' && !matches!(c, '\t' | '\n'));
    if el.attributes.values().any(|v| bad(v)) {
        return Err(XmlError::ours("control characters are not allowed"));
    }
    for node in &el.children {
        match node {
            xmltree::XMLNode::Element(child) => check_characters(child)?,
            xmltree::XMLNode::Text(t) | xmltree::XMLNode::CData(t) if bad(t) => {
                return Err(XmlError::ours("control characters are not allowed"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes a document (with its XML declaration, without indentation).
pub fn write_document(root: &Element) -> Vec<u8> {
    let mut out = Vec::new();
    root.write_with_config(&mut out, EmitterConfig::new().perform_indent(false))
        .expect("writing XML to memory cannot fail");
    out
}

fn parser_config() -> ParserConfig {
    let mut config = ParserConfig::new()
        .cdata_to_characters(true)
        .allow_multiple_root_elements(false);
    config.max_entity_expansion_depth = 1;
    config.max_entity_expansion_length = 0;
    config.max_attributes = MAX_ATTRIBUTES;
    config.max_attribute_length = MAX_ATTRIBUTE_LEN;
    config.max_name_length = MAX_NAME_LEN;
    config.max_data_length = MAX_FRAME;
    // Documents are UTF-8: one that declares another encoding is refused.
    config.override_encoding = Some(xml::Encoding::Utf8);
    config
}

/// The streaming pass: every limit that the tree build cannot enforce itself.
fn check_shape(text: &str) -> Result<(), XmlError> {
    use xml::reader::XmlEvent;
    let (mut depth, mut elements) = (0usize, 0usize);
    for event in parser_config().create_reader(text.as_bytes()) {
        match event.map_err(XmlError::parser)? {
            XmlEvent::Doctype { .. } => {
                return Err(XmlError::ours("DOCTYPE declarations are not allowed"));
            }
            XmlEvent::StartElement { namespace, .. } => {
                // Each element carries a copy of every namespace in scope: thousands of
                // declarations would cost memory and time per element. The protocol uses none.
                let declared = namespace.0.iter().any(|(prefix, uri)| {
                    !matches!(prefix.as_str(), "xml" | "xmlns") && !uri.is_empty()
                });
                if declared {
                    return Err(XmlError::ours("namespace declarations are not allowed"));
                }
                depth += 1;
                elements += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::ours(format!(
                        "elements nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::ours(format!("more than {MAX_ELEMENTS} elements")));
                }
            }
            XmlEvent::EndElement { .. } => depth -= 1,
            XmlEvent::EndDocument => break,
            _ => {}
        }
    }
    Ok(())
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
    }

    #[test]
    fn printable_escapes_controls_only() {
        let request = legacy_request(b"aticle", b"123");
        assert_eq!(printable(&request).as_bytes(), &request[..]);
        assert_eq!(printable(b"a\x1b[2Jb\n"), "a\\x1b[2Jb\\x0a");
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "caf\u{e9} \\xff");
        assert_eq!(printable("x\u{85}".as_bytes()), "x\\u{85}");
    }

    #[test]
    fn documents_are_utf_8_whatever_they_declare() {
        let doc = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\u{e9}</a>";
        let err = parse_document(doc.as_bytes()).unwrap_err();
        assert!(
            err.message.contains("Declared encoding ISO-8859-1"),
            "{err}"
        );
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>\u{e9}</a>";
        let root = parse_document(doc.as_bytes()).unwrap();
        assert_eq!(crate::reply::text(&root), "\u{e9}");
    }

    #[test]
    fn control_characters_are_refused() {
        // Found by the xml_document fuzzer: XML 1.1 lets U+000E in as a character reference,
        // and what we would write back could not be read.
        for doc in [
            "<?xml version=\"1.1\"?><login><username>a&#14;</username></login>",
            "<?xml version=\"1.1\"?><update version=\"&#1;\"><email/></update>",
        ] {
            let err = parse_document(doc.as_bytes()).unwrap_err();
            assert!(err.message.contains("control characters"), "{doc}: {err}");
        }
        assert!(parse_document(b"<a>tab\tand\nline</a>").is_ok());
        // Found by the fuzzer too: a carriage return would not survive being written back.
        let err = parse_document(b"<delete><password>a&#13;b</password></delete>").unwrap_err();
        assert!(err.message.contains("control characters"));
        // A literal CR LF is a line end, normalised by the parser: fine.
        assert!(parse_document(b"<a>\r\n<b/>\r\n</a>").is_ok());
    }

    #[test]
    fn namespaces_are_refused_early() {
        let many: String = (0..4000).map(|i| format!(" xmlns:n{i}=\"u\"")).collect();
        for doc in [
            format!("<a{many}><b/></a>"),
            "<a xmlns=\"urn:x\"/>".to_string(),
            "<a><b xmlns:p=\"urn:x\"/></a>".to_string(),
        ] {
            let err = parse_document(doc.as_bytes()).unwrap_err();
            assert_eq!(err.message, "namespace declarations are not allowed");
        }
        assert!(parse_document(b"<a xml:lang=\"en\"/>").is_ok());
    }

    #[test]
    fn parser_messages_are_short_and_kept_out_of_logs() {
        let doc = format!("<a>&{};</a>", "secret".repeat(10_000));
        let err = parse_document(doc.as_bytes()).unwrap_err();
        assert!(err.message.chars().count() <= MAX_ERROR_CHARS);
        assert_eq!(err.for_log(), "malformed XML");
        let ours = parse_document(b"<!DOCTYPE a><a/>").unwrap_err();
        assert_eq!(ours.for_log(), "DOCTYPE declarations are not allowed");
    }

    #[test]
    fn documents_round_trip() {
        let doc = parse_document(b"<login><username>alice</username></login>").unwrap();
        assert_eq!(doc.name, "login");
        let written = write_document(&doc);
        assert_eq!(parse_document(&written).unwrap(), doc);
        assert!(written.starts_with(b"<?xml"));
    }

    #[test]
    fn documents_outside_the_limits_are_refused() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        let billion_laughs = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"xx\">\
            <!ENTITY y \"&x;&x;&x;&x;\">]><a>&y;&y;</a>";
        let attributes = "<a b=\"1\" c=\"2\" d=\"3\" e=\"4\" f=\"5\"/>";
        let long_name = format!("<{0}/>", "n".repeat(4 * MAX_NAME_LEN));
        for (bad, why) in [
            (&b"\xff<a/>"[..], "not UTF-8"),
            (b"", "malformed"),
            (b"<a>", "malformed"),
            (b"<a/><b/>", "malformed"),
            (b"plain text", "malformed"),
            (deep.as_bytes(), "deeper"),
            (wide.as_bytes(), "more than"),
            (billion_laughs.as_bytes(), "DOCTYPE"),
            (attributes.as_bytes(), "malformed"),
            (long_name.as_bytes(), "malformed"),
            (b"<a>&unknown;</a>", "malformed"),
        ] {
            let err = parse_document(bad).unwrap_err();
            assert!(err.message.contains(why), "{}: {err}", printable(bad));
        }
        let limit = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse_document(limit.as_bytes()).is_ok());
    }
}
