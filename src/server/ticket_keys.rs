//! Session-ticket keys shared by several server instances (`--ticket-key-file`), so that a
//! ticket one instance issued resumes on another.
//!
//! A key file holds 80 bytes in the layout of nginx's 80-byte `ssl_session_ticket_key`
//! files: a 16-byte key name, a 32-byte HMAC-SHA256 key and a 32-byte AES-256 key. The first
//! file's key encrypts new tickets; every file's key decrypts, and a ticket under any key but
//! the first is accepted and renewed under the first, so keys rotate without breaking
//! resumption.
//!
//! OpenSSL takes such keys through its ticket-key callback
//! (`SSL_CTX_set_tlsext_ticket_key_evp_cb`), which rust-openssl does not wrap
//! (sfackler/rust-openssl#1828). Its setter and `OSSL_PARAM_construct_utf8_string` are the
//! two declarations openssl-sys lacks, in one `unsafe extern` block; the other unsafe code
//! is three blocks: installing the callback, turning the callback's pointers into
//! references, and setting the HMAC key. The keys live in the context's extra data, so each
//! context (remade at every renewal) carries its own.

use std::fmt;
use std::io;
use std::os::raw::{c_char, c_int, c_uchar};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtxRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{SslContext, SslContextBuilder, SslRef};
use openssl_sys::{EVP_CIPHER_CTX, EVP_MAC_CTX, OSSL_PARAM, SSL, SSL_CTX};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::secret_file::read_private;

/// The size of a key file: name, HMAC key, AES key.
const KEY_FILE_LEN: usize = NAME_LEN + HMAC_KEY_LEN + AES_KEY_LEN;
const NAME_LEN: usize = 16;
const HMAC_KEY_LEN: usize = 32;
const AES_KEY_LEN: usize = 32;
/// The IV buffer OpenSSL hands the callback (`EVP_MAX_IV_LENGTH`), AES-CBC's IV size.
const IV_LEN: usize = 16;

/// What the callback tells OpenSSL (SSL_CTX_set_tlsext_ticket_key_evp_cb(3)).
const TICKET_UNKNOWN_KEY: c_int = 0;
const TICKET_OK: c_int = 1;
const TICKET_OK_RENEW: c_int = 2;
const TICKET_ERROR: c_int = -1;

unsafe extern "C" {
    /// `int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *, int (*cb)(SSL *, unsigned char
    /// key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *, EVP_MAC_CTX *,
    /// int enc))`: exported by libssl 3, not declared by openssl-sys.
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(
        ctx: *mut SSL_CTX,
        cb: Option<TicketKeyCallback>,
    ) -> c_int;
    /// `OSSL_PARAM OSSL_PARAM_construct_utf8_string(const char *key, char *buf, size_t
    /// bsize)`: libcrypto 3, not declared by openssl-sys.
    fn OSSL_PARAM_construct_utf8_string(
        key: *const c_char,
        buf: *mut c_char,
        bsize: usize,
    ) -> OSSL_PARAM;
}

type TicketKeyCallback = unsafe extern "C" fn(
    ssl: *mut SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut EVP_CIPHER_CTX,
    hmac: *mut EVP_MAC_CTX,
    enc: c_int,
) -> c_int;

/// One session-ticket key, as read from its file; wiped from memory when dropped (with the
/// context that holds it, at the next renewal).
#[derive(Zeroize, ZeroizeOnDrop)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub(super) struct TicketKey {
    /// Sent in clear in every ticket, to find the key again.
    name: [u8; NAME_LEN],
    hmac_key: [u8; HMAC_KEY_LEN],
    aes_key: [u8; AES_KEY_LEN],
}

impl TicketKey {
    /// Splits the 80 bytes of a key file; `None` for any other length.
    fn from_bytes(bytes: &[u8]) -> Option<TicketKey> {
        let bytes: &[u8; KEY_FILE_LEN] = bytes.try_into().ok()?;
        let (name, keys) = bytes.split_at(NAME_LEN);
        let (hmac_key, aes_key) = keys.split_at(HMAC_KEY_LEN);
        Some(TicketKey {
            name: name.try_into().ok()?,
            hmac_key: hmac_key.try_into().ok()?,
            aes_key: aes_key.try_into().ok()?,
        })
    }
}

/// Never printed: the keys are secrets, and the name is kept with them (as nginx does).
impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// The session-ticket keys of one TLS context, in the order of their files: the first
/// encrypts new tickets, all decrypt. Never empty.
#[derive(Debug)]
pub(super) struct TicketKeys(Vec<TicketKey>);

impl TicketKeys {
    /// The key that encrypts new tickets.
    fn encrypting(&self) -> &TicketKey {
        &self.0[0]
    }

