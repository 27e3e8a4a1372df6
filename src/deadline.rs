//! A TCP stream on which every wait is bounded: each read and write by a per-operation
//! timeout, a phase (the handshake, or the wait for a session's next command) by its own
//! deadline, and the whole connection by a connection deadline. A peer that trickles bytes or
//! says nothing cannot hold a connection longer than these allow.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A [`TcpStream`] whose reads and writes fail with [`io::ErrorKind::TimedOut`] instead of
/// waiting past any of its limits.
#[derive(Debug)]
pub struct DeadlineStream {
    inner: TcpStream,
    io_timeout: Duration,
    phase_deadline: Option<Instant>,
    connection_deadline: Option<Instant>,
    /// Waiting for the first byte of the next command: the phase deadline alone bounds the
    /// wait, not the per-operation timeout.
    idle: bool,
}

impl DeadlineStream {
    /// Wraps `inner`: each read or write may wait `io_timeout`, and everything until the next
    /// phase must be done within `phase` (the handshake, say).
    pub fn new(inner: TcpStream, io_timeout: Duration, phase: Duration) -> Self {
        DeadlineStream {
            inner,
            io_timeout,
            phase_deadline: Some(Instant::now() + phase),
            connection_deadline: None,
            idle: false,
        }
    }

    /// Bounds the whole connection: nothing waits past `limit` from now.
    pub fn with_connection_limit(mut self, limit: Duration) -> Self {
        self.connection_deadline = Some(Instant::now() + limit);
        self
    }

    /// Starts a new phase of at most `limit` from now, in which every operation also keeps to
    /// the per-operation timeout.
    pub fn start_phase(&mut self, limit: Duration) {
        self.phase_deadline = Some(Instant::now() + limit);
        self.idle = false;
    }

    /// Waits for the next command: its first byte may take up to `limit`; from that byte on,
    /// the whole command and its reply get one `io_timeout` (so it cannot be trickled in).
    pub fn await_next(&mut self, limit: Duration) {
        self.phase_deadline = Some(Instant::now() + limit);
        self.idle = true;
    }

    /// Reads into `buf` what has arrived without taking it off the stream (`recv` with
    /// `MSG_PEEK`), waiting as a read does; the next read or peek sees the same bytes.
    pub fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.set_read_timeout(Some(self.time_left()?))?;
        self.inner.peek(buf).map_err(timed_out)
    }

    /// How long the next operation may wait.
    fn time_left(&self) -> io::Result<Duration> {
        let now = Instant::now();
        let mut left = if self.idle {
            Duration::MAX
        } else {
            self.io_timeout
        };
        for deadline in [self.phase_deadline, self.connection_deadline]
            .into_iter()
            .flatten()
        {
            left = left.min(deadline.saturating_duration_since(now));
        }
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
        let n = self.inner.read(buf).map_err(timed_out)?;
        if self.idle && n > 0 {
            self.start_phase(self.io_timeout);
        }
        Ok(n)
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
    use std::thread;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, peer)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_peer_times_out_by_the_phase_deadline() {
        let (ours, _peer) = pair();
        let mut stream = DeadlineStream::new(ours, Duration::from_secs(10), ms(200));
        let started = Instant::now();
        let err = stream.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= ms(200) && started.elapsed() < Duration::from_secs(5));
        // Every later call fails at once.
        assert!(stream.read(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn each_read_keeps_to_the_io_timeout() {
        let (ours, _peer) = pair();
        let mut stream = DeadlineStream::new(ours, ms(150), Duration::from_secs(10));
        stream.start_phase(Duration::from_secs(10));
        let started = Instant::now();
        assert!(stream.read(&mut [0u8; 16]).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn idle_waits_longer_than_one_read_then_reads_keep_to_the_io_timeout() {
        let (ours, mut peer) = pair();
        let mut stream = DeadlineStream::new(ours, ms(100), Duration::from_secs(10));
        stream.await_next(Duration::from_secs(10));
        let writer = thread::spawn(move || {
            thread::sleep(ms(400)); // longer than the io timeout: still within idle
            peer.write_all(b"x").unwrap();
            peer
        });
        let mut buf = [0u8; 1];
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        let _peer = writer.join().unwrap();
        // Now a command is under way: the rest of it has the io timeout, all of it together.
        let started = Instant::now();
        assert!(stream.read(&mut buf).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_connection_deadline_bounds_everything() {
        let (ours, _peer) = pair();
        let mut stream =
            DeadlineStream::new(ours, Duration::from_secs(10), Duration::from_secs(10))
                .with_connection_limit(ms(150));
        stream.await_next(Duration::from_secs(10));
        let started = Instant::now();
        assert!(stream.read(&mut [0u8; 1]).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_peek_leaves_the_bytes_and_keeps_to_the_deadline() {
        let (ours, mut peer) = pair();
        peer.write_all(b"hello").unwrap();
        let mut stream = DeadlineStream::new(ours, Duration::from_secs(10), ms(300));
        let mut buf = [0u8; 16];
        let n = stream.peek(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello", "the peek took nothing");
        let started = Instant::now();
        let err = stream.peek(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn data_before_the_deadline_is_read() {
        let (ours, mut peer) = pair();
        peer.write_all(b"hello").unwrap();
        let mut stream =
            DeadlineStream::new(ours, Duration::from_secs(10), Duration::from_secs(10));
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
