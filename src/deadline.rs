//! A TCP stream whose reads and writes all end by one deadline, so that a peer that trickles
//! bytes cannot hold a connection longer than the whole exchange is allowed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A [`TcpStream`] that fails every read and write with [`io::ErrorKind::TimedOut`] once its
/// deadline has passed, and never waits past it.
#[derive(Debug)]
pub struct DeadlineStream {
    inner: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    /// Wraps `inner`; every operation must finish within `limit` from now.
    pub fn new(inner: TcpStream, limit: Duration) -> Self {
        DeadlineStream {
            inner,
            deadline: Instant::now() + limit,
        }
    }

    /// Gives the stream `limit` from now, whatever was left before.
    pub fn renew(&mut self, limit: Duration) {
        self.deadline = Instant::now() + limit;
    }

    fn time_left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        } else {
            Ok(left)
        }
    }
}

/// On Linux an expired socket timeout is `WouldBlock`; report it as what it is, so that TLS
/// does not take it for a non-blocking socket and ask to retry.
fn timed_out(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out")
    } else {
        err
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.set_read_timeout(Some(self.time_left()?))?;
        self.inner.read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.set_write_timeout(Some(self.time_left()?))?;
        self.inner.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn silent_peer_times_out_by_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut stream = DeadlineStream::new(accepted, Duration::from_millis(200));
        let started = Instant::now();
        let err = stream.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // And every later call fails at once.
        let err = stream.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn data_before_deadline_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        peer.write_all(b"hello").unwrap();
        let mut stream = DeadlineStream::new(accepted, Duration::from_secs(10));
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
