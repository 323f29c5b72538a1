//! The piece store: verified pieces on disk, named by their SHA-256.
//!
//! ```text
//! <state>/pieces/<sha256>     one verified piece
//! ```
//!
//! Every method blocks on the disk: callers on async tasks run them on blocking threads
//! (`transfer::disk` does, for a running transfer).
//!
//! A piece is written to a temporary file and renamed to its hash only after the core
//! verified it. Nothing is trusted across a restart without proof: on start every piece
//! file the release needs is re-hashed before it counts (a crash can tear a piece, and a
//! disk can lie too); because pieces are content-addressed, pieces of an earlier release
//! that reappear in a new one are reused without a byte of traffic (delta updates).
//! Finished artifacts are assembled from the verified pieces, synced, and renamed into
//! place ([`Store::assemble`] says why the whole file is not hashed again).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_protocol::Digest;
use shoal_protocol::swarm::PieceSpec;

use crate::error::{Error, Result, exit};

/// Numbers temporary files, so that no two writes share one.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);
use crate::release::Release;

/// An opened piece store.
#[derive(Debug, Clone)]
pub struct Store {
    pieces: PathBuf,
}

impl Store {
    /// Opens (creating) the store under `state`.
    pub fn open(state: &Path) -> Result<Self> {
        let pieces = state.join("pieces");
        fs::create_dir_all(&pieces).map_err(|e| Error::io(pieces.display(), e))?;
        let store = Store { pieces };
        store.remove_stale_temporaries();
        Ok(store)
    }

    /// Removes the temporary files of writes that a crash cut off (a kill between the
    /// write and the rename leaves one each), so restarts cannot pile them up: those of
    /// processes that are gone (Unix: the process id in the name no longer exists
    /// here), and any older than a minute (a write takes milliseconds; this also covers
    /// other systems, and a writer in another PID namespace that shares the directory).
    /// A live process's write in progress is left alone.
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.pieces) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".tmp")) else {
                continue;
            };
            // `.<digest>.<pid>-<n>.tmp`
            let pid = stem
                .rsplit('.')
                .next()
                .and_then(|t| t.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(writer_is_gone) || older_than_a_minute(&e) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.pieces.join(d.to_hex())
    }

    /// Which of `pieces` the store holds, each re-verified.
    pub fn scan(&self, pieces: &[PieceSpec]) -> Vec<bool> {
        pieces
            .iter()
            .map(|p| match fs::read(self.path(&p.digest)) {
                Ok(b) => b.len() == p.length as usize && Digest::of(&b) == p.digest,
                Err(_) => false,
            })
            .collect()
    }

    /// Stores a verified piece. No `fsync`: a piece file is trusted only after
    /// [`Store::scan`] re-hashes it at the next start, so one torn by a crash is fetched
    /// again, never served (an `fsync` per piece held up the node task for as long as the
    /// disk took; the delivered artifacts are still synced before their rename).
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        let path = self.path(digest);
        // One temporary name per write: pieces with the same digest (zero-filled regions
        // of a disk image repeat them) may be written at once, and must not share one.
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.pieces.join(format!(
            ".{}.{}-{n}.tmp",
            digest.to_hex(),
            std::process::id()
        ));
        let r = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            fs::rename(&tmp, &path)
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r.map_err(|e| Error::io(format!("storing piece {digest}"), e))
    }

    /// Reads `len` bytes at `offset` of a stored piece.
    pub fn read(&self, digest: &Digest, offset: u32, len: u32) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let mut f = fs::File::open(&path).map_err(|e| Error::io(path.display(), e))?;
        f.seek(SeekFrom::Start(u64::from(offset)))
            .map_err(|e| Error::io(path.display(), e))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path.display(), e))?;
        if buf.len() != len as usize {
            return Err(Error::io(
                path.display(),
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(buf)
    }

    /// Deletes every stored piece not in `keep` (and stale temporary files); returns how
    /// many files went.
    pub fn retain(&self, keep: &std::collections::HashSet<Digest>) -> usize {
        let Ok(entries) = fs::read_dir(&self.pieces) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A write in progress (a transfer may run while old releases are pruned);
                // stale ones are removed when a store is opened.
                continue;
            }
            let wanted = Digest::from_hex(&name).is_some_and(|d| keep.contains(&d));
            if !wanted && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// [`Store::assemble`] on a blocking thread.
    pub async fn assemble_async(
        &self,
        release: std::sync::Arc<Release>,
        out: PathBuf,
    ) -> Result<Vec<PathBuf>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.assemble(&release, &out))
            .await
            .map_err(|e| Error::new(exit::IO, format!("assembling the release: {e}"), ""))?
    }

    /// Writes every artifact of `release` into `out`: its piece files copied in order
    /// (in the kernel where it can, `copy_file_range`), synced, and renamed into place.
    /// All or nothing per artifact.
    ///
    /// Nothing is hashed again here: every piece was verified against the index, which
    /// the signed manifest pins, when it entered the store in this run or when
    /// [`Store::scan`] re-hashed it at the start of this run, so the file is the one the
    /// vendor signed. (A second whole-file hash cost as long as the transfer itself.)
    /// Each piece file's length is still checked, so a file removed or cut short under
    /// us is an error, not a short artifact.
    pub fn assemble(&self, release: &Release, out: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(out).map_err(|e| Error::io(out.display(), e))?;
        let mut done = Vec::new();
        for (a, index) in release.artifacts().iter().zip(&release.indexes) {
            let dest = out.join(a.name.as_str());
            let tmp = out.join(format!(".{}.partial", a.name));
            let r = (|| -> Result<()> {
                let mut f = fs::File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
                for p in index.pieces() {
                    let path = self.path(&p.digest);
                    let mut piece =
                        fs::File::open(&path).map_err(|e| Error::io(path.display(), e))?;
                    let copied = std::io::copy(&mut piece, &mut f)
                        .map_err(|e| Error::io(tmp.display(), e))?;
                    if copied != u64::from(p.length) {
                        return Err(Error::new(
                            exit::IO,
                            format!("piece {} changed on disk during assembly", p.digest),
                            "run again: the piece is re-verified and fetched again",
                        ));
                    }
                }
                f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
                fs::rename(&tmp, &dest).map_err(|e| Error::io(dest.display(), e))
            })();
            if let Err(e) = r {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            done.push(dest);
        }
        Ok(done)
    }
}

/// Whether the process that wrote a temporary file is gone (this one is not: it may
/// open its store again while a transfer writes).
#[cfg(unix)]
fn writer_is_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 checks for the process and sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn writer_is_gone(_pid: u32) -> bool {
    false
}

fn older_than_a_minute(e: &fs::DirEntry) -> bool {
    e.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_of_one_digest_at_once_never_collide() {
        let dir = std::env::temp_dir().join(format!("shoal-store-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let data = vec![0u8; 256 * 1024];
        let digest = Digest::of(&data);
        // Many threads write the same piece at once (a zero-filled region repeats it).
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        store.put(&digest, &data).unwrap();
                    }
                });
            }
        });
        let spec = PieceSpec {
            length: data.len() as u32,
            digest,
        };
        assert_eq!(store.scan(&[spec]), vec![true]);
        let left: Vec<_> = fs::read_dir(dir.join("pieces")).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files were left behind: {left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
