//! The images devices are downloading, held once in memory for every download of them: a
//! thousand devices fetching the same 1 MiB image share one `Bytes`, instead of each download
//! reading the file through buffers of its own. The cache keeps at most a byte budget, dropping
//! the least recently used image to make room; an image larger than a quarter of the budget is
//! never held (its downloads stream from disk). An image is read once however many downloads
//! ask for it at the same moment, and its SHA-256 is checked as it is read, so a file damaged on
//! disk is refused rather than served.
//!
//! The cache is not a record: it is filled from the blob files on demand and emptied by a
//! restart; deleting an artifact [`ImageCache::forget`]s it.

use bytes::Bytes;
use fleethub_core::{ErrorCode, HubError, HubResult};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The default budget: 256 MiB, so images up to 64 MiB (the largest a device may be sent) are
/// held.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Images in memory, by SHA-256, within a byte budget.
pub struct ImageCache {
    budget: u64,
    state: Mutex<State>,
    /// Files read so far (each load of an image once, unless it failed or was evicted).
    loads: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Slot>,
    /// The sizes of every entry, loaded or loading: what they hold, or will.
    used: u64,
    /// Bumped by every lookup; an entry's `last_used` is the tick of its last one.
    tick: u64,
}

struct Slot {
    image: Arc<OnceCell<Bytes>>,
    size: u64,
    last_used: u64,
}

impl ImageCache {
    /// An empty cache that holds at most `budget` bytes of images.
    pub fn new(budget: u64) -> ImageCache {
        ImageCache {
            budget,
            state: Mutex::new(State::default()),
            loads: AtomicU64::new(0),
        }
    }

    /// The largest image the cache holds: a quarter of the budget, so that one image never
    /// evicts the rest.
    pub fn largest_cached(&self) -> u64 {
        self.budget / 4
    }

    /// The image `sha256` (`size` bytes, in the file `path`), read from the file if it is not
    /// held yet; `None` when it is too large to hold (stream it from disk instead). Concurrent
    /// callers for the same image wait for one read. A file whose bytes do not hash to
    /// `sha256` is an error, and is not held.
    pub async fn get(&self, sha256: &str, size: u64, path: &Path) -> HubResult<Option<Bytes>> {
        if size > self.largest_cached() {
            return Ok(None);
        }
        let cell = self.slot(sha256, size);
        let loaded = cell
            .get_or_try_init(|| {
                self.loads.fetch_add(1, Ordering::Relaxed);
                load(path.to_path_buf(), sha256.to_string(), size)
            })
            .await;
        match loaded {
            Ok(image) => Ok(Some(image.clone())),
            Err(e) => {
                self.remove_if(sha256, &cell);
                Err(e)
            }
        }
    }

    /// Drops the image `sha256` (its artifact was deleted). Downloads already serving it keep
    /// their copy until they end.
    pub fn forget(&self, sha256: &str) {
        let mut state = self.state.lock();
        if let Some(slot) = state.entries.remove(sha256) {
            state.used -= slot.size;
        }
    }

    /// Bytes of images held or being read.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used
    }

    /// How many times an image file has been read.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The entry for `sha256`, made (evicting the least recently used until it fits) if new.
    fn slot(&self, sha256: &str, size: u64) -> Arc<OnceCell<Bytes>> {
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        if let Some(slot) = state.entries.get_mut(sha256) {
            slot.last_used = tick;
            return slot.image.clone();
        }
        while state.used + size > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(sha, _)| sha.clone())
            else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.used -= evicted.size;
            }
        }
        let image = Arc::new(OnceCell::new());
        state.used += size;
        state.entries.insert(
            sha256.to_string(),
            Slot {
                image: image.clone(),
                size,
                last_used: tick,
            },
        );
        image
    }

    /// Drops the entry for `sha256` if it is still `cell` (not one made since), so a failed read
    /// holds no budget and the next request tries the file again.
    fn remove_if(&self, sha256: &str, cell: &Arc<OnceCell<Bytes>>) {
        let mut state = self.state.lock();
        if state
            .entries
            .get(sha256)
            .is_some_and(|slot| Arc::ptr_eq(&slot.image, cell))
        {
            if let Some(slot) = state.entries.remove(sha256) {
                state.used -= slot.size;
            }
        }
    }
}

