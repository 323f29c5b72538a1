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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match run(&VerifyOptions {
        source: Source::Dir(p.repo.clone()),
        anchor: None,
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
    // The history copies under channels/stable/ are the publisher's record; agents and
    // verify read the current manifest.
    let files = p.files();
    for file in files.iter().filter(|f| !f.starts_with("channels/stable/")) {
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
