//! The connections being served: how many in all and from each client address, and which of
//! them still wait for their TLS handshake or first request. When every place is taken, a
//! connection that has not sent a request is closed to make room: the one that has waited
//! longest, from the address with the most such connections. So a horde of idle sockets
//! cannot keep honest clients out, and a client with one connection in its handshake is the
//! last to lose it.
//!
//! A connection from a trusted proxy (a load balancer speaking the PROXY protocol) is admitted
//! under the proxy's address, which no per-address cap limits (every client behind the
//! balancer shares it), and moved to its client's address once the PROXY header names it
//! ([`ConnectionSlot::set_address`]); that address's cap applies then.

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::address::ClientAddress;

/// How many connections may be served at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// In all (`--max-clients`).
    pub(crate) total: usize,
    /// From one client address (`--max-per-address`; an IPv6 /64 is one address).
    pub(crate) per_address: usize,
}

/// What became of a new connection.
pub(super) enum Admission {
    /// It is served.
    Admitted(ConnectionSlot),
    /// It is served, in the place of the longest-waiting connection, from this address,
    /// which was closed.
    AdmittedByEvicting(ConnectionSlot, String),
    /// It is closed at once.
    Refused(Refusal),
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its address holds as many connections as one address may.
    AddressFull,
    /// Every place is taken by a connection that has sent a request.
    ServerFull,
}

impl Refusal {
    /// A short name, for the metrics' label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Refusal::AddressFull => "address_full",
            Refusal::ServerFull => "server_full",
        }
    }

    /// Why, in words, for the log.
    pub(super) fn reason(self, limits: ConnectionLimits) -> String {
        match self {
            Refusal::AddressFull => format!(
                "each address may hold {} connections at once (--max-per-address)",
                limits.per_address
            ),
            Refusal::ServerFull => format!(
                "{} clients already being served, all past their first request (--max-clients)",
                limits.total
            ),
        }
    }
}

/// The connections being served.
pub(super) struct Connections {
    limits: ConnectionLimits,
    registry: Mutex<Registry>,
    changed: Condvar,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Every connection whose thread has not finished, closed ones included, by id.
    open: HashMap<u64, Open>,
    /// Those that have not sent a request yet, by address, oldest first (ids grow with
    /// time), each with a handle on its socket to close it by.
    waiting: HashMap<String, BTreeMap<u64, TcpStream>>,
    /// Connections counted against the limits: open and not closed to make room.
    counted: usize,
    per_address: HashMap<String, usize>,
}

struct Open {
    address: String,
    evicted: bool,
    /// Whether it counts against its address's cap: not while it waits under a trusted
    /// proxy's address for the PROXY header.
    capped: bool,
}

impl Registry {
    /// The connection to close to make room: the oldest waiting one of the address with the
    /// most waiting.
    fn take_victim(&mut self) -> Option<(u64, TcpStream)> {
        let address = self
            .waiting
            .iter()
            .filter_map(|(address, waiting)| {
                let oldest = *waiting.keys().next()?;
                Some(((waiting.len(), std::cmp::Reverse(oldest)), address))
            })
            .max()?
            .1
            .clone();
        let waiting = self.waiting.get_mut(&address)?;
        let victim = waiting.pop_first();
        if waiting.is_empty() {
            self.waiting.remove(&address);
        }
        victim
    }

    /// Whether `address` holds as many connections as one address may.
    fn address_full(&self, address: &str, limits: ConnectionLimits) -> bool {
        self.per_address.get(address).copied().unwrap_or(0) >= limits.per_address
    }

    /// Forgets that connection `id` from `address` waits.
    fn stop_waiting(&mut self, id: u64, address: &str) {
        if let Some(waiting) = self.waiting.get_mut(address) {
            waiting.remove(&id);
            if waiting.is_empty() {
                self.waiting.remove(address);
            }
        }
    }

    /// Stops counting a connection from `address` against the limits (against its address's
    /// cap too if `capped`).
    fn uncount(&mut self, address: &str, capped: bool) {
        self.counted -= 1;
        if !capped {
            return;
        }
        if let Some(n) = self.per_address.get_mut(address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(address);
            }
        }
    }
}

