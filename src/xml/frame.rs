//! Framing of the account protocol, as RFC 5734 (EPP over TCP) frames its documents: a 4-byte
//! big-endian length of the whole frame, header included, then the UTF-8 document.
//!
//! [`frame_length`] and [`encode_frame`] are pure; [`FrameReader`] works over any `Read`.

use std::fmt;
use std::io::{self, Read, Write};

/// Size of the length header.
pub const HEADER_LEN: usize = 4;
/// The largest frame accepted, header included.
pub const MAX_FRAME: usize = 64 * 1024;
/// The smallest valid frame: a header and at least one byte of document.
pub const MIN_FRAME: usize = HEADER_LEN + 1;

/// Why no frame could be read.
#[derive(Debug)]
pub enum FrameError {
    /// The header announces fewer than [`MIN_FRAME`] bytes.
    TooShort(u32),
    /// The header announces more than [`MAX_FRAME`] bytes.
    TooLong(u32),
    /// The peer closed the connection inside a frame.
    Truncated,
    /// Reading failed (a timeout included).
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(
                f,
                "frame length {n} is less than the minimum of {MIN_FRAME}"
            ),
            FrameError::TooLong(n) => write!(
                f,
                "frame length {n} is more than the maximum of {MAX_FRAME}"
            ),
            FrameError::Truncated => f.write_str("connection closed inside a frame"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The whole frame's length from its header, checked against the limits.
pub fn frame_length(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(header);
    match n as usize {
        len if len < MIN_FRAME => Err(FrameError::TooShort(n)),
        len if len > MAX_FRAME => Err(FrameError::TooLong(n)),
        len => Ok(len),
    }
}

/// A document framed for sending; [`FrameError::TooLong`] if the frame would exceed
/// [`MAX_FRAME`].
pub fn encode_frame(document: &[u8]) -> Result<Vec<u8>, FrameError> {
    let total = HEADER_LEN + document.len();
    if total > MAX_FRAME {
        return Err(FrameError::TooLong(
            u32::try_from(total).unwrap_or(u32::MAX),
        ));
    }
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(document);
    Ok(frame)
}

/// Writes one framed document.
pub fn write_frame(to: &mut impl Write, document: &[u8]) -> io::Result<()> {
    let frame =
        encode_frame(document).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    to.write_all(&frame)?;
    to.flush()
}

/// Reads frames from a stream, starting with bytes already read from it.
#[derive(Debug, Default)]
pub struct FrameReader {
    pending: Vec<u8>,
}

impl FrameReader {
    /// A reader whose stream already gave `initial`.
    pub fn new(initial: &[u8]) -> Self {
        FrameReader {
            pending: initial.to_vec(),
        }
    }

    /// Whether no bytes of a next frame have been read yet.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next frame's document; `None` when the peer closed between frames. Never reads
    /// more than the announced frame length (beyond what was already read).
    pub fn next_frame(&mut self, from: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
        if !self.fill(from, HEADER_LEN)? {
            return if self.pending.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.pending[..HEADER_LEN]);
        let len = frame_length(header)?;
        if !self.fill(from, len)? {
            return Err(FrameError::Truncated);
        }
        let rest = self.pending.split_off(len);
        let frame = std::mem::replace(&mut self.pending, rest);
        Ok(Some(frame[HEADER_LEN..].to_vec()))
    }

    /// Reads until `want` bytes are pending; false if the stream ended first.
    fn fill(&mut self, from: &mut impl Read, want: usize) -> Result<bool, FrameError> {
        let mut buf = [0u8; 4096];
        while self.pending.len() < want {
            let room = (want - self.pending.len()).min(buf.len());
            match from.read(&mut buf[..room]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(bytes: &[u8], initial: &[u8]) -> Vec<Result<Option<Vec<u8>>, String>> {
        let mut reader = FrameReader::new(initial);
        let mut input = Cursor::new(bytes.to_vec());
        let mut out = Vec::new();
        loop {
            let next = reader.next_frame(&mut input).map_err(|e| e.to_string());
            let done = !matches!(next, Ok(Some(_)));
            out.push(next);
            if done {
                return out;
            }
        }
    }

    #[test]
    fn round_trip_and_pipelining() {
        let stream = [
            encode_frame(b"<a/>").unwrap(),
            encode_frame(b"<b/>").unwrap(),
        ]
        .concat();
        assert_eq!(
            read_all(&stream, b""),
            vec![
                Ok(Some(b"<a/>".to_vec())),
                Ok(Some(b"<b/>".to_vec())),
                Ok(None)
            ]
        );
        // Part of the first frame already read, as after the first-byte dispatch.
        assert_eq!(
            read_all(&stream[3..], &stream[..3]),
            vec![
                Ok(Some(b"<a/>".to_vec())),
                Ok(Some(b"<b/>".to_vec())),
                Ok(None)
            ]
        );
    }

    #[test]
    fn header_counts_itself() {
        assert_eq!(&encode_frame(b"<a/>").unwrap()[..4], &[0, 0, 0, 8]);
        assert!(encode_frame(&[b'x'; MAX_FRAME - HEADER_LEN]).is_ok());
        assert!(matches!(
            encode_frame(&[b'x'; MAX_FRAME - HEADER_LEN + 1]),
            Err(FrameError::TooLong(65537))
        ));
        assert_eq!(frame_length([0, 0, 0, 5]).unwrap(), 5);
    }

    #[test]
    fn limits() {
        assert!(matches!(
            frame_length([0, 0, 0, 4]),
            Err(FrameError::TooShort(4))
        ));
        assert!(matches!(
            frame_length([0, 0, 0, 0]),
            Err(FrameError::TooShort(0))
        ));
        assert!(frame_length(65536u32.to_be_bytes()).is_ok());
        assert!(matches!(
            frame_length(65537u32.to_be_bytes()),
            Err(FrameError::TooLong(65537))
        ));
        assert!(matches!(
            frame_length([0xff; 4]),
            Err(FrameError::TooLong(u32::MAX))
        ));
    }

    #[test]
    fn truncation() {
        let frame = encode_frame(b"<hello/>").unwrap();
        for cut in 1..frame.len() {
            let got = read_all(&frame[..cut], b"");
            assert_eq!(
                got,
                vec![Err("connection closed inside a frame".to_string())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn reads_no_further_than_the_frame() {
        let stream = [encode_frame(b"<a/>").unwrap(), b"garbage".to_vec()].concat();
        let mut input = Cursor::new(stream);
        let mut reader = FrameReader::default();
        assert_eq!(reader.next_frame(&mut input).unwrap().unwrap(), b"<a/>");
        assert_eq!(input.position(), 8);
    }
}
