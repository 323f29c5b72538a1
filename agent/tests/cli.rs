//! `shoal-agent` as a user runs it: wrong input gets a clear message and a fixed exit code.

use std::path::Path;

use shoal_tests::{TempDir, assert_exit, run_bin};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

fn agent(args: &[&str]) -> std::process::Output {
    run_bin(Path::new(BIN), args)
}

#[test]
fn wrong_input_gets_a_clear_error_and_a_fixed_exit_code() {
    let dir = TempDir::new("agent-cli");
    let bogus = dir.join("bogus.json");
    std::fs::write(&bogus, b"{}").unwrap();
    shoal_publisher::keygen::keygen(&shoal_publisher::keygen::KeygenOptions {
        keys: dir.join("keys"),
        product: "acme".into(),
        root_keys: 1,
        root_threshold: 1,
        expires_in: 86400,
        now: 1_800_000_000,
    })
    .unwrap();
    let trust = dir.join("keys/trust/1.json");
    let bad_cfg = dir.join("bad.toml");
    std::fs::write(&bad_cfg, "origin = \"https://x\"\nchanel = \"beta\"\n").unwrap();
    let no_origin = dir.join("empty.toml");
    std::fs::write(&no_origin, "").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = dir.join("out");
    let t = trust.to_str().unwrap();
    let o = out.to_str().unwrap();
    let common = [
        "--channel",
        "stable",
        "--out",
        o,
        "--no-mdns",
        "--listen",
        "127.0.0.1:0",
        "-q",
    ];
    let with = |url: &str, trust: &str| {
        let mut v = vec!["fetch", url, "--trust", trust];
        v.extend_from_slice(&common);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (with("http://127.0.0.1:1", t), 2, "--danger-allow-http"),
        (
            with("https://127.0.0.1:1", "/nonexistent/trust.json"),
            4,
            "/nonexistent/trust.json",
        ),
        (with(&dead, t), 3, "note:"),
        (
            with(&dead, bogus.to_str().unwrap()),
            1,
            "given with --trust",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                bad_cfg.to_str().unwrap().into(),
            ],
            2,
            "chanel",
        ),
        (
            vec![
                "run".into(),
                "--config".into(),
                no_origin.to_str().unwrap().into(),
            ],
            2,
            "no origin is configured",
        ),
        (vec!["fetch".into(), "--bogus".into()], 2, "--bogus"),
    ];
    for (args, code, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = agent(&refs);
        assert_exit(&out, code);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = agent(&["--help"]);
    assert_exit(&help, 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes:"));
    assert!(
        !out.exists()
            || std::fs::read_dir(&out)
                .unwrap()
                .all(|e| { e.unwrap().file_name().to_string_lossy().starts_with('.') }),
        "a failed fetch must not leave artifacts"
    );
}
