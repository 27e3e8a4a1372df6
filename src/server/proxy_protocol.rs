//! The PROXY protocol as a receiver (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2):
//! which addresses are trusted to send a header (`--proxy-protocol-from`), and reading one
//! header off a connection without taking a byte past it, so that the TLS handshake that
//! follows on the same socket finds its ClientHello whole.
//!
//! A header is believed only from a trusted address, and required from it: the receiver must
//! not guess whether one is there. The `ppp` crate parses the headers; this module finds
//! where a header ends (the framing) and reads exactly that far.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::{v1, v2};

use crate::deadline::DeadlineStream;
use crate::tls;

/// The longest v1 header, its CRLF included (the specification's limit).
const MAX_V1_LINE: usize = 107;
/// What every v1 header begins with.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The fixed part of a v2 header: the 12-byte signature, version and command, family and
/// transport, and the length of the rest.
const V2_FIXED: usize = 16;
/// Where in a v2 header the address family is (the high four bits; the transport is the low).
const V2_FAMILY_AT: usize = 13;
/// The most bytes of TLVs (type-length-value extensions) accepted after a v2 header's
/// addresses. HAProxy sends a few dozen (ALPN, authority, unique id, SSL details); the format
/// allows 64 KiB.
const MAX_V2_TLV_BYTES: usize = 512;

/// The addresses whose connections start with a PROXY header (`--proxy-protocol-from`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The address ranges `texts`, each a CIDR (`10.0.0.0/8`, `::1/128`) or a single address.
    /// A CIDR with host bits set (`10.0.0.5/8`) is refused, naming the network and the one
    /// address it may have meant: trusting a whole network by mistake lets every host in it
    /// claim any address.
    pub(crate) fn parse<S: AsRef<str>>(texts: &[S]) -> Result<TrustedProxies, String> {
        texts
            .iter()
            .map(|text| trusted_range(text.as_ref()))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// The ranges that hold every address (`0.0.0.0/0`, `::/0`): every client may then forge
    /// its address.
    pub(crate) fn everyone(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter().filter(|net| net.prefix_len() == 0)
    }

    /// Whether a connection from `ip` must begin with a PROXY header (an IPv4 client of a
    /// dual-stack socket, `::ffff:a.b.c.d`, is matched as `a.b.c.d`).
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.0
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

/// One range of `--proxy-protocol-from`: a CIDR whose host bits are clear, or one address.
fn trusted_range(text: &str) -> Result<IpNet, String> {
    let Ok(net) = text.parse::<IpNet>() else {
        return text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{text:?} is not an address range (a CIDR such as 10.0.0.0/8 or ::1/128, or one \
                 address)"
            )
        });
    };
    if net != net.trunc() {
        return Err(format!(
            "{text:?} has host bits set: did you mean the network {}, or the one address {}?",
            net.trunc(),
            IpNet::from(net.addr())
        ));
    }
    Ok(net)
}

/// What a valid header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// The connection is the client's at this address.
    Client(SocketAddr),
    /// The proxy speaks for itself (a v2 LOCAL command, or v1 `UNKNOWN`: HAProxy's health
    /// checks): the connection is served as coming from the socket's address.
    Local,
}

