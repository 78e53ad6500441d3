//! Session-ticket keys that survive a restart: a device that reconnects after the hub restarted
//! still resumes its TLS session instead of paying a full handshake.
//!
//! The keys are random (never derived from something long-lived), kept in a 0600 file beside the
//! hub's certificates, and rotated on a schedule: a new key every [`ROTATION_SECS`], the one
//! before it kept one more period so tickets issued just before a rotation still resume, and
//! anything older erased from memory and from the file. That erasure is what bounds the damage
//! a stolen key file does to forward secrecy (rustls' `ProducesTickets` asks for exactly that).
//!
//! A ticket is `key id (8 bytes, the key's creation time) ‖ nonce (12) ‖ ChaCha20-Poly1305
//! ciphertext and tag`, the key id also bound as associated data.

use crate::TlsError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a ticket key issues tickets (6 hours, as rustls' own ticketer); it decrypts for one
/// more period after that, then is erased.
pub const ROTATION_SECS: u64 = 6 * 3600;

const KEY_LEN: usize = 32;
const ID_LEN: usize = 8;

/// One ticket key: when it was created (also its id in tickets) and the AEAD key.
struct Key {
    created: u64,
    secret: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl Key {
    fn new(created: u64, secret: [u8; KEY_LEN]) -> Key {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &secret).ok();
        let aead = LessSafeKey::new(unbound.unwrap_or_else(|| unreachable!("32-byte key")));
        Key {
            created,
            secret,
            aead,
        }
    }

    fn generate(created: u64, rng: &SystemRandom) -> Option<Key> {
        let mut secret = [0u8; KEY_LEN];
        rng.fill(&mut secret).ok()?;
        Some(Key::new(created, secret))
    }
}

/// The keys in use: the one issuing tickets and the one before it.
struct Keys {
    current: Key,
    previous: Option<Key>,
}

/// A ticketer whose keys live in a file and rotate every [`ROTATION_SECS`]: tickets issued
/// before a restart still decrypt after it.
pub struct PersistentTicketer {
    path: PathBuf,
    keys: RwLock<Keys>,
    rng: SystemRandom,
}

impl std::fmt::Debug for PersistentTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("PersistentTicketer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PersistentTicketer {
    /// Loads the keys in `path` (creating the file with a fresh key when it is missing), rotating
    /// them first if their period has passed while the hub was down.
    pub fn open(path: &Path) -> Result<Arc<PersistentTicketer>, TlsError> {
        Self::open_at(path, unix_now()).map(Arc::new)
    }

    fn open_at(path: &Path, now: u64) -> Result<PersistentTicketer, TlsError> {
        let rng = SystemRandom::new();
        let stored = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).ok_or_else(|| TlsError::TicketKeys {
                path: path.to_path_buf(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TlsError::file("reading", path)(e)),
        };
        let mut stored = stored.into_iter();
        let keys = match stored.next() {
            Some(current) => Keys {
                current,
                previous: stored.next(),
            },
            None => Keys {
                current: Key::generate(now, &rng).ok_or(TlsError::Random)?,
                previous: None,
            },
        };
        let ticketer = PersistentTicketer {
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
            rng,
        };
        ticketer.rotate_if_due(now);
        ticketer.save()?;
        Ok(ticketer)
    }

    /// Starts a new key once the current one has issued tickets for a whole period, keeps the
    /// current one as the previous, and erases the one before; a key older than two periods
    /// (the hub was down that long) is erased too.
    fn rotate_if_due(&self, now: u64) -> bool {
        let due = |keys: &Keys| now.saturating_sub(keys.current.created) >= ROTATION_SECS;
        if !self.keys.read().is_ok_and(|k| due(&k)) {
            return false;
        }
        let Ok(mut keys) = self.keys.write() else {
            return false;
        };
        if !due(&keys) {
            return false; // another connection rotated meanwhile
        }
        let Some(fresh) = Key::generate(now, &self.rng) else {
            return false;
        };
        let old = std::mem::replace(&mut keys.current, fresh);
        let still_valid = now.saturating_sub(old.created) < 2 * ROTATION_SECS;
        keys.previous = still_valid.then_some(old);
        true
    }

    /// Writes the keys in use, replacing the file in one rename.
    fn save(&self) -> Result<(), TlsError> {
        let text = match self.keys.read() {
            Ok(keys) => format(&keys),
            Err(_) => return Ok(()),
        };
        let tmp = self.path.with_extension("tmp");
        crate::files::write_private(&tmp, &text)?;
        std::fs::rename(&tmp, &self.path).map_err(TlsError::file("replacing", &self.path))
    }

    fn encrypt_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        if self.rotate_if_due(now) {
            if let Err(e) = self.save() {
                // Tickets still work until a restart; after it, these devices do one full handshake.
                tracing::warn!("TLS ticket keys rotated in memory but not saved: {e}");
            }
        }
        let keys = self.keys.read().ok()?;
        let key = &keys.current;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let id = key.created.to_be_bytes();
        let mut ticket = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&id);
        ticket.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id),
                &mut body,
            )
            .ok()?;
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    fn decrypt_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        let (id, rest) = ticket.split_first_chunk::<ID_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let created = u64::from_be_bytes(*id);
        // A key past its two periods decrypts nothing, even before the next rotation erases it.
        if now.saturating_sub(created) >= 2 * ROTATION_SECS {
            return None;
        }
        let keys = self.keys.read().ok()?;
        let key = std::iter::once(&keys.current)
            .chain(&keys.previous)
            .find(|k| k.created == created)?;
        let mut body = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(*id),
                &mut body,
            )
            .ok()?;
        let len = plain.len();
        body.truncate(len);
        Some(body)
    }
}

