//! A TCP stream on which every wait is bounded: each read and write by a per-operation
//! timeout, a phase (the handshake, or the wait for a session's next command) by its own
//! deadline, and the whole connection by a connection deadline. A peer that trickles bytes or
//! says nothing cannot hold a connection longer than these allow.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
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
    /// The socket's receive timeout as last set (`SO_RCVTIMEO`), if set.
    read_timeout: Option<Duration>,
    /// The socket's send timeout as last set (`SO_SNDTIMEO`), if set.
    write_timeout: Option<Duration>,
}

/// Which of the socket's two timeouts an operation waits by.
#[derive(Clone, Copy)]
enum Direction {
    Receive,
    Send,
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
            read_timeout: None,
            write_timeout: None,
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
        self.bounded(Direction::Receive, |tcp| tcp.peek(buf))
    }

    /// Waits until the socket has something to read (or is closed), at most `at_most` and
    /// within the limits a read has, without reading it: a TLS connection that waits for its
    /// next record this way holds no TLS read buffer meanwhile. `Ok(true)` when there is
    /// something to read, `Ok(false)` when the wait ended first (the next read tells whether
    /// the deadline has passed).
    pub fn wait_readable(&mut self, at_most: Duration) -> io::Result<bool> {
        let wait = self.time_left()?.min(at_most);
        let mut socket = libc::pollfd {
            fd: self.inner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up to whole milliseconds, so that a wait never ends early.
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `socket` is one valid pollfd for the duration of the call.
        match unsafe { libc::poll(&mut socket, 1, ms) } {
            0 => Ok(false),
            n if n > 0 => Ok(true),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Runs `op` (one read, peek or write on the socket) within this operation's limit.
    ///
    /// The socket's timeout is set only when it would let `op` wait past the limit, and then a
    /// little below it, so that the next operations keep it: a handshake sets each timeout
    /// once, not once per read and write (a system call each). A socket timeout that expires
    /// before the limit does not end the operation: it waits on for what is left.
    fn bounded<T>(
        &mut self,
        direction: Direction,
        mut op: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let until = Instant::now() + self.time_left()?;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let set = match direction {
                Direction::Receive => &mut self.read_timeout,
                Direction::Send => &mut self.write_timeout,
            };
            if set.is_none_or(|timeout| timeout > left) {
                // An eighth below the limit: valid until an eighth of it has passed.
                let timeout = left - left / 8;
                match direction {
                    Direction::Receive => self.inner.set_read_timeout(Some(timeout))?,
                    Direction::Send => self.inner.set_write_timeout(Some(timeout))?,
                }
                *set = Some(timeout);
            }
            match op(&mut self.inner) {
                // The socket's timeout, shorter than the limit: wait for the rest.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
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

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bounded(Direction::Receive, |tcp| tcp.read(buf))?;
        if self.idle && n > 0 {
            self.start_phase(self.io_timeout);
        }
        Ok(n)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bounded(Direction::Send, |tcp| tcp.write(buf))
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
    fn a_handshake_sets_each_socket_timeout_once() {
        let (ours, mut peer) = pair();
        let mut stream =
            DeadlineStream::new(ours, Duration::from_secs(30), Duration::from_secs(10));
        let mut buf = [0u8; 4];
        let mut set = Vec::new();
        for _ in 0..5 {
            peer.write_all(b"ping").unwrap();
            stream.read_exact(&mut buf).unwrap();
            stream.write_all(b"pong").unwrap();
            peer.read_exact(&mut buf).unwrap();
            set.push((stream.read_timeout, stream.write_timeout));
        }
        assert!(set[0].0.is_some() && set[0].1.is_some());
        assert!(set.iter().all(|&timeouts| timeouts == set[0]), "{set:?}");
        // Below the phase's limit, never above it.
        assert!(set[0].0.unwrap() <= Duration::from_secs(10));
    }

    #[test]
    fn a_socket_timeout_shorter_than_the_limit_does_not_end_the_read() {
        let (ours, mut peer) = pair();
        let mut stream =
            DeadlineStream::new(ours, Duration::from_secs(10), Duration::from_secs(10));
        // As if a timeout of an earlier, shorter phase were still on the socket.
        stream.inner.set_read_timeout(Some(ms(50))).unwrap();
        stream.read_timeout = Some(ms(50));
        let writer = thread::spawn(move || {
            thread::sleep(ms(300));
            peer.write_all(b"late").unwrap();
            peer
        });
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        let _peer = writer.join().unwrap();
    }

    #[test]
    fn waiting_for_input_takes_nothing_and_keeps_to_the_deadline() {
        let (ours, mut peer) = pair();
        let mut stream = DeadlineStream::new(ours, Duration::from_secs(10), ms(300));
        stream.await_next(ms(300));
        let started = Instant::now();
        assert!(!stream.wait_readable(ms(100)).unwrap(), "nothing sent yet");
        assert!(started.elapsed() >= ms(100));
        assert!(!stream.wait_readable(Duration::MAX).unwrap());
        assert!(started.elapsed() >= ms(300) && started.elapsed() < Duration::from_secs(5));
        // The deadline has passed: the next wait or read says so.
        let err = stream.wait_readable(Duration::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        stream.await_next(Duration::from_secs(10));
        peer.write_all(b"next").unwrap();
        assert!(stream.wait_readable(Duration::MAX).unwrap());
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"next");
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
