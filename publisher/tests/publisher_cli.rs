//! `shoal-publisher` as a user runs it: real binary, real files, exit codes and messages.

use std::fs;
use std::path::Path;
use std::process::Output;

use shoal_tests::{Published, TempDir, assert_exit, random_file, run_bin, s};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-publisher");

fn publisher(args: &[&str]) -> Output {
    run_bin(Path::new(BIN), args)
}

fn publish(tag: &str, files: &[(&str, usize, u64)], version: &str) -> Published {
    Published::new(Path::new(BIN), tag, files, version)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn flip(path: &Path, at: usize) -> Vec<u8> {
    let orig = fs::read(path).unwrap();
    let mut b = orig.clone();
    b[at] ^= 0x01;
    fs::write(path, b).unwrap();
    orig
}

/// keygen → release → verify round-trips on a 50 MB file, and flipping a byte of the
/// manifest, its signature, the trust document, the piece index or the artifact makes
/// `verify` fail with exit 1 and a message naming the broken file. (Every byte position
/// is covered in-process by `tamper.rs`; here the real binary checks a spread of them.)
#[test]
fn round_trip_and_flipped_bytes_name_the_broken_file() {
    let p = publish("roundtrip", &[("driver.bin", 50_000_000, 7)], "2.4.1");
    let out = publisher(&["verify", "--repo", s(&p.repo)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("release 2.4.1"));

    let files = p.files();
    let find = |prefix: &str| {
        files
            .iter()
            .find(|f| f.starts_with(prefix))
            .unwrap()
            .clone()
    };
    let manifest = "channels/stable.json".to_owned();
    let manifest_len = fs::metadata(p.repo.join(&manifest)).unwrap().len() as usize;
    let text = fs::read_to_string(p.repo.join(&manifest)).unwrap();
    let sig_at = text.find("\"sig\"").unwrap() + 10;
    let index = find("indexes/");
    let index_len = fs::metadata(p.repo.join(&index)).unwrap().len() as usize;
    let artifact = find("artifacts/");
    let cases = [
        (manifest.clone(), 0),
        (manifest.clone(), 40),
        (manifest.clone(), manifest_len / 3),
        (manifest.clone(), sig_at),
        (manifest.clone(), manifest_len - 3),
        ("trust/1.json".to_owned(), 30),
        (index.clone(), 3),
        (index.clone(), 14),
        (index.clone(), 30),
        (index.clone(), index_len - 1),
        (artifact.clone(), 0),
        (artifact.clone(), 25_000_000),
        (artifact.clone(), 49_999_999),
    ];
    for (file, at) in cases {
        let path = p.repo.join(&file);
        let orig = flip(&path, at);
        let out = publisher(&["verify", "--repo", s(&p.repo)]);
        fs::write(&path, orig).unwrap();
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains(&file),
            "flip {file}@{at}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("note:"), "{}", stderr(&out));
    }
    // A truncated artifact and a deleted index are reported too.
    let apath = p.repo.join(&artifact);
    let orig = fs::read(&apath).unwrap();
    fs::write(&apath, &orig[..orig.len() - 1]).unwrap();
    let out = publisher(&["verify", "--repo", s(&p.repo)]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&artifact));
    fs::write(&apath, orig).unwrap();
    fs::remove_file(p.repo.join(&index)).unwrap();
    let out = publisher(&["verify", "--repo", s(&p.repo)]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(&format!("{index}: missing")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn release_is_idempotent_and_published_versions_are_immutable() {
    let p = publish("idem", &[("a.bin", 3_000_000, 1), ("b.bin", 10, 2)], "1.0");
    let before = p.files();
    let manifest = fs::read(p.repo.join("channels/stable.json")).unwrap();
    let release = |version: &str, files: &[&Path]| {
        let mut args = vec![
            "release",
            "--keys",
            s(&p.keys),
            "--repo",
            s(&p.repo),
            "--channel",
            "stable",
            "--version",
            version,
            "--quiet",
        ];
        args.extend(files.iter().map(|f| s(f)));
        publisher(&args)
    };
    let (a, b) = (p.dir.join("a.bin"), p.dir.join("b.bin"));

    let out = release("1.0", &[&a, &b]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("already published"));
    assert_eq!(p.files(), before);
    assert_eq!(
        fs::read(p.repo.join("channels/stable.json")).unwrap(),
        manifest
    );

    random_file(&b, 11, 3);
    let out = release("1.0", &[&a, &b]);
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("already published"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("note: "));
    assert_eq!(
        p.files(),
        before,
        "a refused release must leave nothing behind"
    );

    // A damaged copy of an unchanged artifact is replaced when it is published again.
    let a_pub = before.iter().find(|f| f.ends_with("/a.bin")).unwrap();
    let mut damaged = fs::read(p.repo.join(a_pub)).unwrap();
    damaged[7] ^= 0xff;
    fs::write(p.repo.join(a_pub), damaged).unwrap();
    assert_exit(&release("1.1", &[&a, &b]), 0);
    let out = publisher(&["verify", "--repo", s(&p.repo)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("manifest version 2, release 1.1"));
    assert!(p.repo.join("channels/stable/1.json").exists());
    assert!(p.repo.join("channels/stable/2.json").exists());
}

#[test]
fn wrong_input_gets_a_clear_error_and_a_fixed_exit_code() {
    let p = publish("badinput", &[("x.bin", 1000, 1)], "1");
    let x = p.dir.join("x.bin");
    let (keys, repo) = (s(&p.keys), s(&p.repo));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "release",
                "--keys",
                keys,
                "--repo",
                repo,
                "--channel",
                "../etc",
                "--version",
                "2",
                s(&x),
            ],
            2,
            "channel \"../etc\" is not a valid name",
        ),
        (
            vec![
                "release",
                "--keys",
                keys,
                "--repo",
                repo,
                "--channel",
                "stable",
                "--version",
                "2",
                "--arch",
                "amd64",
                s(&x),
            ],
            2,
            "agents name this platform \"x86_64\"",
        ),
        (
            vec![
                "release",
                "--keys",
                keys,
                "--repo",
                repo,
                "--channel",
                "stable",
                "--version",
                "2 beta",
                s(&x),
            ],
            2,
            "release version",
        ),
        (
            vec![
                "release",
                "--keys",
                keys,
                "--repo",
                repo,
                "--channel",
                "stable",
                "--version",
                "2",
                "/nonexistent/file.bin",
            ],
            4,
            "/nonexistent/file.bin",
        ),
        (
            vec![
                "release",
                "--keys",
                repo,
                "--repo",
                repo,
                "--channel",
                "stable",
                "--version",
                "2",
                s(&x),
            ],
            4,
            "check that --keys names the directory keygen made",
        ),
        (
            vec![
                "release",
                "--keys",
                "/nonexistent",
                "--repo",
                repo,
                "--channel",
                "stable",
                "--version",
                "2",
                s(&x),
            ],
            4,
            "not a Shoal key directory",
        ),
        (
            vec!["keygen", "--keys", keys, "--product", "acme"],
            3,
            "already holds Shoal keys",
        ),
        (
            vec!["keygen", "--keys", "/tmp/never", "--product", "a b"],
            2,
            "not a valid name",
        ),
        (
            vec![
                "keygen",
                "--keys",
                "/tmp/never",
                "--product",
                "a",
                "--root-keys",
                "2",
                "--root-threshold",
                "3",
            ],
            2,
            "threshold",
        ),
        (vec!["verify"], 2, "needs an origin URL or --repo"),
        (vec!["verify", "https://127.0.0.1:1"], 2, "--channel"),
        (vec!["verify", "--repo", "/nonexistent"], 1, "trust/1.json"),
        (vec!["serve", "--repo", repo], 2, "--self-signed"),
        (vec!["release", "--no-such-flag"], 2, "--no-such-flag"),
    ];
    for (args, code, needle) in cases {
        let out = publisher(&args);
        assert_exit(&out, code);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert!(
        !Path::new("/tmp/never").exists(),
        "a refused keygen must not create its directory"
    );
    let help = publisher(&["--help"]);
    assert_exit(&help, 0);
    assert!(stdout(&help).contains("Exit codes:"));
}

#[cfg(unix)]
#[test]
fn secret_keys_are_private_and_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keys");
    let keys = dir.join("keys");
    let out = publisher(&[
        "keygen",
        "--keys",
        s(&keys),
        "--product",
        "acme",
        "--root-keys",
        "3",
        "--root-threshold",
        "2",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut n = 0;
    for e in fs::read_dir(&keys).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "key") {
            n += 1;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let secret = fs::read_to_string(&path).unwrap();
            let hex = secret.split_whitespace().nth(1).unwrap();
            assert!(!stdout(&out).contains(hex));
            assert!(!stderr(&out).contains(hex));
        }
    }
    assert_eq!(n, 4, "3 root keys and 1 release key");
}

#[test]
fn rotations_keep_the_release_verifiable_from_the_shipped_trust() {
    let p = publish("rotate", &[("x.bin", 2_000_000, 9)], "1");
    let shipped = p.dir.join("shipped-trust.json");
    fs::copy(p.keys.join("trust/1.json"), &shipped).unwrap();
    let verify = || publisher(&["verify", "--repo", s(&p.repo), "--trust", s(&shipped)]);

    let out = publisher(&[
        "rotate-key",
        "--keys",
        s(&p.keys),
        "--role",
        "release",
        "--repo",
        s(&p.repo),
    ]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("re-signed channel stable as manifest version 2"));
    assert!(p.repo.join("trust/2.json").exists());
    assert_eq!(fs::read_dir(p.keys.join("retired")).unwrap().count(), 1);
    let out = verify();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("trust version 2"));
    // A vendor that ships trust version 2 checks against it: the history copy signed
    // with the retired release key (version 1) is still the vendor's.
    let shipped_v2 = p.dir.join("shipped-trust-2.json");
    fs::copy(p.repo.join("trust/2.json"), &shipped_v2).unwrap();
    let out = publisher(&["verify", "--repo", s(&p.repo), "--trust", s(&shipped_v2)]);
    assert_exit(&out, 0);

    // Root rotation to 2-of-3 new keys; the next release is signed with the new release key.
    let out = publisher(&[
        "rotate-key",
        "--keys",
        s(&p.keys),
        "--role",
        "root",
        "--count",
        "3",
        "--threshold",
        "2",
        "--repo",
        s(&p.repo),
    ]);
    assert_exit(&out, 0);
    let y = p.dir.join("y.bin");
    random_file(&y, 5000, 4);
    let out = publisher(&[
        "release",
        "--keys",
        s(&p.keys),
        "--repo",
        s(&p.repo),
        "--channel",
        "stable",
        "--version",
        "2",
        "-q",
        s(&y),
    ]);
    assert_exit(&out, 0);
    let out = verify();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("trust version 3"));
    assert!(stdout(&out).contains("manifest version 3, release 2"));

    // A trust document from another key set is not a valid anchor for this release.
    let other = publish("rotate-other", &[("z.bin", 10, 1)], "1");
    let out = publisher(&[
        "verify",
        "--repo",
        s(&p.repo),
        "--trust",
        s(&other.keys.join("trust/1.json")),
    ]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("trust/2.json"), "{}", stderr(&out));
}

