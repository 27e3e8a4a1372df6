//! Where the server writes the original's console lines (`Connection: ...`, the client's
//! certificate, `Client msg: ...`): stdout for the program, any writer for a test that runs
//! the server in its own process.

use std::io::{self, Write};
use std::sync::Mutex;

/// The server's own output, written in one piece per event, so that the lines of clients
/// served at once never interleave. A writer that fails (a closed stdout) must not stop the
/// server, so its errors are only logged.
pub struct Console(Mutex<Box<dyn Write + Send>>);

impl Console {
    /// The program's standard output, as the original wrote.
    pub fn stdout() -> Console {
        Console::new(io::stdout())
    }

    /// Lines written to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Console {
        Console(Mutex::new(Box::new(out)))
    }

    /// Writes one event's lines.
    pub(super) fn write(&self, text: &str) {
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            log::debug!("cannot write the console: {e}");
        }
    }
}
