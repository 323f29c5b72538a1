//! # shoal-tests
//!
//! The harness for tests that drive Shoal's real binaries as processes: scratch
//! directories that remove themselves, child processes that are stopped (by PID, only
//! the ones we started) when a test ends or fails, a published release and a running
//! `shoal-publisher serve` origin, test hosts in network namespaces ([`netns`]) and the
//! swarm lab built on them ([`lab`]), and headless Chromium for pages ([`browser`]).
//!
//! Binaries are passed in by path. A test should take them from
//! `env!("CARGO_BIN_EXE_<name>")` in the package that builds them: only then does Cargo
//! guarantee the binary is built and fresh (a test in another package may find a stale
//! one, or none on a fresh clone).

pub mod browser;
pub mod lab;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A scratch directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails a privileged test that cannot run here, naming what is missing: a test that did
/// not run must never show as passed. Without root, leave these tests out with the filter
/// in README.md ("Tests").
pub fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "cannot run: {what}. Run the tests as root with iproute2, curl, aria2c and nft \
         (CI does), or leave the privileged tests out (README.md, \"Tests\")"
    );
}

/// Writes `len` deterministic pseudo-random bytes (xorshift from `seed`) to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).expect("write test file");
}

/// Runs a command to completion, with a time limit, and returns its output.
/// Output is drained while the command runs, so a chatty child cannot block on a full
/// pipe.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    }
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran past 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Output {
        status,
        stdout: join(out),
        stderr: join(err),
    }
}

/// A child process that is killed (by its PID) when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `shoal-publisher serve` with a self-signed certificate on loopback.
pub struct Origin {
    /// The server process.
    pub child: ChildGuard,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The certificate to trust (PEM).
    pub cert: PathBuf,
    /// The printed SHA-256 fingerprint.
    pub fingerprint: String,
}

impl Origin {
    /// Starts `publisher serve` on `repo`; the certificate lives in `tls_dir`.
    pub fn start(publisher: &Path, repo: &Path, tls_dir: &Path) -> Origin {
        let mut child = Command::new(publisher)
            .arg("serve")
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--self-signed", "--tls-dir"])
            .arg(tls_dir)
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shoal-publisher serve");
        let stdout = child.stdout.take().expect("stdout");
        let child = ChildGuard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut url, mut fingerprint) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while url.is_none() || fingerprint.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("serve printed its address in time");
            if let Some(u) = line
                .split(" on ")
                .nth(1)
                .filter(|_| line.starts_with("serving"))
            {
                url = Some(u.trim().to_owned());
            }
            if let Some(f) = line.strip_prefix("sha256 fingerprint: ") {
                fingerprint = Some(f.trim().to_owned());
            }
        }
        Origin {
            child,
            url: url.unwrap_or_default(),
            cert: tls_dir.join("cert.pem"),
            fingerprint: fingerprint.unwrap_or_default(),
        }
    }

    /// Runs curl against `path` with extra `args`; returns (status line code, body).
    pub fn curl(&self, path: &str, args: &[&str]) -> Output {
        run(Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.cert)
            .args(args)
            .arg(format!("{}{path}", self.url)))
    }
}

/// A key directory and release directory with one published channel.
pub struct Published {
    /// The `shoal-publisher` binary used.
    pub bin: PathBuf,
    /// Scratch space holding everything.
    pub dir: TempDir,
    /// Key directory.
    pub keys: PathBuf,
    /// Release directory.
    pub repo: PathBuf,
}

/// Runs the binary `bin` with `args` and returns its output.
pub fn run_bin(bin: &Path, args: &[&str]) -> Output {
    run(Command::new(bin).args(args))
}

/// Asserts the command exited with `code`, printing its output otherwise.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Published {
    /// keygen, then release `files` (name, length, seed) as `version` on `stable`, with
    /// the `shoal-publisher` binary at `bin`.
    pub fn new(bin: &Path, tag: &str, files: &[(&str, usize, u64)], version: &str) -> Published {
        let dir = TempDir::new(tag);
        let keys = dir.join("keys");
        let repo = dir.join("repo");
        let out = run_bin(bin, &["keygen", "--keys", s(&keys), "--product", "acme"]);
        assert_exit(&out, 0);
        let mut args = vec![
            "release".to_owned(),
            "--keys".into(),
            s(&keys).into(),
            "--repo".into(),
            s(&repo).into(),
            "--channel".into(),
            "stable".into(),
            "--version".into(),
            version.into(),
        ];
        for (name, len, seed) in files {
            let p = dir.join(name);
            random_file(&p, *len, *seed);
            args.push(s(&p).into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_exit(&run_bin(bin, &refs), 0);
        Published {
            bin: bin.to_owned(),
            dir,
            keys,
            repo,
        }
    }

    /// Runs the publisher binary with `args`.
    pub fn publisher(&self, args: &[&str]) -> Output {
        run_bin(&self.bin, args)
    }

    /// Every file under the release directory, relative to it, sorted.
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.repo, &self.repo, &mut out);
        out.sort();
        out
    }
}

/// A path as `&str` (test paths are always UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
