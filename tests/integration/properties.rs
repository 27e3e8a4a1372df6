//! Property tests over the parsers and the framing: for any input, no panic and a clean result
//! or error.

use std::io::Cursor;

use proptest::prelude::*;
use ssl_server_client::xml::command::Command;
use ssl_server_client::xml::document::{parse_document, write_document};
use ssl_server_client::xml::frame::{FrameError, FrameReader, MAX_FRAME, encode_frame};
use ssl_server_client::xml::legacy::{
    legacy_request, mask_legacy_password, parse_legacy_request, printable,
};
use ssl_server_client::xml::reply::Reply;

/// Pieces that XML-looking input is made of, so that generated documents often parse.
fn xml_like() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "<",
        ">",
        "</",
        "/>",
        "=",
        "\"",
        "'",
        " ",
        "\n",
        "&",
        ";",
        "&amp;",
        "&lt;",
        "&#65;",
        "&#x0;",
        "&bogus;",
        "<!DOCTYPE a [<!ENTITY e \"x\">]>",
        "<![CDATA[",
        "]]>",
        "<?xml",
        "?>",
        "<!--",
        "-->",
        "login",
        "username",
        "password",
        "new_password",
        "update",
        "version",
        "email",
        "signup",
        "hello",
        "view",
        "delete",
        "logout",
        "passwd",
        "a",
        "é",
        "\u{0}",
        "1",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn legacy_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let _ = parse_legacy_request(&bytes);
        let shown = printable(&mask_legacy_password(&bytes));
        prop_assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn legacy_requests_round_trip_and_mask(
        user in "[^<]{0,40}",
        password in "[^<]{0,40}",
    ) {
        let request = legacy_request(user.as_bytes(), password.as_bytes());
        let parsed = parse_legacy_request(&request).expect("our own request parses");
        prop_assert_eq!(parsed.username, user.as_bytes());
        prop_assert_eq!(parsed.password, password.as_bytes());
        let masked = mask_legacy_password(&request);
        prop_assert_eq!(masked, legacy_request(user.as_bytes(), b"***"));
    }

    #[test]
    fn framing_of_any_stream_ends_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        split in 0usize..300,
    ) {
        let split = split.min(bytes.len());
        let mut reader = FrameReader::new(&bytes[..split]);
        let mut input = Cursor::new(bytes[split..].to_vec());
        for _ in 0..bytes.len() + 1 {
            match reader.next_frame(&mut input) {
                Ok(Some(document)) => prop_assert!(!document.is_empty()),
                Ok(None) | Err(FrameError::TooShort(_) | FrameError::TooLong(_)) => break,
                Err(FrameError::Truncated) => break,
                Err(FrameError::Io(e)) => prop_assert!(false, "io error from memory: {e}"),
            }
        }
    }

    #[test]
    fn frames_round_trip(documents in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 1..2000), 0..5)
    ) {
        let stream: Vec<u8> = documents.iter().flat_map(|d| encode_frame(d).unwrap()).collect();
        let mut reader = FrameReader::default();
        let mut input = Cursor::new(stream);
        for document in &documents {
            prop_assert_eq!(&reader.next_frame(&mut input).unwrap().unwrap(), document);
        }
        prop_assert!(reader.next_frame(&mut input).unwrap().is_none());
    }

    #[test]
    fn documents_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(root) = parse_document(&bytes) {
            let _ = Command::parse(&root);
            let _ = Reply::from_element(&root);
        }
    }

    #[test]
    fn xml_like_documents_never_panic(text in xml_like()) {
        if let Ok(root) = parse_document(text.as_bytes()) {
            if let Ok(command) = Command::parse(&root) {
                // What parses, rebuilds to the same command.
                let again = write_document(&command.to_element());
                prop_assert_eq!(Command::parse(&parse_document(&again).unwrap()).unwrap(), command);
            }
            let _ = Reply::from_element(&root);
        }
    }
}

#[test]
fn the_largest_frame_is_accepted_and_one_more_byte_is_not() {
    let mut reader = FrameReader::default();
    let document = vec![b'x'; MAX_FRAME - 4];
    let mut input = Cursor::new(encode_frame(&document).unwrap());
    assert_eq!(reader.next_frame(&mut input).unwrap().unwrap(), document);
    let mut too_long = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    too_long.extend(vec![b'x'; MAX_FRAME - 3]);
    assert!(matches!(
        FrameReader::default().next_frame(&mut Cursor::new(too_long)),
        Err(FrameError::TooLong(_))
    ));
}