impl Connections {
    /// No connection yet, within `limits`.
    pub(super) fn new(limits: ConnectionLimits) -> Connections {
        Connections {
            limits,
            registry: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Decides on `tcp`, a new connection from `client`: a place of its own, the place of the
    /// connection that has waited longest without sending a request (which is closed), or a
    /// refusal.
    pub(super) fn admit(self: &Arc<Self>, tcp: &TcpStream, client: ClientAddress) -> Admission {
        self.admit_as(tcp, client, true)
    }

    /// As [`Connections::admit`], for `tcp` from `proxy`, a trusted proxy whose PROXY header
    /// has yet to name the client: counted against `--max-clients` and closed to make room
    /// like any connection that waits, but not against the proxy's address's cap. The client
    /// thread moves it to the client's address with [`ConnectionSlot::set_address`].
    pub(super) fn admit_via_proxy(
        self: &Arc<Self>,
        tcp: &TcpStream,
        proxy: ClientAddress,
    ) -> Admission {
        self.admit_as(tcp, proxy, false)
    }

    fn admit_as(
        self: &Arc<Self>,
        tcp: &TcpStream,
        client: ClientAddress,
        capped: bool,
    ) -> Admission {
        let address = client.key();
        let mut registry = self.lock();
        if capped && registry.address_full(&address, self.limits) {
            return Admission::Refused(Refusal::AddressFull);
        }
        let mut evicted = None;
        if registry.counted >= self.limits.total {
            let Some((victim, socket)) = registry.take_victim() else {
                return Admission::Refused(Refusal::ServerFull);
            };
            // Its thread sees the connection end at once, and then frees the thread.
            let _ = socket.shutdown(Shutdown::Both);
            if let Some(open) = registry.open.get_mut(&victim) {
                open.evicted = true;
                let (victim_address, capped) = (open.address.clone(), open.capped);
                registry.uncount(&victim_address, capped);
                evicted = Some(victim_address);
            }
        }
        let id = registry.next_id;
        registry.next_id += 1;
        match tcp.try_clone() {
            Ok(socket) => {
                registry
                    .waiting
                    .entry(address.clone())
                    .or_default()
                    .insert(id, socket);
            }
            // Out of descriptors: served, but it cannot be closed to make room.
            Err(e) => log::debug!("cannot keep a handle on a new connection: {e}"),
        }
        registry.counted += 1;
        if capped {
            *registry.per_address.entry(address.clone()).or_default() += 1;
        }
        registry.open.insert(
            id,
            Open {
                address,
                evicted: false,
                capped,
            },
        );
        let slot = ConnectionSlot {
            id,
            connections: Arc::clone(self),
        };
        match evicted {
            Some(victim) => Admission::AdmittedByEvicting(slot, victim),
            None => Admission::Admitted(slot),
        }
    }

    /// How many connections are open (closed ones whose thread has not finished included).
    pub(super) fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Waits up to `limit` for every connection to finish; gives how many have not.
    pub(super) fn wait_idle(&self, limit: Duration) -> usize {
        let (registry, _) = self
            .changed
            .wait_timeout_while(self.lock(), limit, |registry| !registry.open.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        registry.open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's place among the [`Connections`]; freed when dropped.
pub(super) struct ConnectionSlot {
    id: u64,
    connections: Arc<Connections>,
}

impl ConnectionSlot {
    /// The client has sent its first request: from now on the connection is not closed to
    /// make room. `false` if it was closed already (between its first read and now): its
    /// place is another's, and it must not be served.
    #[must_use]
    pub(super) fn start(&self) -> bool {
        let mut registry = self.connections.lock();
        let Some(open) = registry.open.get(&self.id).filter(|open| !open.evicted) else {
            return false;
        };
        let address = open.address.clone();
        registry.stop_waiting(self.id, &address);
        true
    }

    /// Moves a connection admitted through a trusted proxy
    /// ([`Connections::admit_via_proxy`]) to its client's address `client`, as the PROXY header
    /// gives it: from now on it counts against that address's cap, and waits (to be closed to
    /// make room) among that address's connections. Refused, leaving the connection where it
    /// was, if the address already holds as many as one address may. A connection already
    /// closed to make room, or already moved, stays as it is.
    pub(super) fn set_address(&self, client: ClientAddress) -> Result<(), Refusal> {
        let address = client.key();
        let mut registry = self.connections.lock();
        let Some(open) = registry.open.get(&self.id) else {
            return Ok(());
        };
        if open.evicted || open.capped {
            return Ok(());
        }
        let previous = open.address.clone();
        if registry.address_full(&address, self.connections.limits) {
            return Err(Refusal::AddressFull);
        }
        *registry.per_address.entry(address.clone()).or_default() += 1;
        if let Some(socket) = registry
            .waiting
            .get_mut(&previous)
            .and_then(|waiting| waiting.remove(&self.id))
        {
            registry.stop_waiting(self.id, &previous);
            registry
                .waiting
                .entry(address.clone())
                .or_default()
                .insert(self.id, socket);
        }
        if let Some(open) = registry.open.get_mut(&self.id) {
            open.address = address;
            open.capped = true;
        }
        Ok(())
    }

    /// Whether the connection was closed to make room for another.
    pub(super) fn evicted(&self) -> bool {
        self.connections
            .lock()
            .open
            .get(&self.id)
            .is_some_and(|open| open.evicted)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut registry = self.connections.lock();
        if let Some(open) = registry.open.remove(&self.id) {
            registry.stop_waiting(self.id, &open.address);
            if !open.evicted {
                registry.uncount(&open.address, open.capped);
            }
        }
        drop(registry);
        self.connections.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{SocketAddr, TcpListener};

    /// A client at `ip`.
    fn at(ip: &str) -> ClientAddress {
        ClientAddress::new(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    /// A connected pair: the server's side and the client's.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    fn slot(admission: Admission) -> ConnectionSlot {
        match admission {
            Admission::Admitted(slot) | Admission::AdmittedByEvicting(slot, _) => slot,
            Admission::Refused(why) => panic!("refused: {why:?}"),
        }
    }

    #[test]
    fn the_longest_waiting_connection_makes_room() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 2,
            per_address: 10,
        };
        let connections = Arc::new(Connections::new(limits));
        let (a_ip, b_ip) = (at("192.0.2.1"), at("192.0.2.2"));
        let (first, mut first_client) = pair(&listener);
        let (second, _second_client) = pair(&listener);
        let oldest = slot(connections.admit(&first, a_ip));
        let started = slot(connections.admit(&second, a_ip));
        assert!(started.start());
        // Full: the one still waiting is closed for the newcomer.
        let (third, _third_client) = pair(&listener);
        let Admission::AdmittedByEvicting(newest, victim) = connections.admit(&third, b_ip) else {
            panic!("not admitted by evicting");
        };
        assert_eq!(victim, "192.0.2.1");
        assert!(oldest.evicted() && !started.evicted() && !newest.evicted());
        assert_eq!(first_client.read(&mut [0u8; 1]).unwrap(), 0, "closed");
        // Now every place holds one that has sent a request, or waits since just now.
        assert!(newest.start());
        let (fourth, _fourth_client) = pair(&listener);
        assert!(matches!(
            connections.admit(&fourth, b_ip),
            Admission::Refused(Refusal::ServerFull)
        ));
        drop(oldest);
        assert_eq!(connections.wait_idle(Duration::from_millis(10)), 2);
        drop((started, newest));
        assert_eq!(connections.wait_idle(Duration::from_millis(10)), 0);
    }

    #[test]
    fn a_connection_closed_to_make_room_after_its_first_read_does_not_start() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 1,
            per_address: 10,
        };
        let connections = Arc::new(Connections::new(limits));
        let ip = at("192.0.2.1");
        let (first, _first_client) = pair(&listener);
        let (second, _second_client) = pair(&listener);
        // The first has read its request but not started when the second takes its place.
        let read_its_request = slot(connections.admit(&first, ip));
        let newcomer = slot(connections.admit(&second, ip));
        assert!(!read_its_request.start(), "its place is the newcomer's");
        assert!(read_its_request.evicted());
        assert!(newcomer.start());
        // One place, the newcomer's, started: no room for anyone else.
        let (third, _third_client) = pair(&listener);
        assert!(matches!(
            connections.admit(&third, ip),
            Admission::Refused(Refusal::ServerFull)
        ));
        drop((read_its_request, newcomer));
        assert_consistent(&connections);
    }

    #[test]
    fn the_address_with_the_most_waiting_loses_one_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 3,
            per_address: 10,
        };
        let connections = Arc::new(Connections::new(limits));
        let honest = at("192.0.2.1");
        let horde = at("192.0.2.66");
        let sockets: Vec<_> = (0..5).map(|_| pair(&listener)).collect();
        let oldest = slot(connections.admit(&sockets[0].0, honest));
        let _h1 = slot(connections.admit(&sockets[1].0, horde));
        let _h2 = slot(connections.admit(&sockets[2].0, horde));
        let mut kept = Vec::new();
        for socket in &sockets[3..] {
            let Admission::AdmittedByEvicting(newcomer, victim) =
                connections.admit(&socket.0, horde)
            else {
                panic!("not admitted by evicting");
            };
            assert_eq!(victim, "192.0.2.66");
            kept.push(newcomer);
        }
        assert!(!oldest.evicted(), "the one waiting alone is kept");
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 10,
            per_address: 2,
        };
        let connections = Arc::new(Connections::new(limits));
        let one = at("2001:db8::1");
        let same_net = at("2001:db8::2");
        let other = at("2001:db8:0:1::1");
        let sockets: Vec<_> = (0..4).map(|_| pair(&listener)).collect();
        let first = slot(connections.admit(&sockets[0].0, one));
        let _second = slot(connections.admit(&sockets[1].0, same_net));
        assert!(matches!(
            connections.admit(&sockets[2].0, one),
            Admission::Refused(Refusal::AddressFull)
        ));
        let _elsewhere = slot(connections.admit(&sockets[3].0, other));
        drop(first);
        assert!(matches!(
            connections.admit(&sockets[2].0, one),
            Admission::Admitted(_)
        ));
    }

