//! Asking the person at a terminal for input (the client's user, the operator at `./admin`):
//! prompts on stdout, answers as lines from stdin, passwords without echo when stdin is a
//! terminal. Every answer has a length limit.

use std::io::{self, BufRead, IsTerminal, Read, Write};

use crate::error::{Error, Result};

/// Where answers come from.
pub(crate) struct Prompter {
    terminal: bool,
}

impl Prompter {
    /// Answers from this process's stdin.
    pub(crate) fn stdin() -> Prompter {
        Prompter {
            terminal: io::stdin().is_terminal(),
        }
    }

    /// Prints `prompt` and reads one line of at most `limit` bytes; `None` at end of input.
    pub(crate) fn line(&self, prompt: &str, what: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        show(prompt)?;
        read_line(&mut io::stdin().lock(), what, limit)
    }

    /// As [`Prompter::line`], for text.
    pub(crate) fn text(&self, prompt: &str, what: &str, limit: usize) -> Result<Option<String>> {
        self.line(prompt, what, limit)?
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| Error::Input(format!("the {what} is not valid UTF-8")))
            })
            .transpose()
    }

    /// Prints `prompt` and reads a password: without echo from a terminal, else as a line.
    pub(crate) fn password(
        &self,
        prompt: &str,
        what: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>> {
        if !self.terminal {
            return self.line(prompt, what, limit);
        }
        show(prompt)?;
        self.hidden(what, limit)
    }

    /// A password for a script: from a terminal without echo, the prompt on stderr (stdout is
    /// the script's); otherwise a line from stdin, without a prompt.
    pub(crate) fn secret(&self, prompt: &str, what: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        if !self.terminal {
            return read_line(&mut io::stdin().lock(), what, limit);
        }
        eprint!("{prompt}");
        self.hidden(what, limit)
    }

    /// Whether answers come from a terminal.
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    fn hidden(&self, what: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        match rpassword::read_password() {
            Ok(password) if password.len() > limit => Err(too_long(what, limit)),
            Ok(password) => Ok(Some(password.into_bytes())),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io(
                format!("cannot read the {what} from the terminal"),
                e,
            )),
        }
    }
}

/// Writes a prompt (no line ending) and flushes it.
fn show(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to standard output", e))
}

fn too_long(what: &str, limit: usize) -> Error {
    Error::Input(format!("the {what} is too long (at most {limit} bytes)"))
}

/// One line of at most `limit` bytes, without its line ending; `None` at end of input.
fn read_line(input: &mut impl BufRead, what: &str, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let cap = limit as u64 + 2; // room for "\r\n"
    input
        .take(cap)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io(format!("cannot read the {what}"), e))?;
    if line.is_empty() {
        return Ok(None);
    }
    let complete = line.ends_with(b"\n");
    if complete {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    if line.len() > limit || (!complete && line.len() as u64 == cap) {
        return Err(too_long(what, limit));
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_endings() {
        let mut input = io::Cursor::new(b"aticle\r\n123\nlast".to_vec());
        let mut next = || read_line(&mut input, "x", 100).unwrap();
        assert_eq!(next(), Some(b"aticle".to_vec()));
        assert_eq!(next(), Some(b"123".to_vec()));
        assert_eq!(next(), Some(b"last".to_vec()));
        assert_eq!(next(), None);
    }

    #[test]
    fn long_lines_refused() {
        let mut long = vec![b'a'; 105];
        long.push(b'\n');
        assert!(read_line(&mut io::Cursor::new(long), "u", 100).is_err());
        let mut fits = vec![b'a'; 100];
        fits.extend_from_slice(b"\r\n");
        assert_eq!(
            read_line(&mut io::Cursor::new(fits), "u", 100)
                .unwrap()
                .unwrap()
                .len(),
            100
        );
    }
}
