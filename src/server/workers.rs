//! The threads that serve clients, each reused for client after client.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use super::memory;

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
                memory::note_client_thread();
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
}