    /// Asserts that the counts add up to what `open` holds (and nothing is left over).
    fn assert_consistent(connections: &Connections) {
        let registry = connections.lock();
        let live: Vec<&Open> = registry.open.values().filter(|o| !o.evicted).collect();
        assert_eq!(registry.counted, live.len());
        let mut per_address: HashMap<String, usize> = HashMap::new();
        for open in live.iter().filter(|o| o.capped) {
            *per_address.entry(open.address.clone()).or_default() += 1;
        }
        assert_eq!(registry.per_address, per_address);
        for (address, waiting) in &registry.waiting {
            assert!(!waiting.is_empty(), "an empty waiting list for {address}");
            for id in waiting.keys() {
                assert_eq!(&registry.open[id].address, address, "connection {id}");
            }
        }
    }

    #[test]
    fn a_trusted_proxy_is_not_capped_but_its_clients_are() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 10,
            per_address: 2,
        };
        let connections = Arc::new(Connections::new(limits));
        let proxy = at("10.0.0.1");
        let (client, other) = (at("192.0.2.10"), at("192.0.2.11"));
        let sockets: Vec<_> = (0..6).map(|_| pair(&listener)).collect();
        // Five at once from the balancer, over the cap of 2: all wait for their headers.
        let slots: Vec<ConnectionSlot> = sockets[..5]
            .iter()
            .map(|(tcp, _)| slot(connections.admit_via_proxy(tcp, proxy)))
            .collect();
        assert_consistent(&connections);
        assert_eq!(connections.lock().waiting["10.0.0.1"].len(), 5);
        // The headers name the clients: the client's cap applies.
        assert_eq!(slots[0].set_address(client), Ok(()));
        assert_eq!(slots[1].set_address(client), Ok(()));
        assert_eq!(slots[2].set_address(client), Err(Refusal::AddressFull));
        assert_eq!(slots[3].set_address(other), Ok(()));
        assert_consistent(&connections);
        {
            let registry = connections.lock();
            assert_eq!(registry.per_address["192.0.2.10"], 2);
            assert_eq!(registry.per_address["192.0.2.11"], 1);
            assert!(!registry.per_address.contains_key("10.0.0.1"));
            assert_eq!(registry.waiting["192.0.2.10"].len(), 2);
            assert_eq!(
                registry.waiting["10.0.0.1"].len(),
                2,
                "the refused one and one"
            );
        }
        // A direct connection from the client shares its cap.
        assert!(matches!(
            connections.admit(&sockets[5].0, client),
            Admission::Refused(Refusal::AddressFull)
        ));
        // Moved once; a second header changes nothing.
        assert_eq!(slots[0].set_address(other), Ok(()));
        assert_eq!(connections.lock().per_address["192.0.2.11"], 1);
        // When one of the client's connections ends, the refused one may take its place.
        let mut slots = slots;
        drop(slots.remove(0));
        assert_eq!(slots[1].set_address(client), Ok(()));
        assert_consistent(&connections);
        drop(slots);
        assert_consistent(&connections);
        assert_eq!(connections.wait_idle(Duration::from_millis(10)), 0);
        let registry = connections.lock();
        assert!(registry.per_address.is_empty() && registry.waiting.is_empty());
    }

    #[test]
    fn connections_waiting_for_their_header_count_and_make_room() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = ConnectionLimits {
            total: 3,
            per_address: 10,
        };
        let connections = Arc::new(Connections::new(limits));
        let proxy = at("10.0.0.1");
        let client = at("192.0.2.10");
        let sockets: Vec<_> = (0..5).map(|_| pair(&listener)).collect();
        let moved = slot(connections.admit_via_proxy(&sockets[0].0, proxy));
        moved.set_address(client).unwrap();
        let started = slot(connections.admit_via_proxy(&sockets[1].0, proxy));
        started.set_address(client).unwrap();
        assert!(started.start());
        let headless = slot(connections.admit_via_proxy(&sockets[2].0, proxy));
        // Full. The proxy's address has one waiting, the client's one: the older goes first,
        // and it is counted where it was moved.
        let Admission::AdmittedByEvicting(fourth, victim) =
            connections.admit_via_proxy(&sockets[3].0, proxy)
        else {
            panic!("not admitted by evicting");
        };
        assert_eq!(victim, "192.0.2.10");
        assert!(moved.evicted());
        assert_eq!(moved.set_address(client), Ok(()), "closed: nothing to move");
        assert_consistent(&connections);
        // Now the proxy's address has the most waiting: one that still waits for its header.
        let Admission::AdmittedByEvicting(_fifth, victim) =
            connections.admit(&sockets[4].0, client)
        else {
            panic!("not admitted by evicting");
        };
        assert_eq!(victim, "10.0.0.1");
        assert!(headless.evicted() && !fourth.evicted() && !started.evicted());
        assert_consistent(&connections);
    }
}
