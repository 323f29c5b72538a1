//! Every single-byte change to a published manifest, trust document or piece index, and
//! a dense spread of changes to an artifact, makes verification fail and name the file.
//! Runs `verify` in-process so every byte position can be tried.

use std::fs;
use std::path::Path;

use shoal_publisher::source::Source;
use shoal_publisher::verify::{VerifyOptions, run};
use shoal_tests::Published;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-publisher");

fn problems_for(p: &Published) -> Vec<String> {
    problems_with(p, None)
}

/// With `anchor`: as a vendor checks a directory against the trust document it ships.
fn problems_with(p: &Published, anchor: Option<std::path::PathBuf>) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match run(&VerifyOptions {
        source: Source::Dir(p.repo.clone()),
        anchor,
        channels: vec![],
        now,
    }) {
        Ok(_) => vec![],
        Err(problems) => problems.into_iter().map(|p| p.file).collect(),
    }
}

#[test]
fn every_flipped_byte_is_caught_and_attributed() {
    let p = Published::new(Path::new(BIN), "tamper", &[("fw.img", 3_000_000, 5)], "1");
    assert!(problems_for(&p).is_empty());
    // Every file the layout defines, the history copies under channels/stable/ too.
    let files = p.files();
    assert!(files.iter().any(|f| f.starts_with("channels/stable/")));
    for file in &files {
        let path = p.repo.join(file);
        let orig = fs::read(&path).unwrap();
        let step = if file.starts_with("artifacts/") {
            4099
        } else {
            1
        };
        let positions = (0..orig.len()).step_by(step).chain([orig.len() - 1]);
        for at in positions {
            let mut b = orig.clone();
            b[at] ^= 0x01;
            fs::write(&path, &b).unwrap();
            let found = problems_for(&p);
            assert!(
                found.iter().any(|f| f == file),
                "flipping byte {at} of {file} went unnoticed: {found:?}"
            );
        }
        fs::write(&path, &orig).unwrap();
    }
    assert!(problems_for(&p).is_empty());
}

/// With the vendor's own trust document as the anchor, the directory's `trust/1.json`
/// is still checked: a flipped byte in it is reported.
#[test]
fn the_directory_trust_is_checked_even_with_an_outside_anchor() {
    let p = Published::new(
        Path::new(BIN),
        "tamper-anchor",
        &[("fw.img", 100_000, 6)],
        "1",
    );
    let anchor = p.dir.path().join("shipped-trust.json");
    fs::copy(p.repo.join("trust/1.json"), &anchor).unwrap();
    assert!(problems_with(&p, Some(anchor.clone())).is_empty());
    let path = p.repo.join("trust/1.json");
    let orig = fs::read(&path).unwrap();
    for at in (0..orig.len()).step_by(7).chain([orig.len() - 1]) {
        let mut b = orig.clone();
        b[at] ^= 0x01;
        fs::write(&path, &b).unwrap();
        let found = problems_with(&p, Some(anchor.clone()));
        assert!(
            found.iter().any(|f| f == "trust/1.json"),
            "flipping byte {at} of trust/1.json went unnoticed: {found:?}"
        );
    }
    fs::write(&path, &orig).unwrap();
}
