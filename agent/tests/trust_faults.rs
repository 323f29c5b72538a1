//! Documents that are signed but wrong for this agent, and releases that cannot be
//! completed (the hardening issue's "Trust" list): each is refused or left undelivered
//! with an error that names the cause, and nothing is installed.

mod common;

use std::time::Duration;

use common::{Vendor, fetch_alone, read};
use shoal_agent::error::exit;
use shoal_agent::origin::OriginClient;
use shoal_agent::release::{THIS_ARCH, THIS_OS, load_manifest};
use shoal_protocol::Name;

/// A release built for another operating system is refused before a piece is fetched;
/// one for this machine's OS and architecture (or `any`) is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_for_another_platform_is_refused_before_any_piece() {
    let v = Vendor::start("platform").await;
    let src = v.source("src/driver.bin", 3_000_000, 4);
    let other = if THIS_OS == "windows" {
        "linux"
    } else {
        "windows"
    };
    v.release_for("1", std::slice::from_ref(&src), other, THIS_ARCH);
    let o = v.agent("pc", vec![]);
    let out = o.out.clone();
    let e = fetch_alone(o).await.unwrap_err();
    let text = e.to_string();
    eprintln!("{text}");
    assert_eq!(e.code, exit::UNTRUSTED, "{text}");
    assert!(
        text.contains(&format!("is for {other}/{THIS_ARCH}")),
        "{text}"
    );
    assert!(text.contains("channel"), "no fix given: {text}");
    assert!(
        v.metrics.bytes_total() < 64 * 1024,
        "{} bytes left the origin for a release this machine cannot use",
        v.metrics.bytes_total()
    );
    assert!(!out.join("driver.bin").exists());

    v.release_for("2", std::slice::from_ref(&src), THIS_OS, THIS_ARCH);
    let report = fetch_alone(v.agent("pc", vec![])).await.unwrap();
    assert_eq!(read(&report.files[0]), read(&src));
    v.stop();
}

/// A clock a year behind (or ahead) makes the current manifest look not yet valid (or
/// expired): the error says to check the clock, and what the clock reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_a_year_off_is_named_in_the_error() {
    let v = Vendor::start("clock").await;
    let src = v.source("src/tool.bin", 100_000, 2);
    v.release("1", std::slice::from_ref(&src));
    let origin = OriginClient::new(&v.url, Some(&v.cert), false).unwrap();
    let anchor = read(&v.keys.join("trust/1.json"));
    let channel = Name::new("stable").unwrap();
    let year = 365 * 86_400;
    for now in [common::now() - year, common::now() + year] {
        let e = load_manifest(&origin, &anchor, None, &channel, now)
            .await
            .unwrap_err();
        let text = e.to_string();
        eprintln!("{text}");
        assert_eq!(e.code, exit::UNTRUSTED, "{text}");
        assert!(text.contains("check this machine's clock"), "{text}");
        assert!(text.contains(&shoal_cli::utc(now)), "{text}");
    }
    v.stop();
}

/// The origin (or a mirror) serves another release's piece index under this release's
/// name: the index is checked against the signed manifest before it is parsed, the
/// download stops with an error naming the file, and nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_from_another_release_is_refused() {
    let v = Vendor::start("mix-match").await;
    let a = v.source("a/tool.bin", 2_000_000, 5);
    v.release("1", std::slice::from_ref(&a));
    let old: Vec<_> = std::fs::read_dir(v.repo.join("indexes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let b = v.source("b/tool.bin", 2_000_000, 6);
    v.release("2", std::slice::from_ref(&b));
    let new = std::fs::read_dir(v.repo.join("indexes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !old.contains(p))
        .unwrap();
    std::fs::copy(&old[0], &new).unwrap();
    let o = v.agent("pc", vec![]);
    let out = o.out.clone();
    let e = fetch_alone(o).await.unwrap_err();
    let text = e.to_string();
    eprintln!("{text}");
    // Refused by its hash, or, when it is longer than the signed length, cut off there.
    assert!(
        e.code == exit::UNTRUSTED || text.contains("more than the"),
        "{text}"
    );
    assert!(text.contains("indexes/"), "the file is not named: {text}");
    assert!(!out.join("tool.bin").exists());
    v.stop();
}

/// A two-artifact release whose second artifact the origin does not have (and no peer
/// does): the first is fetched, nothing is delivered or installed, and the agent says
/// which file is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_an_artifact_that_never_arrives_installs_nothing() {
    let v = Vendor::start("missing-artifact").await;
    let first = v.source("src/app.bin", 2_000_000, 7);
    let second = v.source("src/data.bin", 2_000_000, 8);
    v.release("1", &[first.clone(), second]);
    let missing = std::fs::read_dir(v.repo.join("artifacts"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| p.ends_with("data.bin"))
        .unwrap();
    std::fs::remove_file(&missing).unwrap();
    let o = v.agent("pc", vec![]);
    let out = o.out.clone();
    let run = tokio::time::timeout(Duration::from_secs(60), fetch_alone(o)).await;
    match run {
        Ok(Err(e)) => {
            let text = e.to_string();
            eprintln!("{text}");
            assert!(
                text.contains("data.bin"),
                "the missing file is not named: {text}"
            );
        }
        Ok(Ok(_)) => panic!("a release with a missing artifact was delivered"),
        Err(_) => panic!("the agent neither finished nor gave up within 60 s"),
    }
    assert!(
        !out.join("app.bin").exists(),
        "half a release was delivered"
    );
    assert!(!out.join("data.bin").exists());
    v.stop();
}

/// An artifact replaced on the origin by other bytes of the same length (and no peer to
/// help): every piece fails its hash, nothing is stored or delivered, and a one-shot
/// fetch gives up naming the file and the mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_swapped_on_the_origin_is_named_and_nothing_is_delivered() {
    let v = Vendor::start("swapped-artifact").await;
    let src = v.source("src/app.bin", 2_000_000, 9);
    v.release("1", std::slice::from_ref(&src));
    let file = std::fs::read_dir(v.repo.join("artifacts"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    shoal_tests::random_file(&file, 2_000_000, 99);
    let o = v.agent("pc", vec![]);
    let (out, state) = (o.out.clone(), o.state.clone());
    let run = tokio::time::timeout(Duration::from_secs(60), fetch_alone(o)).await;
    let e = match run {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("a swapped artifact was delivered"),
        Err(_) => panic!("the agent neither finished nor gave up within 60 s"),
    };
    let text = e.to_string();
    eprintln!("{text}");
    assert!(text.contains("app.bin"), "the file is not named: {text}");
    assert!(text.contains("do not match the signed index"), "{text}");
    assert!(!out.join("app.bin").exists());
    let stored = std::fs::read_dir(state.join("pieces")).map_or(0, |d| d.count());
    assert_eq!(stored, 0, "pieces of the swapped file were stored");
    v.stop();
}
