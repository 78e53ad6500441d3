//! Where artifact bytes live: `<dir>/blobs/<sha256>`, each written once through a temporary file
//! in `<dir>/tmp` that is fsynced and renamed into place, so a reader never sees a partial image
//! and an upload cut short leaves nothing behind (its temporary file is removed when the upload
//! is dropped, and any left by a crash are removed when the hub starts).

use fleethub_core::firmware::MAX_IMAGE_BYTES;
use fleethub_core::{ErrorCode, HubError, HubResult};
use ring::digest;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    blobs: PathBuf,
    tmp: PathBuf,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> HubError {
    let code = if e.raw_os_error() == Some(28) {
        ErrorCode::ServiceUnavailable // ENOSPC: retry once there is room
    } else {
        ErrorCode::ServerError
    };
    HubError::new(code, format!("{what} {}: {e}", path.display()))
}

impl Blobs {
    /// Creates `<dir>/blobs` and `<dir>/tmp`, and empties `tmp` of uploads a crash cut short.
    pub fn open(dir: &Path) -> HubResult<Blobs> {
        let blobs = Blobs {
            blobs: dir.join("blobs"),
            tmp: dir.join("tmp"),
        };
        for d in [&blobs.blobs, &blobs.tmp] {
            std::fs::create_dir_all(d).map_err(|e| io_error("creating", d, e))?;
        }
        let entries =
            std::fs::read_dir(&blobs.tmp).map_err(|e| io_error("reading", &blobs.tmp, e))?;
        for entry in entries.flatten() {
            tracing::info!(path = %entry.path().display(), "removing an unfinished upload");
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(blobs)
    }

    /// The file holding the artifact `sha256`.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(sha256)
    }

    /// The SHA-256 names of every stored blob.
    pub fn list(&self) -> HubResult<Vec<String>> {
        let entries =
            std::fs::read_dir(&self.blobs).map_err(|e| io_error("reading", &self.blobs, e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| fleethub_core::firmware::is_sha256_hex(n))
            .collect())
    }

    /// Removes the blob `sha256`, if present.
    pub fn remove(&self, sha256: &str) {
        let path = self.path(sha256);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "could not remove a deleted artifact: {e}");
            }
        }
    }

    /// A new temporary file to stream an upload into.
    pub async fn temp(&self) -> HubResult<TempBlob> {
        let path = self.tmp.join(format!("upload-{}", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error("creating", &path, e))?;
        Ok(TempBlob {
            path,
            file: Some(file),
            hasher: digest::Context::new(&digest::SHA256),
            size: 0,
            blobs: self.clone(),
        })
    }
}

/// An upload on its way to disk; dropping it removes what was written.
pub struct TempBlob {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: digest::Context,
    size: u64,
    blobs: Blobs,
}

/// A complete upload, flushed to disk, not yet in place.
pub struct Written {
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// How many bytes.
    pub size: u64,
    temp: TempBlob,
}

impl TempBlob {
    /// Appends a chunk; refuses to grow past the largest image a device may be sent.
    pub async fn write(&mut self, chunk: &[u8]) -> HubResult<()> {
        self.size += chunk.len() as u64;
        if self.size > MAX_IMAGE_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("a firmware image may be at most {MAX_IMAGE_BYTES} bytes"),
            ));
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().ok_or_else(|| closed(&self.path))?;
        file.write_all(chunk)
            .await
            .map_err(|e| io_error("writing", &self.path, e))
    }

    /// Flushes and fsyncs the file; the digest and size of what was written.
    pub async fn finish(mut self) -> HubResult<Written> {
        let mut file = self.file.take().ok_or_else(|| closed(&self.path))?;
        file.flush()
            .await
            .map_err(|e| io_error("writing", &self.path, e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error("syncing", &self.path, e))?;
        drop(file);
        let sha256 = hex::encode(self.hasher.clone().finish().as_ref());
        Ok(Written {
            sha256,
            size: self.size,
            temp: self,
        })
    }
}

fn closed(path: &Path) -> HubError {
    HubError::new(
        ErrorCode::ServerError,
        format!("upload file {} is already closed", path.display()),
    )
}

impl Written {
    /// Moves the bytes into place as `blobs/<sha256>` (keeping an identical blob already there)
    /// and fsyncs the directory, so the name survives a crash. `true` if this created the blob.
    pub fn persist(self) -> HubResult<bool> {
        let blobs = self.temp.blobs.clone();
        let dest = blobs.path(&self.sha256);
        if dest.exists() {
            return Ok(false); // same name, same bytes; the temporary file goes on drop
        }
        std::fs::rename(&self.temp.path, &dest).map_err(|e| io_error("storing", &dest, e))?;
        std::fs::File::open(&blobs.blobs)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing", &blobs.blobs, e))?;
        Ok(true)
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        // After a successful persist the path no longer exists; otherwise this is a cut or
        // refused upload, which must leave nothing behind.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "could not remove an upload: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_finished_upload_lands_under_its_digest_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let mut up = blobs.temp().await.unwrap();
        up.write(b"ab").await.unwrap();
        up.write(b"c").await.unwrap();
        let written = up.finish().await.unwrap();
        assert_eq!(written.size, 3);
        let sha = written.sha256.clone();
        assert_eq!(sha, fleethub_core::firmware::sha256_hex(b"abc"));
        assert!(written.persist().unwrap());
        assert_eq!(std::fs::read(blobs.path(&sha)).unwrap(), b"abc");
        assert_eq!(blobs.list().unwrap(), vec![sha.clone()]);

        let mut cut = blobs.temp().await.unwrap();
        cut.write(b"half an ima").await.unwrap();
        assert_eq!(files_in(&dir.path().join("tmp")).len(), 1);
        drop(cut);
        assert!(files_in(&dir.path().join("tmp")).is_empty());

        let mut same = blobs.temp().await.unwrap();
        same.write(b"abc").await.unwrap();
        assert!(
            !same.finish().await.unwrap().persist().unwrap(),
            "already there"
        );
        assert!(files_in(&dir.path().join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn leftovers_of_a_crash_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/upload-x"), b"partial").unwrap();
        Blobs::open(dir.path()).unwrap();
        assert!(files_in(&dir.path().join("tmp")).is_empty());
    }
}