/// Why a connection from a trusted proxy has no valid header.
#[derive(Debug)]
pub(crate) enum HeaderError {
    /// Its first bytes are neither a v1 nor a v2 signature.
    NotAHeader,
    /// A v1 header without its CRLF within the first 107 bytes.
    LineTooLong,
    /// A v2 header announcing this many bytes of TLVs, more than accepted.
    TooManyTlvs(usize),
    /// The `ppp` crate refused it: the version and its words.
    Invalid(&'static str, String),
    /// A v2 PROXY command for a family without an IP address (unspecified or UNIX).
    NoAddress,
    /// The peer closed the connection before the end of the header.
    Closed,
    /// Reading failed: timed out (the handshake's deadline), reset.
    Io(io::Error),
}

impl HeaderError {
    /// Why, in words that do not vary from one connection to the next (for the log's
    /// summaries).
    pub(crate) fn reason(&self) -> String {
        match self {
            HeaderError::TooManyTlvs(_) => {
                format!("more than {MAX_V2_TLV_BYTES} bytes of TLVs in a v2 header")
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotAHeader => f.write_str("no PROXY protocol signature"),
            HeaderError::LineTooLong => {
                write!(f, "a v1 header without CRLF in {MAX_V1_LINE} bytes")
            }
            HeaderError::TooManyTlvs(n) => write!(
                f,
                "{n} bytes of TLVs in a v2 header (at most {MAX_V2_TLV_BYTES} accepted)"
            ),
            HeaderError::Invalid(version, why) => write!(f, "{version}: {why}"),
            HeaderError::NoAddress => {
                f.write_str("a v2 PROXY command without an IP address (family unspecified or UNIX)")
            }
            HeaderError::Closed => f.write_str("the connection closed before the header ended"),
            HeaderError::Io(e) => f.write_str(&tls::describe_io(e)),
        }
    }
}

/// How far the header goes, from the bytes seen so far.
#[derive(Debug, PartialEq, Eq)]
enum Extent {
    /// It is this many bytes long (perhaps more than were seen).
    Known(usize),
    /// Every byte seen is the header's, and it goes on.
    Unfinished,
}

/// Where the header at the start of `seen` (the connection's first bytes) ends, or why there
/// is no valid one. Decided on the framing alone: a v2 header is its 16 fixed bytes and the
/// length they give; a v1 header one line up to the first CRLF.
fn header_extent(seen: &[u8]) -> Result<Extent, HeaderError> {
    let starts = |signature: &[u8]| {
        let n = seen.len().min(signature.len());
        seen[..n] == signature[..n]
    };
    if starts(v2::PROTOCOL_PREFIX) {
        if seen.len() < V2_FIXED {
            return Ok(Extent::Unfinished);
        }
        let payload = match v2::Header::try_from(seen) {
            Ok(header) => header.length(),
            Err(v2::ParseError::Partial(_, length)) => length,
            Err(e) => return Err(HeaderError::Invalid("v2", e.to_string())),
        };
        let family = seen[V2_FAMILY_AT] & 0xF0;
        let addresses = [
            v2::AddressFamily::IPv4,
            v2::AddressFamily::IPv6,
            v2::AddressFamily::Unix,
        ]
        .into_iter()
        .find(|known| *known as u8 == family)
        .and_then(|known| known.byte_length())
        .unwrap_or(0);
        let tlvs = payload.saturating_sub(addresses);
        if tlvs > MAX_V2_TLV_BYTES {
            return Err(HeaderError::TooManyTlvs(tlvs));
        }
        return Ok(Extent::Known(V2_FIXED + payload));
    }
    if starts(V1_SIGNATURE) {
        return match seen.windows(2).position(|pair| pair == b"\r\n") {
            Some(at) if at + 2 <= MAX_V1_LINE => Ok(Extent::Known(at + 2)),
            None if seen.len() < MAX_V1_LINE => Ok(Extent::Unfinished),
            _ => Err(HeaderError::LineTooLong),
        };
    }
    Err(HeaderError::NotAHeader)
}

/// What the whole header `bytes` (as framed by [`header_extent`]) says, parsed by `ppp`.
fn parse_header(bytes: &[u8]) -> Result<ProxyHeader, HeaderError> {
    let client = |ip: IpAddr, port: u16| Ok(ProxyHeader::Client(SocketAddr::new(ip, port)));
    if bytes.starts_with(v2::PROTOCOL_PREFIX) {
        let invalid = |why: String| HeaderError::Invalid("v2", why);
        let header = v2::Header::try_from(bytes).map_err(|e| invalid(e.to_string()))?;
        if header.len() != bytes.len() {
            return Err(invalid("bytes past the announced length".into()));
        }
        // Their contents are not used, but they must be well formed.
        if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
            return Err(invalid(e.to_string()));
        }
        match (header.command, header.addresses) {
            // The addresses of a LOCAL command are to be ignored, whatever the family.
            (v2::Command::Local, _) => Ok(ProxyHeader::Local),
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                client(a.source_address.into(), a.source_port)
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                client(a.source_address.into(), a.source_port)
            }
            (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => {
                Err(HeaderError::NoAddress)
            }
        }
    } else {
        let invalid = |why: String| HeaderError::Invalid("v1", why);
        let header = v1::Header::try_from(bytes).map_err(|e| invalid(e.to_string()))?;
        if header.header.len() != bytes.len() {
            return Err(invalid("a carriage return inside the line".into()));
        }
        match header.addresses {
            v1::Addresses::Tcp4(a) => client(a.source_address.into(), a.source_port),
            v1::Addresses::Tcp6(a) => client(a.source_address.into(), a.source_port),
            // "the receiver ... SHOULD accept the connection and use the real connection's
            // parameters": what HAProxy sends for a health check in v1.
            v1::Addresses::Unknown => Ok(ProxyHeader::Local),
        }
    }
}

/// Reads the PROXY header that must begin `stream`, and not a byte more: the TLS handshake
/// goes on on the same stream. Every wait keeps to the stream's deadlines.
///
/// Peeks (`MSG_PEEK`) at up to 107 bytes, decides from them how long the header is, and
/// reads exactly that many. When the bytes that have arrived do not yet show the header's
/// end, it takes them off the stream (they are all the header's) and peeks again, so a header
/// in pieces costs a peek and a read per piece, never a busy wait. In all it reads at most 16
/// + 216 + 512 bytes (a v2 header with UNIX addresses and the most TLVs accepted).
pub(crate) fn read_proxy_header(stream: &mut DeadlineStream) -> Result<ProxyHeader, HeaderError> {
    let mut header = Vec::with_capacity(MAX_V1_LINE);
    let mut peeked = [0u8; MAX_V1_LINE];
    let length = loop {
        // Never reached in full: past 107 bytes without its end, a header is refused.
        let room = MAX_V1_LINE.saturating_sub(header.len()).max(1);
        let n = stream.peek(&mut peeked[..room]).map_err(HeaderError::Io)?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        let seen = [&header[..], &peeked[..n]].concat();
        match header_extent(&seen)? {
            Extent::Known(length) => break length,
            Extent::Unfinished => read_up_to(stream, &mut header, seen.len())?,
        }
    };
    read_up_to(stream, &mut header, length)?;
    parse_header(&header)
}

/// Reads from `stream` onto `header` until it holds `length` bytes.
fn read_up_to(
    stream: &mut DeadlineStream,
    header: &mut Vec<u8>,
    length: usize,
) -> Result<(), HeaderError> {
    let start = header.len();
    header.resize(start.max(length), 0);
    stream
        .read_exact(&mut header[start..])
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HeaderError::Closed,
            _ => HeaderError::Io(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    /// A v2 header as HAProxy sends it: TCP for a PROXY command, unspecified for LOCAL.
    fn v2_header(command: v2::Command, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
        let transport = match command {
            v2::Command::Proxy => v2::Protocol::Stream,
            v2::Command::Local => v2::Protocol::Unspecified,
        };
        v2::Builder::with_addresses(v2::Version::Two | command, transport, addresses)
            .build()
            .unwrap()
    }

    fn v2_proxy(client: &str) -> Vec<u8> {
        let client: SocketAddr = client.parse().unwrap();
        let server: SocketAddr = match client {
            SocketAddr::V4(_) => "192.0.2.1:8081".parse().unwrap(),
            SocketAddr::V6(_) => "[2001:db8::1]:8081".parse().unwrap(),
        };
        v2_header(v2::Command::Proxy, (client, server))
    }

    fn v2_with_tlv(bytes: usize) -> Vec<u8> {
        let client: SocketAddr = "192.0.2.10:5555".parse().unwrap();
        let server: SocketAddr = "192.0.2.1:8081".parse().unwrap();
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .write_tlv(v2::Type::NoOp, &vec![0u8; bytes - 3])
        .unwrap()
        .build()
        .unwrap()
    }

    fn client(addr: &str) -> ProxyHeader {
        ProxyHeader::Client(addr.parse().unwrap())
    }

    #[test]
    fn trusted_proxies_are_ranges_or_addresses() {
        let trusted =
            TrustedProxies::parse(&["127.0.0.1/32", "10.0.0.0/8", "::1/128", "192.0.2.7"]).unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "::1",
            "::ffff:10.9.9.9",
            "192.0.2.7",
        ] {
            assert!(trusted.trusts(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.2", "11.0.0.1", "::2", "192.0.2.8"] {
            assert!(!trusted.trusts(ip.parse().unwrap()), "{ip}");
        }
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/", ""] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_range_with_host_bits_is_refused_naming_its_network() {
        for (given, network, address) in [
            ("10.0.0.5/8", "10.0.0.0/8", "10.0.0.5/32"),
            ("2001:db8::1/32", "2001:db8::/32", "2001:db8::1/128"),
            ("192.0.2.1/0", "0.0.0.0/0", "192.0.2.1/32"),
        ] {
            assert_eq!(
                TrustedProxies::parse(&[given]).unwrap_err(),
                format!(
                    "{given:?} has host bits set: did you mean the network {network}, or the \
                     one address {address}?"
                )
            );
        }
        assert!(TrustedProxies::parse(&["10.0.0.0/8", "10.0.0.5", "::/0"]).is_ok());
    }

    #[test]
    fn a_header_ends_where_its_framing_says() {
        let v2 = v2_proxy("192.0.2.10:5555");
        assert_eq!(v2.len(), 28);
        for cut in 1..V2_FIXED {
            assert_eq!(
                header_extent(&v2[..cut]).unwrap(),
                Extent::Unfinished,
                "{cut}"
            );
        }
        for cut in V2_FIXED..=v2.len() {
            assert_eq!(
                header_extent(&v2[..cut]).unwrap(),
                Extent::Known(28),
                "{cut}"
            );
        }
        let followed = [&v2[..], b"\x16\x03\x01 a ClientHello"].concat();
        assert_eq!(header_extent(&followed).unwrap(), Extent::Known(28));

        let v1 = b"PROXY TCP4 192.0.2.10 192.0.2.1 5555 8081\r\n";
        for cut in 1..v1.len() {
            assert_eq!(
                header_extent(&v1[..cut]).unwrap(),
                Extent::Unfinished,
                "{cut}"
            );
        }
        let followed = [&v1[..], b"\x16\x03\x01"].concat();
        assert_eq!(header_extent(&followed).unwrap(), Extent::Known(v1.len()));
    }

    #[test]
    fn a_header_is_refused_as_soon_as_its_framing_is_wrong() {
        let refused = |seen: &[u8]| header_extent(seen).unwrap_err().to_string();
        // A TLS ClientHello, the legacy request, a near miss.
        assert_eq!(
            refused(b"\x16\x03\x01\x02\x00"),
            "no PROXY protocol signature"
        );
        assert_eq!(refused(b"<Body>"), "no PROXY protocol signature");
        assert_eq!(refused(b"PROXY\t"), "no PROXY protocol signature");
        assert_eq!(
            refused(b"\r\n\r\n\0\r\nQUIX"),
            "no PROXY protocol signature"
        );
        // A v1 line: 107 bytes with its CRLF, and no more.
        let line = |len: usize| {
            let mut line = b"PROXY UNKNOWN ".to_vec();
            line.resize(len - 2, b'x');
            line.extend(b"\r\n");
            line
        };
        assert_eq!(header_extent(&line(107)).unwrap(), Extent::Known(107));
        assert_eq!(
            header_extent(&line(108)[..106]).unwrap(),
            Extent::Unfinished
        );
        assert!(matches!(
            header_extent(&line(108)[..107]),
            Err(HeaderError::LineTooLong)
        ));
        assert!(matches!(
            header_extent(&line(108)),
            Err(HeaderError::LineTooLong)
        ));
        // A v2 header: the version and the command are checked on the fixed part.
        let mut v2 = v2_proxy("192.0.2.10:5555");
        v2[12] = 0x11;
        assert!(matches!(
            header_extent(&v2[..V2_FIXED]),
            Err(HeaderError::Invalid("v2", _))
        ));
        // At most 512 bytes of TLVs, refused before they are read.
        let most = v2_with_tlv(MAX_V2_TLV_BYTES);
        assert_eq!(
            header_extent(&most[..V2_FIXED]).unwrap(),
            Extent::Known(most.len())
        );
        let over = v2_with_tlv(MAX_V2_TLV_BYTES + 1);
        let err = header_extent(&over[..V2_FIXED]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "513 bytes of TLVs in a v2 header (at most 512 accepted)"
        );
        assert_eq!(err.reason(), "more than 512 bytes of TLVs in a v2 header");
    }

    #[test]
    fn headers_give_the_client_or_the_socket() {
        assert_eq!(
            parse_header(&v2_proxy("192.0.2.10:5555")).unwrap(),
            client("192.0.2.10:5555")
        );
        assert_eq!(
            parse_header(&v2_proxy("[2001:db8::7]:6000")).unwrap(),
            client("[2001:db8::7]:6000")
        );
        assert_eq!(
            parse_header(&v2_with_tlv(MAX_V2_TLV_BYTES)).unwrap(),
            client("192.0.2.10:5555")
        );
        // HAProxy's health check: LOCAL, no addresses.
        let local = v2_header(v2::Command::Local, v2::Addresses::Unspecified);
        assert_eq!(local, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
        assert_eq!(parse_header(&local).unwrap(), ProxyHeader::Local);
        let v1 = |text: &str| parse_header(text.as_bytes());
        assert_eq!(
            v1("PROXY TCP4 192.0.2.10 192.0.2.1 5555 8081\r\n").unwrap(),
            client("192.0.2.10:5555")
        );
        assert_eq!(
            v1("PROXY TCP6 2001:db8::7 2001:db8::1 6000 8081\r\n").unwrap(),
            client("[2001:db8::7]:6000")
        );
        assert_eq!(v1("PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::Local);
        for bad in [
            "PROXY TCP4 192.0.2.10 192.0.2.1 5555\r\n",
            "PROXY TCP4 192.0.2.300 192.0.2.1 5555 8081\r\n",
            "PROXY TCP4 2001:db8::7 2001:db8::1 6000 8081\r\n",
            "PROXY TCP4 192.0.2.10 192.0.2.1 05555 8081\r\n",
            "PROXY UDP4 192.0.2.10 192.0.2.1 5555 8081\r\n",
            "PROXY TCP4 192.0.2.10\r192.0.2.1 5555 8081\r\n",
        ] {
            assert!(
                matches!(v1(bad), Err(HeaderError::Invalid("v1", _))),
                "{bad:?}"
            );
        }
        // A PROXY command must name an IP address.
        let unspecified = v2_header(v2::Command::Proxy, v2::Addresses::Unspecified);
        assert!(matches!(
            parse_header(&unspecified),
            Err(HeaderError::NoAddress)
        ));
        // TLVs must be well formed: one announcing more than there is.
        let mut cut = v2_with_tlv(10);
        cut[V2_FIXED + 12 + 2] = 9;
        assert!(matches!(
            parse_header(&cut),
            Err(HeaderError::Invalid("v2", _))
        ));
    }

    /// A connected pair: the server's side, with `handshake` for its deadline, and the
    /// client's.
    fn pair(handshake: Duration) -> (DeadlineStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let ours = listener.accept().unwrap().0;
        (
            DeadlineStream::new(ours, Duration::from_secs(10), handshake),
            peer,
        )
    }

    #[test]
    fn the_header_is_read_and_not_a_byte_more() {
        for header in [
            v2_proxy("192.0.2.10:5555"),
            b"PROXY TCP4 192.0.2.10 192.0.2.1 5555 8081\r\n".to_vec(),
        ] {
            let (mut ours, mut peer) = pair(Duration::from_secs(10));
            peer.write_all(&[&header[..], b"\x16\x03\x01 ClientHello"].concat())
                .unwrap();
            assert_eq!(
                read_proxy_header(&mut ours).unwrap(),
                client("192.0.2.10:5555")
            );
            let mut rest = [0u8; 64];
            let n = ours.read(&mut rest).unwrap();
            assert_eq!(&rest[..n], b"\x16\x03\x01 ClientHello");
        }
    }

    #[test]
    fn a_header_in_pieces_is_read_whole() {
        for header in [
            v2_with_tlv(40),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 6000 8081\r\n".to_vec(),
        ] {
            let (mut ours, mut peer) = pair(Duration::from_secs(10));
            let writer = thread::spawn(move || {
                for piece in header.chunks(5) {
                    peer.write_all(piece).unwrap();
                    thread::sleep(Duration::from_millis(5));
                }
                peer.write_all(b"after").unwrap();
                peer
            });
            assert!(matches!(
                read_proxy_header(&mut ours),
                Ok(ProxyHeader::Client(_))
            ));
            let _peer = writer.join().unwrap();
            let mut rest = [0u8; 5];
            ours.read_exact(&mut rest).unwrap();
            assert_eq!(&rest, b"after");
        }
    }

    #[test]
    fn an_unfinished_header_ends_by_the_deadline_or_the_close() {
        let header = v2_proxy("192.0.2.10:5555");
        let (mut ours, mut peer) = pair(Duration::from_millis(300));
        peer.write_all(&header[..20]).unwrap();
        let started = Instant::now();
        let err = read_proxy_header(&mut ours).unwrap_err();
        assert_eq!(err.to_string(), "timed out");
        assert!(started.elapsed() < Duration::from_secs(5));

        let (mut ours, mut peer) = pair(Duration::from_secs(10));
        peer.write_all(b"PROXY TCP4 192.0.2.10").unwrap();
        drop(peer);
        assert!(matches!(
            read_proxy_header(&mut ours),
            Err(HeaderError::Closed)
        ));
    }
}
