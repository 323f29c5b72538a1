//! A log file that rotates by size, for the Windows service (which has no stderr an
//! admin can read): `agent.log`, moved to `agent.log.1` (and so on, [`KEEP`] files) once
//! it passes [`MAX_BYTES`] (between writes: the log writer hands over whole lines). Writes
//! that fail are dropped: logging never stops the agent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Size at which the file rotates.
pub const MAX_BYTES: u64 = 10 << 20;

/// Rotated files kept besides the current one.
pub const KEEP: usize = 3;

struct Inner {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max: u64,
}

/// A size-rotated log file; clones share it.
#[derive(Clone)]
pub struct RotatingFile(Arc<Mutex<Inner>>);

impl RotatingFile {
    /// Appends to `path` (its directory is created), rotating at [`MAX_BYTES`].
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::with_limit(path, MAX_BYTES)
    }

    /// Like [`RotatingFile::open`], rotating at `max` bytes.
    pub fn with_limit(path: &Path, max: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile(Arc::new(Mutex::new(Inner {
            path: path.to_owned(),
            file: Some(file),
            written,
            max,
        }))))
    }
}

impl Inner {
    fn rotate(&mut self) {
        self.file = None;
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(KEEP));
        for i in (1..KEEP).rev() {
            let _ = std::fs::rename(numbered(i), numbered(i + 1));
        }
        let moved = std::fs::rename(&self.path, numbered(1)).is_ok();
        if !moved {
            // Another program holding the file open can stop the rename (Windows): then
            // the file starts again rather than growing without bound. (An append-only
            // handle cannot truncate there: a writable one does it.)
            let _ = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.path);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.written = 0;
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.written >= g.max {
            g.rotate();
        }
        if let Some(f) = g.file.as_mut() {
            let _ = f.write_all(buf);
        }
        g.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = g.file.as_mut() {
            let _ = f.flush();
        }
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_a_few() {
        let dir = std::env::temp_dir().join(format!("shoal-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("logs/agent.log");
        let mut f = RotatingFile::with_limit(&path, 100).unwrap();
        // The log writer hands over whole lines (51 bytes here), one write each.
        for i in 0..20 {
            f.write_all(format!("{i:03} {}\n", "x".repeat(46)).as_bytes())
                .unwrap();
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(dir.join("logs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names,
            ["agent.log", "agent.log.1", "agent.log.2", "agent.log.3"]
        );
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.starts_with("018 "), "{current}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 102);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