/// Reads the file on the blocking pool and checks it is the artifact: `size` bytes hashing to
/// `sha256`.
async fn load(path: PathBuf, sha256: String, size: u64) -> HubResult<Bytes> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCode::FirmwareNotFound
            } else {
                ErrorCode::ServerError
            };
            HubError::new(code, format!("firmware {sha256} cannot be read: {e}"))
        })?;
        let found = fleethub_core::firmware::sha256_hex(&bytes);
        if bytes.len() as u64 != size || found != sha256 {
            return Err(HubError::new(
                ErrorCode::ServerError,
                format!(
                    "firmware {sha256} is damaged on disk: {} holds {} bytes with SHA-256 {found}, \
                     not the {size} bytes uploaded; it is not served. Delete the artifact and \
                     upload the image again",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        Ok(Bytes::from(bytes))
    })
    .await
    .map_err(|e| HubError::new(ErrorCode::ServerError, format!("reading firmware: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of `size` bytes unique to `seed`, written to `dir`; its SHA-256 and path.
    fn image(dir: &Path, seed: u8, size: usize) -> (String, PathBuf) {
        let bytes: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let sha = fleethub_core::firmware::sha256_hex(&bytes);
        let path = dir.join(&sha);
        std::fs::write(&path, &bytes).unwrap();
        (sha, path)
    }

    #[tokio::test]
    async fn a_held_image_is_served_from_memory_without_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(4000);
        let (sha, path) = image(dir.path(), 3, 1000);
        let first = cache.get(&sha, 1000, &path).await.unwrap().unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        let again = cache.get(&sha, 1000, &path).await.unwrap().unwrap();
        assert_eq!(again.as_ptr(), first.as_ptr(), "the same bytes, shared");
        assert_eq!(cache.loads(), 1);
        assert_eq!(cache.used_bytes(), 1000);
    }

    #[tokio::test]
    async fn an_image_over_a_quarter_of_the_budget_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(4000);
        let (sha, path) = image(dir.path(), 5, 1001);
        assert!(cache.get(&sha, 1001, &path).await.unwrap().is_none());
        assert_eq!((cache.loads(), cache.used_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn the_least_recently_used_image_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(4000);
        let images: Vec<(String, PathBuf)> =
            (1..=5).map(|seed| image(dir.path(), seed, 1000)).collect();
        for (sha, path) in &images[..4] {
            cache.get(sha, 1000, path).await.unwrap().unwrap();
        }
        // The first is used again, so the second is now the least recently used.
        cache.get(&images[0].0, 1000, &images[0].1).await.unwrap();
        cache.get(&images[4].0, 1000, &images[4].1).await.unwrap();
        assert_eq!(cache.used_bytes(), 4000, "within the budget");
        for (_, path) in &images {
            std::fs::remove_file(path).unwrap();
        }
        for i in [0, 2, 3, 4] {
            let (sha, path) = &images[i];
            let held = cache.get(sha, 1000, path).await.unwrap();
            assert!(held.is_some(), "image {i} is still held");
        }
        // (Last: making room for it again evicts another.)
        let e = cache
            .get(&images[1].0, 1000, &images[1].1)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::FirmwareNotFound, "{}", e.message);
        assert_eq!(
            cache.loads(),
            6,
            "five loads, and the evicted one tried again"
        );
    }

    #[tokio::test]
    async fn concurrent_downloads_of_one_image_read_its_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ImageCache::new(DEFAULT_CACHE_BYTES));
        let (sha, path) = image(dir.path(), 7, 1 << 20);
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (cache, sha, path) = (cache.clone(), sha.clone(), path.clone());
            readers.spawn(async move { cache.get(&sha, 1 << 20, &path).await });
        }
        // On this single-threaded runtime every reader asks before the first read can finish:
        // the first starts the read and the other nine wait for it.
        let mut images = Vec::new();
        while let Some(got) = readers.join_next().await {
            images.push(got.unwrap().unwrap().unwrap());
        }
        assert_eq!(cache.loads(), 1);
        assert!(images.iter().all(|i| i.as_ptr() == images[0].as_ptr()));
    }

    #[tokio::test]
    async fn a_file_damaged_on_disk_is_refused_and_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(4000);
        let (sha, path) = image(dir.path(), 9, 1000);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[500] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = cache.get(&sha, 1000, &path).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerError);
        assert!(e.message.contains("damaged on disk"), "{}", e.message);
        assert_eq!(cache.used_bytes(), 0, "a refused image holds no budget");
        bytes[500] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.get(&sha, 1000, &path).await.unwrap().is_some());
        assert_eq!(cache.loads(), 2, "the repaired file is read again");
    }

    #[tokio::test]
    async fn a_forgotten_image_is_read_from_disk_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(4000);
        let (sha, path) = image(dir.path(), 11, 1000);
        cache.get(&sha, 1000, &path).await.unwrap();
        cache.forget(&sha);
        assert_eq!(cache.used_bytes(), 0);
        std::fs::remove_file(&path).unwrap();
        let e = cache.get(&sha, 1000, &path).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::FirmwareNotFound);
        assert_eq!(cache.used_bytes(), 0);
    }
}
