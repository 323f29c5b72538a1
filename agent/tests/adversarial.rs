//! A lying peer is banned and the agent still ends with correct bytes; a dead origin does
//! not stop a LAN that holds the pieces; an unreachable, endless or looping origin is a
//! clear error.

mod common;

use std::time::Duration;

use common::liar::liar;
use common::{Vendor, fetch_alone, read};
use shoal_agent::error::exit;
use shoal_agent::fetch::run;
use shoal_tests::random_file;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const LEN: usize = 12_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_banned_and_the_download_still_verifies() {
    let v = Vendor::start("liar").await;
    let src = v.dir.join("fw.bin");
    random_file(&src, LEN, 5);
    v.release("1", std::slice::from_ref(&src));
    let (release, pieces) = v.current_release();

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let evil = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        liar(s, release, pieces).await
    });
    let report = fetch_alone(v.agent("victim", vec![addr])).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), evil)
        .await
        .unwrap()
        .unwrap();
    assert!(
        served > 0,
        "the liar was never asked: the test proves nothing"
    );
    assert_eq!(read(&report.files[0]), read(&src));
    let c = report.progress.counters;
    assert_eq!(c.from_peers, 0, "no byte from the liar may count");
    assert_eq!(c.from_origin, LEN as u64);
    assert!(c.wasted > 0);
    v.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lan_finishes_after_the_origin_dies() {
    let v = Vendor::start("dead-origin").await;
    let src = v.dir.join("pack.bin");
    random_file(&src, LEN, 6);
    v.release("1", std::slice::from_ref(&src));

    // A has the release and keeps seeding.
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_addr = la.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let (a_done, a_rx) = oneshot::channel();
    let a = tokio::spawn(run(
        v.agent("a", vec![]),
        la,
        Some(a_done),
        stopped.clone(),
        |_| {},
    ));
    a_rx.await.unwrap();

    // B starts; the origin dies as soon as B has its documents.
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (b_done, b_rx) = oneshot::channel();
    let killer = v.stop_handle();
    let b = tokio::spawn(run(
        v.agent("b", vec![a_addr]),
        lb,
        Some(b_done),
        stopped,
        move |_| {
            killer.send_replace(true);
        },
    ));
    let rb = tokio::time::timeout(Duration::from_secs(60), b_rx)
        .await
        .unwrap()
        .unwrap();
    stop.send_replace(true);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(read(&rb.files[0]), read(&src));
    assert_eq!(rb.progress.counters.from_origin, 0);
    assert_eq!(rb.progress.counters.from_peers, LEN as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_a_clear_error() {
    let v = Vendor::start("no-origin").await;
    let mut o = v.agent("pc", vec![]);
    v.stop();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    o.origin = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = fetch_alone(o).await.unwrap_err();
    assert_eq!(e.code, exit::UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("note:"), "{e}");
}

/// Issue 8: an origin whose certificate is refused printed only "error sending request
/// for url"; the reason and what to do about it must reach the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_origin_certificate_names_the_reason_and_the_fix() {
    let v = Vendor::start("bad-cert").await;
    let src = v.source("f.bin", 100_000, 1);
    v.release("1", std::slice::from_ref(&src));
    let mut o = v.agent("pc", vec![]);
    o.ca = None; // the origin's self-signed CA is not trusted
    let e = fetch_alone(o).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.code, exit::UNAVAILABLE, "{text}");
    assert!(text.contains("certificate"), "no reason given: {text}");
    assert!(text.contains("--ca"), "no fix given: {text}");
    v.stop();
}

/// A hostile origin on plain HTTP (the agent allows it only for tests): `channels/…`
/// answers with `respond`, every other path with 404. Counts the bytes it wrote.
async fn hostile_origin(
    respond: fn(&str) -> Vec<u8>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = s.read(&mut head).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&head[..n]).into_owned();
                let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
                if !path.starts_with("/channels/") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let head = respond(&path);
                if s.write_all(&head).await.is_err() {
                    return;
                }
                counter.fetch_add(head.len(), Ordering::Relaxed);
                if !head.starts_with(b"HTTP/1.1 200") {
                    return;
                }
                // A body with no end, in bounded steps: at most 256 MiB, 60 s.
                let chunk = vec![b'{'; 64 * 1024];
                let until = tokio::time::Instant::now() + Duration::from_secs(60);
                for _ in 0..4096 {
                    if tokio::time::Instant::now() > until || s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            });
        }
    });
    (url, sent)
}

