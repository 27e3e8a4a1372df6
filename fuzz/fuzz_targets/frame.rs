//! Framing of the account protocol: any byte stream, split anywhere, read as frames.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ssl_server_client::xml::frame::{FrameError, FrameReader, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut reader = FrameReader::new(&data[..split]);
    let mut input = Cursor::new(&data[split..]);
    loop {
        match reader.next_frame(&mut input) {
            Ok(Some(document)) => assert!(!document.is_empty() && document.len() <= MAX_FRAME),
            Ok(None)
            | Err(FrameError::TooShort(_) | FrameError::TooLong(_) | FrameError::Truncated) => {
                break;
            }
            Err(FrameError::Io(e)) => panic!("io error from memory: {e}"),
        }
    }
});