    /// The key named `name`, and whether a ticket under it is to be renewed (it is not the
    /// first key); `None` if no key has that name (the client gets a full handshake).
    fn decrypting(&self, name: &[u8; NAME_LEN]) -> Option<(&TicketKey, bool)> {
        let position = self.0.iter().position(|key| key.name == *name)?;
        Some((&self.0[position], position > 0))
    }
}

/// Like nginx's `ngx_ssl_session_ticket_keys`: reads every key file in order. A file that
/// cannot be read, that others may read, or that does not hold exactly 80 bytes is an error
/// that names it.
pub(super) fn load_ticket_keys(files: &[PathBuf]) -> Result<TicketKeys> {
    if files.is_empty() {
        return Err(Error::Config("no session-ticket key file given".into()));
    }
    let keys = files
        .iter()
        .map(|file| read_ticket_key(file))
        .collect::<Result<Vec<_>>>()?;
    Ok(TicketKeys(keys))
}

fn read_ticket_key(path: &Path) -> Result<TicketKey> {
    const WHAT: &str = "session-ticket key file";
    let file = std::fs::File::open(path).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (`make ticket-key` writes one)"
        } else {
            ""
        };
        Error::Config(format!("cannot read {WHAT} {}: {e}{hint}", path.display()))
    })?;
    // One byte more than a key tells a longer file, without reading a huge one.
    let bytes = read_private(WHAT, path, file, KEY_FILE_LEN as u64 + 1)?;
    TicketKey::from_bytes(&bytes).ok_or_else(|| {
        let size = if bytes.len() > KEY_FILE_LEN {
            format!("more than {KEY_FILE_LEN}")
        } else {
            bytes.len().to_string()
        };
        Error::Config(format!(
            "the {WHAT} {} holds {size} bytes; it must hold exactly {KEY_FILE_LEN} (a 16-byte \
             name, a 32-byte HMAC key and a 32-byte AES key, as `make ticket-key` writes)",
            path.display()
        ))
    })
}

/// Makes the context under construction encrypt and decrypt its session tickets with `keys`
/// (instead of keys OpenSSL draws for it).
pub(super) fn set_ticket_keys(ctx: &mut SslContextBuilder, keys: TicketKeys) -> Result<()> {
    let index = match KEYS_INDEX.get() {
        Some(index) => *index,
        None => {
            let index = SslContext::new_ex_index()
                .map_err(|e| Error::tls("cannot make room for session-ticket keys", e))?;
            *KEYS_INDEX.get_or_init(|| index)
        }
    };
    ctx.set_ex_data(index, keys);
    // SAFETY: `ctx` is a live SSL_CTX we hold exclusively; the callback matches the C
    // signature and finds its keys in the context's own extra data, set just above, which
    // lives as long as the context.
    let set =
        unsafe { SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx.as_ptr(), Some(ticket_key_callback)) };
    if set != 1 {
        return Err(Error::tls(
            "cannot install the session-ticket key callback",
            ErrorStack::get(),
        ));
    }
    Ok(())
}

/// Where each context keeps its [`TicketKeys`]: one slot for the whole process.
static KEYS_INDEX: OnceLock<Index<SslContext, TicketKeys>> = OnceLock::new();