/// Issue 10: an origin that streams a manifest without end is cut off at the manifest
/// size limit, with a clear error; one that redirects in a loop is a clear error too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_or_looping_origin_is_a_clear_error() {
    let v = Vendor::start("hostile-origin").await;
    let (url, sent) = hostile_origin(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".to_vec()
    })
    .await;
    let mut o = v.agent("endless", vec![]);
    o.origin = url;
    o.danger_allow_http = true;
    let began = std::time::Instant::now();
    let e = fetch_alone(o).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.code, exit::UNAVAILABLE, "{text}");
    eprintln!("endless: {text}");
    assert!(
        text.contains("more than the") && text.contains("Tell the vendor"),
        "{text}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    // Three attempts, each cut off soon after the limit (socket buffers aside).
    let limit = shoal_protocol::limits::MAX_MANIFEST_LEN;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 3 * (limit + (8 << 20)),
        "the origin sent {sent} bytes"
    );

    let (url, _) = hostile_origin(|path| {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {path}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ).into_bytes()
    })
    .await;
    let mut o = v.agent("looping", vec![]);
    o.origin = url;
    o.danger_allow_http = true;
    let e = fetch_alone(o).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.code, exit::UNAVAILABLE, "{text}");
    eprintln!("looping: {text}");
    assert!(
        text.contains("too many redirects") && text.contains("redirect rules"),
        "{text}"
    );
    v.stop();
}

/// The origin's certificate is expired, for another name, or a CA certificate used as
/// the server's own: each refusal names its cause and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_misnamed_or_ca_origin_certificate_names_the_cause() {
    let v = Vendor::start("tls-cases").await;
    let src = v.source("f.bin", 100_000, 2);
    v.release("1", std::slice::from_ref(&src));
    type Edit = fn(&mut rcgen::CertificateParams);
    let cases: [(&str, Edit, &str, &str); 3] = [
        (
            "expired",
            |p| {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            },
            "expired",
            "renew",
        ),
        (
            "another name",
            |p| {
                p.subject_alt_names = vec![rcgen::SanType::DnsName(
                    "origin.example".try_into().unwrap(),
                )];
            },
            "not valid for",
            "host name",
        ),
        (
            "a CA as the server's certificate",
            |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            "CA",
            "issued by that CA",
        ),
    ];
    for (name, edit, cause, fix) in cases {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        edit(&mut params);
        let cert = params.self_signed(&key).unwrap();
        let dir = v.dir.join(&format!("tls-{}", name.replace(" ", "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let tls = shoal_publisher::serve::tls::load(&cert_path, &key_path)
            .unwrap()
            .server_config()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        let repo = v.repo.clone();
        let server = tokio::spawn(async move {
            shoal_publisher::serve::run(
                listener,
                tls,
                &repo,
                std::sync::Arc::default(),
                async move {
                    let _ = stopped.changed().await;
                },
            )
            .await
        });
        let mut o = v.agent("pc", vec![]);
        o.origin = url;
        o.ca = Some(cert_path);
        let e = fetch_alone(o).await.unwrap_err();
        let text = e.to_string();
        eprintln!("{name}: {text}");
        assert_eq!(e.code, exit::UNAVAILABLE, "{name}: {text}");
        assert!(
            text.contains(cause),
            "{name}: the cause is not named: {text}"
        );
        assert!(text.contains(fix), "{name}: no fix given: {text}");
        stop.send_replace(true);
        let _ = server.await;
    }
    v.stop();
}

/// An origin that answers 500, or closes every connection without a word: a clear
/// error naming the cause and the URL, after a few quick retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_fails_or_hangs_up_is_a_clear_error() {
    let v = Vendor::start("failing-origin").await;
    type Respond = fn(&str) -> Vec<u8>;
    let cases: [(&str, Respond, &str); 2] = [
        (
            "500",
            |_| {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
            },
            "HTTP 500",
        ),
        ("hang-up", |_| Vec::new(), "GET http://"),
    ];
    for (name, respond, cause) in cases {
        let (url, _) = hostile_origin(respond).await;
        let mut o = v.agent(name, vec![]);
        o.origin = url;
        o.danger_allow_http = true;
        let began = std::time::Instant::now();
        let e = fetch_alone(o).await.unwrap_err();
        let text = e.to_string();
        eprintln!("{name}: {text}");
        assert_eq!(e.code, exit::UNAVAILABLE, "{name}: {text}");
        assert!(
            text.contains(cause),
            "{name}: the cause is not named: {text}"
        );
        assert!(text.contains("channels/stable.json"), "{name}: {text}");
        assert!(text.contains("note:"), "{name}: no advice: {text}");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            began.elapsed()
        );
    }
    v.stop();
}