impl ProducesTickets for PersistentTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATION_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(plain, unix_now())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(ticket, unix_now())
    }
}

/// The file: one key a line, newest first, `<created unix seconds> <64 hex digits>`.
fn format(keys: &Keys) -> String {
    std::iter::once(&keys.current)
        .chain(&keys.previous)
        .map(|k| format!("{} {}\n", k.created, hex::encode(k.secret)))
        .collect()
}

/// None when a line is not `<seconds> <64 hex digits>` or the file holds no key or more than two.
fn parse(text: &str) -> Option<Vec<Key>> {
    let keys = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (created, secret) = line.trim().split_once(' ')?;
            let secret: [u8; KEY_LEN] = hex::decode(secret).ok()?.try_into().ok()?;
            Some(Key::new(created.parse().ok()?, secret))
        })
        .collect::<Option<Vec<_>>>()?;
    (1..=2).contains(&keys.len()).then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn ticketer(dir: &tempfile::TempDir, now: u64) -> PersistentTicketer {
        PersistentTicketer::open_at(&dir.path().join("mqtt-ticket-keys"), now).unwrap()
    }

    #[test]
    fn a_ticket_decrypts_after_the_keys_are_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let ticket = ticketer(&dir, T0).encrypt_at(b"session", T0).unwrap();
        let restarted = ticketer(&dir, T0 + 60);
        assert_eq!(
            restarted.decrypt_at(&ticket, T0 + 60).as_deref(),
            Some(&b"session"[..])
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join("mqtt-ticket-keys")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_ticket_lives_through_one_rotation_and_not_two() {
        let dir = tempfile::tempdir().unwrap();
        let t = ticketer(&dir, T0);
        let ticket = t.encrypt_at(b"s", T0 + ROTATION_SECS - 1).unwrap();
        // The next ticket rotates the key; the old one still decrypts.
        let later = T0 + ROTATION_SECS + 1;
        let newer = t.encrypt_at(b"n", later).unwrap();
        assert_ne!(ticket[..ID_LEN], newer[..ID_LEN], "a new key id");
        assert!(t.decrypt_at(&ticket, later).is_some());
        // After a restart too: the file holds both keys.
        assert!(ticketer(&dir, later).decrypt_at(&ticket, later).is_some());
        // Two periods after its key was made, the ticket is refused, and the key is gone.
        let gone = T0 + 2 * ROTATION_SECS;
        assert!(t.decrypt_at(&ticket, gone).is_none());
        t.encrypt_at(b"x", gone + ROTATION_SECS).unwrap();
        let file = std::fs::read_to_string(dir.path().join("mqtt-ticket-keys")).unwrap();
        assert_eq!(file.lines().count(), 2);
        assert!(!file.contains(&format!("{T0} ")), "{file}");
    }

    #[test]
    fn keys_older_than_two_periods_at_start_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ticket = ticketer(&dir, T0).encrypt_at(b"s", T0).unwrap();
        let much_later = T0 + 3 * ROTATION_SECS;
        let t = ticketer(&dir, much_later);
        assert!(
            t.decrypt_at(&ticket, T0).is_none(),
            "the old key was erased"
        );
        let file = std::fs::read_to_string(dir.path().join("mqtt-ticket-keys")).unwrap();
        assert_eq!(file.lines().count(), 1, "{file}");
    }

    #[test]
    fn forged_truncated_or_foreign_tickets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = ticketer(&dir, T0);
        let ticket = t.encrypt_at(b"session", T0).unwrap();
        for len in 0..ticket.len() {
            assert!(t.decrypt_at(&ticket[..len], T0).is_none(), "prefix {len}");
        }
        let mut flipped = ticket.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(t.decrypt_at(&flipped, T0).is_none());
        let other = tempfile::tempdir().unwrap();
        assert!(ticketer(&other, T0).decrypt_at(&ticket, T0).is_none());
    }

    #[test]
    fn a_damaged_key_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt-ticket-keys");
        std::fs::write(&path, "1800000000 not-hex\n").unwrap();
        let err = PersistentTicketer::open(&path).unwrap_err().to_string();
        assert!(err.contains("mqtt-ticket-keys"), "{err}");
        assert!(err.contains("delete it"), "{err}");
    }
}