#[test]
fn refresh_resigns_the_same_release_with_a_new_expiry() {
    let p = publish("refresh", &[("x.bin", 100_000, 2)], "3.1");
    let before = fs::read(p.repo.join("channels/stable.json")).unwrap();
    let out = publisher(&[
        "refresh",
        "--keys",
        s(&p.keys),
        "--repo",
        s(&p.repo),
        "--expires-days",
        "90",
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("refreshed channel stable: manifest version 2"),
        "{}",
        stdout(&out)
    );
    assert_ne!(
        fs::read(p.repo.join("channels/stable.json")).unwrap(),
        before
    );
    let out = publisher(&["verify", "--repo", s(&p.repo)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("manifest version 2, release 3.1"));
    // Re-running the release is still a no-op: the release version is already out.
    let out = publisher(&[
        "release",
        "--keys",
        s(&p.keys),
        "--repo",
        s(&p.repo),
        "--channel",
        "stable",
        "--version",
        "3.1",
        "-q",
        s(&p.dir.join("x.bin")),
    ]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("already published"));
    let out = publisher(&[
        "refresh",
        "--keys",
        s(&p.keys),
        "--repo",
        s(&p.repo),
        "--channel",
        "beta",
    ]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("channel beta has no published release"));
    let out = publisher(&[
        "refresh",
        "--keys",
        s(&p.keys),
        "--repo",
        s(&p.repo),
        "--expires-days",
        "0",
    ]);
    assert_exit(&out, 2);
}

/// `agent-package` refuses what would make a broken package, and says what to change.
#[test]
fn agent_package_refuses_bad_input_plainly() {
    let p = publish("agent-package", &[("a.bin", 1000, 1)], "1");
    let trust = p.keys.join("trust/1.json");
    let t = trust.to_str().unwrap();
    let out_dir = p.dir.join("dist");
    let o = out_dir.to_str().unwrap();
    // The publisher binary stands in for the agent: only its presence is checked here.
    let base = |name: &str, origin: &str, agent: &str, trust: &str| -> Vec<String> {
        [
            "agent-package",
            "--name",
            name,
            "--version",
            "1.0.0",
            "--maintainer",
            "Acme Ops <ops@acme.example>",
            "--summary",
            "Acme updates",
            "--trust",
            trust,
            "--origin",
            origin,
            "--agent",
            agent,
            "--out",
            o,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cases = [
        (base("Acme Updates", "https://u.example", BIN, t), "--name"),
        (
            base("shoal-agent", "https://u.example", BIN, t),
            "Shoal's own",
        ),
        (base("acme-updates", "http://u.example", BIN, t), "https://"),
        (
            base("acme-updates", "https://u.example", "/nonexistent/agent", t),
            "no agent binary",
        ),
        (
            base("acme-updates", "https://u.example", BIN, BIN),
            "not a trust document",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = publisher(&refs);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
}
