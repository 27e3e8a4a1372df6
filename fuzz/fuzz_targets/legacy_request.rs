//! The legacy request as the server reads it: parse, mask, show.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssl_server_client::xml::legacy::{mask_legacy_password, parse_legacy_request, printable};

fuzz_target!(|data: &[u8]| {
    if let Some(credentials) = parse_legacy_request(data) {
        let masked = mask_legacy_password(data);
        if !credentials.password.is_empty() && !credentials.password.windows(3).any(|w| w == b"***")
        {
            // The masked request never carries the password where the request had it.
            assert!(parse_legacy_request(&masked).is_some_and(|c| c.password == b"***"));
        }
    }
    let shown = printable(&mask_legacy_password(data));
    assert!(!shown.chars().any(char::is_control));
});
