//! XML documents of the account protocol: read by [`parse_document`] (xmltree, with explicit
//! limits on size, depth, element count, attributes and names, and no DTD, so no entity can
//! expand) and written by [`write_document`].

use xmltree::{Element, EmitterConfig, ParserConfig, XMLNode};

use super::frame::MAX_FRAME;

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

/// Refuses control characters other than tab and line feed in text and attribute values: C0,
/// DEL and C1, raw or as character references. XML 1.1 lets C0 in as character references, but an XML 1.0 document (every document
/// written here) cannot carry them, so a value holding one could never be sent back; a
/// carriage return (`&#13;`) would come back as a line feed, since parsers normalise line
/// ends. The tree is at most [`MAX_DEPTH`] deep, so the recursion is bounded.
fn check_characters(el: &Element) -> Result<(), XmlError> {
    // C0 but tab and line feed, DEL and C1: every control character but the two.
    let bad = |text: &str| {
        text.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n'))
    };
    if el.attributes.values().any(|v| bad(v)) {
        return Err(XmlError::ours("control characters are not allowed"));
    }
    for node in &el.children {
        match node {
            XMLNode::Element(child) => check_characters(child)?,
            XMLNode::Text(t) | XMLNode::CData(t) if bad(t) => {
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
    // Text is kept exactly as sent, white space alone included (a password of spaces).
    let mut config = ParserConfig::new()
        .cdata_to_characters(true)
        .whitespace_to_characters(true)
        .allow_multiple_root_elements(false);
    config.max_entity_expansion_depth = 1;
    config.max_entity_expansion_length = 0;
    config.max_attributes = MAX_ATTRIBUTES;
    config.max_attribute_length = MAX_ATTRIBUTE_LEN;
    config.max_name_length = MAX_NAME_LEN;
    config.max_data_length = MAX_FRAME;
    // Documents are UTF-8: one that declares another encoding is refused.
    config.override_encoding = Some(::xml::Encoding::Utf8);
    config
}

/// The streaming pass: every limit that the tree build cannot enforce itself.
fn check_shape(text: &str) -> Result<(), XmlError> {
    use ::xml::reader::XmlEvent;
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

/// `<name>text</name>`.
pub fn text_element(name: &str, text: &str) -> Element {
    let mut el = Element::new(name);
    if !text.is_empty() {
        el.children.push(XMLNode::Text(text.to_string()));
    }
    el
}

/// All text directly inside an element.
pub fn text(el: &Element) -> String {
    el.children
        .iter()
        .filter_map(|node| match node {
            XMLNode::Text(t) | XMLNode::CData(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The element children of an element.
pub fn child_elements(el: &Element) -> impl Iterator<Item = &Element> {
    el.children.iter().filter_map(XMLNode::as_element)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::legacy::printable;

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
        assert_eq!(text(&root), "\u{e9}");
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
        // DEL and C1, raw and as references.
        for doc in [
            "<a>del\u{7f}</a>",
            "<a>c1\u{85}</a>",
            "<a>c1&#x9b;</a>",
            "<a b=\"&#127;\"/>",
        ] {
            let err = parse_document(doc.as_bytes()).unwrap_err();
            assert_eq!(err.message, "control characters are not allowed", "{doc}");
        }
    }

    #[test]
    fn white_space_is_text_like_any_other() {
        let root = parse_document(b"<password>        </password>").unwrap();
        assert_eq!(text(&root), "        ");
        let root = parse_document(b"<username>\t</username>").unwrap();
        assert_eq!(text(&root), "\t");
        // Between elements it is there too, and commands ignore it (command.rs).
        let root = parse_document(b"<login>\n  <username>a</username>\n</login>").unwrap();
        assert_eq!(text(&root), "\n  \n");
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
