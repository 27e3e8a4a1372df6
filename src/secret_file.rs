//! Files of secrets (private keys, session-ticket keys, the account database): their
//! permissions are checked on the opened file (`fstat`), never again by path, and a key is
//! read from that same handle. So the file checked is the file used, whatever is renamed into
//! its place meanwhile, and what was read is wiped from memory when dropped.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The permission bits that let others than the owner in: the group's and everyone's.
const NOT_THE_OWNERS: u32 = 0o077;

/// The permission bits (`rwxrwxrwx`) of the open `file` when others than its owner may use
/// it; `None` when it is its owner's alone.
pub(crate) fn open_to_others(file: &File) -> io::Result<Option<u32>> {
    Ok(exposed(file.metadata()?.mode()))
}

/// The permission bits of `mode` when they let others than the owner in.
fn exposed(mode: u32) -> Option<u32> {
    (mode & NOT_THE_OWNERS != 0).then_some(mode & 0o777)
}

/// Reads at most `limit` bytes of `file`, opened from `path`, a file of secrets (`what`:
/// "private key file"), into a buffer wiped when dropped; refuses it, before reading a byte,
/// if others than its owner may read it.
pub(crate) fn read_private(
    what: &str,
    path: &Path,
    mut file: File,
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>> {
    let metadata = file.metadata().map_err(|e| Error::file(what, path, e))?;
    if let Some(mode) = exposed(metadata.mode()) {
        return Err(Error::Config(format!(
            "the {what} {0} can be read by others (mode {mode:o}); make it private with \
             `chmod 600 {0}`",
            path.display()
        )));
    }
    // Room for the whole file and the byte that tells the end, so that a growing buffer
    // leaves no copy of the secret behind (a pipe's size is not known: it may grow).
    let room = usize::try_from(metadata.len().min(limit).saturating_add(1)).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(room));
    (&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::file(what, path, e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A file holding `bytes` in `dir`, with permissions `mode`.
    fn file_with_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_file_opened_is_the_file_checked_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = file_with_mode(dir.path(), "key", b"private", 0o600);
        let opened = File::open(&key).unwrap();
        // Another file, one anybody may read, takes the key's name after it was opened.
        let open = file_with_mode(dir.path(), "open", b"open to all", 0o644);
        std::fs::rename(&open, &key).unwrap();
        let bytes = read_private("key file", &key, opened, 100).unwrap();
        assert_eq!(bytes.as_slice(), b"private");

        // And the other way round: the file opened is refused, whatever has its name now.
        let open = file_with_mode(dir.path(), "open", b"open to all", 0o640);
        let opened = File::open(&open).unwrap();
        let private = file_with_mode(dir.path(), "private", b"private", 0o600);
        std::fs::rename(&private, &open).unwrap();
        let e = read_private("key file", &open, opened, 100)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "the key file {0} can be read by others (mode 640); make it private with \
                 `chmod 600 {0}`",
                open.display()
            )
        );
        assert_eq!(
            open_to_others(&File::open(&open).unwrap()).unwrap(),
            None,
            "the private file now has the name"
        );
    }

    #[test]
    fn any_permission_of_group_or_others_counts() {
        assert_eq!(exposed(0o100600), None);
        assert_eq!(exposed(0o100400), None);
        assert_eq!(exposed(0o100610), Some(0o610));
        assert_eq!(exposed(0o100601), Some(0o601));
        assert_eq!(exposed(0o104644), Some(0o644));
    }

    #[test]
    fn at_most_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_mode(dir.path(), "long", &[7; 100], 0o600);
        let bytes = read_private("key file", &path, File::open(&path).unwrap(), 81).unwrap();
        assert_eq!(bytes.len(), 81);
    }
}
