//! An account-protocol document as the server (command) and the client (reply) read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssl_server_client::xml::command::Command;
use ssl_server_client::xml::document::{parse_document, write_document};
use ssl_server_client::xml::reply::Reply;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = parse_document(data) else {
        return;
    };
    if let Ok(command) = Command::parse(&root) {
        let again = parse_document(&write_document(&command.to_element())).expect("our own XML");
        assert_eq!(Command::parse(&again).expect("our own command"), command);
    }
    let _ = Reply::from_element(&root);
});
