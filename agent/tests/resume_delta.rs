//! Pieces an agent already holds are never fetched again: after an interrupted download
//! (resume) and when a new release shares pieces with the last one (delta update).

mod common;

use common::{Vendor, fetch_alone, read};

const LEN: usize = 32_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_release_moves_only_the_changed_pieces() {
    let v = Vendor::start("delta").await;
    let old = v.source("v1/driver.bin", LEN, 7);
    v.release("1.0", std::slice::from_ref(&old));
    let first = fetch_alone(v.agent("pc", vec![])).await.unwrap();
    assert_eq!(read(&first.files[0]), read(&old));
    assert_eq!(first.progress.counters.from_origin, LEN as u64);

    // Release 1.1: the same file with a few KiB inserted in the middle.
    let mut bytes = read(&old);
    let mid = bytes.len() / 2;
    bytes.splice(mid..mid, std::iter::repeat_n(0xab, 5000));
    let new = v.dir.join("v2/driver.bin");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    std::fs::write(&new, &bytes).unwrap();
    v.release("1.1", std::slice::from_ref(&new));
    let before = v.metrics.bytes_total();
    let second = fetch_alone(v.agent("pc", vec![])).await.unwrap();
    assert_eq!(second.release, "1.1");
    assert_eq!(read(&second.files[0]), bytes);
    let moved = second.progress.counters.from_origin;
    eprintln!(
        "delta: {moved} bytes of a {}-byte release moved",
        bytes.len()
    );
    assert!(moved > 0 && moved < bytes.len() as u64 / 8, "moved {moved}");
    assert!(v.metrics.bytes_total() - before < bytes.len() as u64 / 8 + 65536);
    v.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_download_refetches_nothing_it_verified() {
    let v = Vendor::start("resume").await;
    let src = v.source("src/image.bin", LEN, 9);
    v.release("2.0", std::slice::from_ref(&src));
    let full = fetch_alone(v.agent("pc", vec![])).await.unwrap();
    assert_eq!(read(&full.files[0]), read(&src));

    // Simulate a crash half way: drop the output and every other stored piece, and
    // leave a torn temporary file behind, as a crash during a write would.
    let state = v.dir.join("pc/state/pieces");
    std::fs::remove_dir_all(v.dir.join("pc/out")).unwrap();
    let mut kept = 0u64;
    let mut names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for (i, p) in names.iter().enumerate() {
        if i % 2 == 0 {
            std::fs::remove_file(p).unwrap();
        } else {
            kept += std::fs::metadata(p).unwrap().len();
        }
    }
    std::fs::write(state.join(".deadbeef.tmp"), b"torn").unwrap();
    // And one kept piece was damaged on disk: it must be refetched, not trusted.
    let damaged = &names[1];
    let mut b = read(damaged);
    b[0] ^= 1;
    std::fs::write(damaged, &b).unwrap();
    kept -= b.len() as u64;

    let resumed = fetch_alone(v.agent("pc", vec![])).await.unwrap();
    assert_eq!(read(&resumed.files[0]), read(&src));
    assert_eq!(resumed.progress.counters.from_origin, LEN as u64 - kept);
    v.stop();
}

/// Too little disk space is refused before any byte is fetched, with a clear error.
/// Needs root (mounts a small tmpfs); elsewhere it fails, naming what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_disk_space_is_refused_up_front() {
    shoal_tests::require(
        shoal_tests::netns::available(),
        "mounting a tmpfs needs root (and this harness iproute2)",
    );
    let v = Vendor::start("full-disk").await;
    let src = v.source("src/big.bin", LEN, 3);
    v.release("1", std::slice::from_ref(&src));
    let small = v.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    shoal_tests::require(mounted, "mount -t tmpfs failed here");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let mut o = v.agent("pc", vec![]);
    o.state = small.join("state");
    let e = fetch_alone(o).await.unwrap_err();
    assert_eq!(e.code, shoal_agent::error::exit::IO, "{e}");
    assert!(e.to_string().contains("free disk space"), "{e}");
    // Only the manifest and the index left the origin: not one piece (≥ 256 KiB).
    assert!(
        v.metrics.bytes_total() < 64 * 1024,
        "{} bytes",
        v.metrics.bytes_total()
    );
    v.stop();
}
