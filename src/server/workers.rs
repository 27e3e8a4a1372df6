//! The threads that serve clients, and the slots that cap how many are served at once.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Stack of a client thread. A handshake, a request, a password hash and SQLite's statements
/// fit with room to spare (documents are at most 8 levels deep); only the pages a thread
/// touches become resident, so ten thousand threads cost what they use, not 2 MiB each.
const CLIENT_THREAD_STACK: usize = 256 * 1024;

/// One client's whole connection, run on a thread of its own.
pub(super) type ClientJob = Box<dyn FnOnce() + Send>;

/// The threads that serve clients: each serves one client at a time, for the whole of its
/// connection, and then waits for the next client instead of exiting; a thread that waits
/// [`IDLE_THREAD_LIFETIME`] exits, so an idle server gives the memory back. Creating a thread
/// costs about as much CPU as a resumed handshake; reusing one costs nothing.
pub(super) struct ClientThreads {
    /// The waiting threads, each reachable through its own channel; the latest last.
    waiting: Arc<Mutex<Vec<WaitingThread>>>,
    next_id: Arc<AtomicU64>,
}

/// A waiting client thread: its number, and the channel its next client comes by.
type WaitingThread = (u64, mpsc::Sender<ClientJob>);

/// How long a client thread waits for another client before it exits.
const IDLE_THREAD_LIFETIME: Duration = Duration::from_secs(60);

impl ClientThreads {
    pub(super) fn new() -> ClientThreads {
        ClientThreads {
            waiting: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// Runs `job` on the thread that waited least long, or on a new one if none waits.
    pub(super) fn serve(&self, job: ClientJob) -> io::Result<()> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match waiting {
            Some((_, thread)) => match thread.send(job) {
                Ok(()) => Ok(()),
                Err(mpsc::SendError(job)) => self.start(job),
            },
            None => self.start(job),
        }
    }

    fn start(&self, first: ClientJob) -> io::Result<()> {
        let (waiting, next_id) = (Arc::clone(&self.waiting), Arc::clone(&self.next_id));
        thread::Builder::new()
            .name("client".into())
            .stack_size(CLIENT_THREAD_STACK)
            .spawn(move || {
                let mut job = first;
                loop {
                    job();
                    let (sender, receiver) = mpsc::channel();
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    waiting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((id, sender));
                    job = match receiver.recv_timeout(IDLE_THREAD_LIFETIME) {
                        Ok(next) => next,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let mut list = waiting.lock().unwrap_or_else(|e| e.into_inner());
                            match list.iter().position(|(i, _)| *i == id) {
                                Some(at) => {
                                    list.remove(at);
                                    return;
                                }
                                // Taken off the list just now: a client is on its way.
                                None => {
                                    drop(list);
                                    match receiver.recv() {
                                        Ok(next) => next,
                                        Err(_) => return,
                                    }
                                }
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                }
            })
            .map(drop)
    }
}

/// Counts the clients being served, up to a maximum.
pub(super) struct ClientSlots {
    max: usize,
    active: Mutex<usize>,
    changed: Condvar,
}

/// One client's place among [`ClientSlots`]; freed when dropped.
pub(super) struct ClientSlot(Arc<ClientSlots>);

impl ClientSlots {
    pub(super) fn new(max: usize) -> Self {
        ClientSlots {
            max,
            active: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<ClientSlot> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if *active >= self.max {
            return None;
        }
        *active += 1;
        Some(ClientSlot(Arc::clone(self)))
    }

    /// Waits up to `limit` for every client to finish; gives how many have not.
    pub(super) fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        while *active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            active = self
                .changed
                .wait_timeout(active, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *active
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_threads_are_reused() {
        let threads = ClientThreads::new();
        let (done, finished) = mpsc::channel();
        for _ in 0..10 {
            let done = done.clone();
            threads
                .serve(Box::new(move || done.send(thread::current().id()).unwrap()))
                .unwrap();
            let ran_on = finished.recv().unwrap();
            // Wait until that thread is back among the waiting ones.
            while threads.waiting.lock().unwrap().is_empty() {
                thread::yield_now();
            }
            assert_eq!(threads.waiting.lock().unwrap().len(), 1, "{ran_on:?}");
        }
        // Two at once need two threads.
        let (hold, release) = mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        for _ in 0..2 {
            let (done, release) = (done.clone(), release.clone());
            threads
                .serve(Box::new(move || {
                    done.send(thread::current().id()).unwrap();
                    let _ = release.lock().unwrap().recv();
                }))
                .unwrap();
        }
        let (a, b) = (finished.recv().unwrap(), finished.recv().unwrap());
        assert_ne!(a, b);
        drop(hold);
    }

    #[test]
    fn slots_cap_and_free() {
        let slots = Arc::new(ClientSlots::new(2));
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
        assert_eq!(slots.wait_idle(Duration::from_millis(10)), 1);
    }
}
