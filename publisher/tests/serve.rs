//! `shoal-publisher serve` against curl and `verify URL`, and the release directory
//! behind a plain static web server.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use shoal_tests::{ChildGuard, Origin, Published, assert_exit, run, run_bin, s};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-publisher");
const LEN: usize = 3_000_000;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn setup(tag: &str) -> (Published, Origin, String, Vec<u8>) {
    let p = Published::new(Path::new(BIN), tag, &[("driver.bin", LEN, 11)], "1");
    let origin = Origin::start(Path::new(BIN), &p.repo, &p.dir.join("tls"));
    let artifact = p
        .files()
        .into_iter()
        .find(|f| f.starts_with("artifacts/"))
        .unwrap();
    let bytes = fs::read(p.repo.join(&artifact)).unwrap();
    (p, origin, format!("/{artifact}"), bytes)
}

#[test]
fn ranges_return_exactly_the_requested_bytes() {
    let (_p, origin, path, bytes) = setup("range");
    let last = LEN - 1;
    let cases: Vec<(String, usize, usize)> = vec![
        ("0-0".into(), 0, 0),
        ("100-199".into(), 100, 199),
        (format!("{}-", LEN - 10), LEN - 10, last),
        ("-4096".into(), LEN - 4096, last),
        (format!("1000-{}", LEN * 2), 1000, last),
        (format!("{last}-{last}"), last, last),
    ];
    for (range, start, end) in cases {
        let out = origin.curl(&path, &["--range", &range, "-D", "-", "-o", "/dev/stdout"]);
        assert_exit(&out, 0);
        let raw = out.stdout;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        assert!(head.starts_with("http/1.1 206"), "{range}: {head}");
        assert!(
            head.contains(&format!("content-range: bytes {start}-{end}/{LEN}")),
            "{head}"
        );
        assert_eq!(&raw[split..], &bytes[start..=end], "range {range}");
    }
    // Unsatisfiable: 416 with the length.
    let out = origin.curl(
        &path,
        &["--range", &format!("{LEN}-"), "-D", "-", "-o", "/dev/null"],
    );
    let head = text(&out).to_lowercase();
    assert!(head.starts_with("http/1.1 416"), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes */{LEN}")),
        "{head}"
    );
    // Several ranges: the whole file with 200, which RFC 9110 allows.
    let out = origin.curl(
        &path,
        &[
            "--range",
            "0-1,5-6",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
        ],
    );
    assert_eq!(text(&out), "200");
}

#[test]
fn headers_validators_and_refusals() {
    let (_p, origin, path, _) = setup("headers");
    let out = origin.curl(&path, &["-I"]);
    let head = text(&out).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {LEN}")));
    assert!(head.contains("accept-ranges: bytes"));
    assert!(head.contains("last-modified: "));
    assert!(head.contains("cache-control: public, max-age=31536000, immutable"));
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_owned();
    let code = |extra: &[&str], p: &str| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        text(&origin.curl(p, &args))
    };
    assert_eq!(
        code(&["-H", &format!("If-None-Match: {etag}")], &path),
        "304"
    );
    assert_eq!(code(&["-H", "If-None-Match: \"other\""], &path), "200");
    // If-Range with a stale validator: the Range is ignored.
    assert_eq!(
        code(&["-r", "0-9", "-H", "If-Range: \"stale\""], &path),
        "200"
    );
    assert_eq!(
        code(&["-r", "0-9", "-H", &format!("If-Range: {etag}")], &path),
        "206"
    );
    let m = origin.curl("/channels/stable.json", &["-I"]);
    assert!(text(&m).to_lowercase().contains("cache-control: no-cache"));
    for bad in [
        "/../etc/passwd",
        "/artifacts/%2e%2e/x",
        "/trust/.hidden",
        "/trust",
        "/nope",
    ] {
        assert_eq!(code(&["--path-as-is"], bad), "404", "{bad}");
    }
    assert_eq!(code(&["-X", "POST"], &path), "405");
}

