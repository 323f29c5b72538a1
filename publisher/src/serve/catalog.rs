//! Which release a served file belongs to, so the origin can count bytes per release.
//!
//! Built from the channel histories (`channels/<channel>/<V>.json`) of the directory
//! being served, read without verifying signatures (the directory is the vendor's own).
//! A file that several releases share (an unchanged artifact) counts for the newest
//! release that holds it (by the manifest's creation time): that is the release an agent
//! fetching it now is after. Rebuilding reads small manifest files on the calling
//! thread; it happens at most once per [`REBUILD_EVERY`]. A path
//! under `artifacts/` or `indexes/` that the catalog does not know makes it rebuild, at
//! most once per [`REBUILD_EVERY`], so releases published while the server runs are
//! picked up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocol::layout;
use shoal_protocol::manifest::read_body_unverified;

/// Shortest time between two rebuilds.
pub const REBUILD_EVERY: Duration = Duration::from_secs(5);

/// A release as the origin's metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseKey {
    /// Its channel.
    pub channel: String,
    /// Its label (e.g. `2.4.1`).
    pub release: String,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Arc<ReleaseKey>,
    /// The manifest's creation time, then version: newer wins (versions of different
    /// channels are separate sequences; creation times are comparable).
    order: (u64, u64),
}

#[derive(Default)]
struct State {
    by_path: HashMap<String, Entry>,
    sizes: HashMap<Arc<ReleaseKey>, u64>,
    built: Option<Instant>,
}

/// The path → release map of one release directory.
pub struct Catalog {
    root: PathBuf,
    state: Mutex<State>,
    /// Held while rebuilding: requests that need the new map wait for it.
    rebuilding: Mutex<()>,
}

impl Catalog {
    /// A catalog of `root`, built now.
    pub fn new(root: &Path) -> Self {
        let c = Catalog {
            root: root.to_owned(),
            state: Mutex::new(State::default()),
            rebuilding: Mutex::new(()),
        };
        c.rebuild();
        c
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The release `path` (a request path, `/artifacts/…`) belongs to, if any.
    pub fn release_of(&self, path: &str) -> Option<Arc<ReleaseKey>> {
        let rel = path.strip_prefix('/').unwrap_or(path);
        if let Some(e) = self.state().by_path.get(rel) {
            return Some(e.key.clone());
        }
        if !(rel.starts_with("artifacts/") || rel.starts_with("indexes/")) {
            return None;
        }
        // One rebuild at a time: a burst of requests for a new release's files waits
        // for the first one's rebuild and then finds the map rebuilt.
        let _one = self
            .rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = self.state().by_path.get(rel) {
            return Some(e.key.clone());
        }
        let due = self
            .state()
            .built
            .is_none_or(|t| t.elapsed() >= REBUILD_EVERY);
        if due {
            self.rebuild();
        }
        self.state().by_path.get(rel).map(|e| e.key.clone())
    }

    /// Every release known, with its size in bytes (artifacts together).
    pub fn sizes(&self) -> Vec<(Arc<ReleaseKey>, u64)> {
        let mut v: Vec<_> = self
            .state()
            .sizes
            .iter()
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort();
        v
    }

    fn rebuild(&self) {
        let mut by_path: HashMap<String, Entry> = HashMap::new();
        let mut sizes = HashMap::new();
        let channels = std::fs::read_dir(self.root.join("channels"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir());
        for ch in channels {
            let channel = ch.file_name().to_string_lossy().into_owned();
            for m in std::fs::read_dir(ch.path()).into_iter().flatten().flatten() {
                let Ok(bytes) = std::fs::read(m.path()) else {
                    continue;
                };
                let Ok(body) = read_body_unverified(&bytes) else {
                    continue;
                };
                let key = Arc::new(ReleaseKey {
                    channel: channel.clone(),
                    release: body.release.clone(),
                });
                sizes.insert(key.clone(), body.artifacts.iter().map(|a| a.length).sum());
                for a in &body.artifacts {
                    for path in [layout::artifact(a), layout::index(&a.index.sha256)] {
                        let order = (body.created, body.version);
                        let newer = by_path.get(&path).is_none_or(|e| e.order < order);
                        if newer {
                            by_path.insert(
                                path,
                                Entry {
                                    key: key.clone(),
                                    order,
                                },
                            );
                        }
                    }
                }
            }
        }
        let mut s = self.state();
        s.by_path = by_path;
        s.sizes = sizes;
        s.built = Some(Instant::now());
    }
}