/// Like nginx's `ngx_ssl_ticket_key_callback`, after the recipe of
/// SSL_CTX_set_tlsext_ticket_key_evp_cb(3). To issue a ticket (`enc == 1`): a random IV, the
/// first key's name, AES-256-CBC encryption and HMAC-SHA256 under it. To read one (`enc ==
/// 0`): the key of that name, decryption and HMAC under it, and a renewal unless it is the
/// first key; an unknown name means a full handshake.
///
/// # Safety
///
/// Only for OpenSSL to call, with the arguments that callback receives.
unsafe extern "C" fn ticket_key_callback(
    ssl: *mut SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut EVP_CIPHER_CTX,
    hmac: *mut EVP_MAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: OpenSSL calls this in a handshake on the live `ssl`, with `key_name` pointing
    // to 16 writable bytes, `iv` to EVP_MAX_IV_LENGTH (16) writable bytes and a live cipher
    // context, none of them used by anything else until we return.
    let (ssl, key_name, iv, cipher) = unsafe {
        (
            SslRef::from_ptr(ssl),
            &mut *key_name.cast::<[u8; NAME_LEN]>(),
            &mut *iv.cast::<[u8; IV_LEN]>(),
            CipherCtxRef::from_ptr_mut(cipher),
        )
    };
    let Some(keys) = KEYS_INDEX
        .get()
        .and_then(|index| ssl.ssl_context().ex_data(*index))
    else {
        return TICKET_ERROR;
    };
    let aes_256_cbc = Some(Cipher::aes_256_cbc());
    let (key, answer) = if enc == 1 {
        let key = keys.encrypting();
        if openssl::rand::rand_bytes(iv).is_err() {
            return TICKET_ERROR;
        }
        *key_name = key.name;
        if cipher
            .encrypt_init(aes_256_cbc, Some(&key.aes_key), Some(iv))
            .is_err()
        {
            return TICKET_ERROR;
        }
        (key, TICKET_OK)
    } else {
        let Some((key, renew)) = keys.decrypting(key_name) else {
            return TICKET_UNKNOWN_KEY;
        };
        if cipher
            .decrypt_init(aes_256_cbc, Some(&key.aes_key), Some(iv))
            .is_err()
        {
            return TICKET_ERROR;
        }
        (key, if renew { TICKET_OK_RENEW } else { TICKET_OK })
    };
    // SAFETY: `hmac` is the live MAC context OpenSSL passed for this ticket. The parameters
    // point to the key (borrowed for this whole function) and to static C strings, and end
    // with the end marker; EVP_MAC_CTX_set_params copies what it keeps and writes nothing
    // through them.
    let set = unsafe {
        let params = [
            openssl_sys::OSSL_PARAM_construct_octet_string(
                c"key".as_ptr(),
                key.hmac_key.as_ptr().cast_mut().cast(),
                HMAC_KEY_LEN,
            ),
            OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), c"SHA256".as_ptr().cast_mut(), 0),
            openssl_sys::OSSL_PARAM_construct_end(),
        ];
        openssl_sys::EVP_MAC_CTX_set_params(hmac, params.as_ptr())
    };
    if set != 1 {
        return TICKET_ERROR;
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A private key file holding `bytes` in `dir`.
    fn key_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// 80 bytes: name, HMAC key and AES key filled with `name`, `name + 1` and `name + 2`.
    fn key_bytes(name: u8) -> Vec<u8> {
        [[name; 16].as_slice(), &[name + 1; 32], &[name + 2; 32]].concat()
    }

    #[test]
    fn a_key_file_of_80_bytes_is_split_name_hmac_aes() {
        let dir = tempfile::tempdir().unwrap();
        let file = key_file(dir.path(), "ticket.key", &key_bytes(7));
        let keys = load_ticket_keys(&[file]).unwrap();
        let key = keys.encrypting();
        assert_eq!(key.name, [7; 16]);
        assert_eq!(key.hmac_key, [8; 32]);
        assert_eq!(key.aes_key, [9; 32]);
        assert_eq!(keys.decrypting(&[7; 16]), Some((key, false)));
        assert_eq!(keys.decrypting(&[8; 16]), None);
    }

    #[test]
    fn key_files_of_79_or_81_bytes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (len, says) in [
            (79, "holds 79 bytes"),
            (81, "holds more than 80 bytes"),
            (0, "holds 0"),
        ] {
            let bytes = vec![1; len];
            let file = key_file(dir.path(), &format!("k{len}.key"), &bytes);
            let e = load_ticket_keys(std::slice::from_ref(&file))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&file.display().to_string()), "{e}");
            assert!(e.contains(says) && e.contains("exactly 80"), "{e}");
        }
    }

    #[test]
    fn the_first_key_encrypts_and_the_others_are_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            key_file(dir.path(), "new.key", &key_bytes(10)),
            key_file(dir.path(), "old.key", &key_bytes(20)),
            key_file(dir.path(), "older.key", &key_bytes(30)),
        ];
        let keys = load_ticket_keys(&files).unwrap();
        assert_eq!(keys.encrypting().name, [10; 16]);
        let renewed = |name: u8| {
            keys.decrypting(&[name; 16])
                .map(|(key, renew)| (key.name[0], renew))
        };
        assert_eq!(renewed(10), Some((10, false)));
        assert_eq!(renewed(20), Some((20, true)));
        assert_eq!(renewed(30), Some((30, true)));
        assert_eq!(renewed(40), None);
    }

    #[test]
    fn key_files_must_exist_and_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let e = load_ticket_keys(&[missing]).unwrap_err().to_string();
        assert!(
            e.contains("missing.key") && e.contains("make ticket-key"),
            "{e}"
        );
        let open = key_file(dir.path(), "open.key", &key_bytes(1));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_ticket_keys(std::slice::from_ref(&open))
            .unwrap_err()
            .to_string();
        assert!(e.contains("can be read by others (mode 644)"), "{e}");
        assert!(e.contains(&format!("chmod 600 {}", open.display())), "{e}");
    }

    /// Compiles only for a type that wipes itself when dropped.
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn keys_are_wiped_when_dropped() {
        wiped_on_drop::<TicketKey>();
    }

    #[test]
    fn keys_are_never_printed() {
        let key = TicketKey::from_bytes(&key_bytes(1)).unwrap();
        assert_eq!(
            format!("{:?}", TicketKeys(vec![key])),
            "TicketKeys([TicketKey(..)])"
        );
    }
}