#[test]
fn metrics_count_the_bytes_sent_per_file() {
    let (_p, origin, path, _) = setup("metrics");
    assert_exit(&origin.curl(&path, &["-o", "/dev/null"]), 0);
    assert_exit(&origin.curl(&path, &["-r", "10-109", "-o", "/dev/null"]), 0);
    assert_exit(&origin.curl(&path, &["-I"]), 0);
    let m = text(&origin.curl("/metrics", &[]));
    let want = LEN + 100;
    assert!(
        m.contains(&format!(
            "shoal_origin_file_sent_bytes_total{{path=\"{path}\"}} {want}\n"
        )),
        "{m}"
    );
    assert!(
        m.contains("shoal_origin_responses_total{status=\"206\"} 1\n"),
        "{m}"
    );
    // Per release (the artifact belongs to release "1" of stable), and by kind.
    assert!(
        m.contains(&format!(
            "shoal_origin_release_sent_bytes_total{{channel=\"stable\",release=\"1\"}} {want}\n"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "shoal_origin_release_size_bytes{{channel=\"stable\",release=\"1\"}} {LEN}\n"
        )),
        "{m}"
    );
    assert!(
        m.contains("shoal_origin_requests_total{kind=\"range\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("shoal_origin_requests_total{kind=\"whole\"} 1\n"),
        "{m}"
    );
    // Prometheus's own checker accepts it (CI installs `promtool`).
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    shoal_tests::require(promtool.is_ok(), "promtool (Debian package prometheus)");
    let mut child = promtool.unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), m.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // `stats` reads it back: one whole copy plus 100 bytes for 4 endpoints.
    let out = run_bin(
        Path::new(BIN),
        &[
            "stats",
            &origin.url,
            "--ca",
            s(&origin.cert),
            "--endpoints",
            "4",
        ],
    );
    assert_exit(&out, 0);
    let t = text(&out);
    let row = t
        .lines()
        .find(|l| l.starts_with("stable"))
        .unwrap_or_else(|| panic!("no stable row: {t}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "1", "{t}");
    assert_eq!(cells[cells.len() - 2], "1.00", "{t}");
    assert_eq!(cells[cells.len() - 1], "75.0%", "{t}");
    let out = run_bin(
        Path::new(BIN),
        &["stats", &origin.url, "--ca", s(&origin.cert), "--json"],
    );
    assert_exit(&out, 0);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["releases"][0]["sent"], want as u64);
    // Not an origin with metrics: a plain error.
    let out = run_bin(Path::new(BIN), &["stats", "https://127.0.0.1:1"]);
    assert_exit(&out, 4);
}

#[test]
fn verify_url_and_graceful_shutdown() {
    let (p, mut origin, _, _) = setup("verifyurl");
    let ok = run_bin(
        Path::new(BIN),
        &[
            "verify",
            &origin.url,
            "--channel",
            "stable",
            "--ca",
            s(&origin.cert),
            "--trust",
            s(&p.keys.join("trust/1.json")),
        ],
    );
    assert_exit(&ok, 0);
    // Without the certificate the origin is not trusted.
    let out = run_bin(
        Path::new(BIN),
        &["verify", &origin.url, "--channel", "stable"],
    );
    assert_exit(&out, 1);
    // The printed fingerprint is the certificate's.
    let pem = fs::read_to_string(&origin.cert).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(origin.fingerprint.len(), 64);
    let status = origin
        .child
        .terminate(Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// The release directory works unchanged behind any static web server: here Python's.
#[test]
fn release_directory_works_behind_a_plain_static_server() {
    let p = Published::new(Path::new(BIN), "static", &[("a.bin", 2_000_000, 3)], "1");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let _server = ChildGuard(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                s(&p.repo),
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let out = run(Command::new(BIN).args(["verify", &url, "--channel", "stable"]));
        if out.status.success() {
            return;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("verify through a static server failed: {last:?}");
}
