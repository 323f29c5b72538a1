//! The dashboard in real headless Chromium: opened before there is anything to show, it
//! fills in by itself as a release is published and three agents fetch it, and every
//! number it shows matches the agent's JSON API.
//!
//! Set `SHOAL_SCREENSHOT=path.png` to save what the page looks like at the end.

mod common;

use std::time::Duration;

use common::Vendor;
use common::fleet::Fleet;
use serde_json::Value;
use shoal_tests::browser::{self, Browser};
use shoal_tests::{TempDir, require};

/// What the test reads off the page: the numbers it shows, raw, from data attributes.
const READ_PAGE: &str = r#"
const q = id => document.getElementById(id);
const cells = [...document.querySelectorAll('#grid tbody td.cell')].map(td => ({
  agent: td.parentElement.dataset.agent, release: td.dataset.release,
  percent: td.dataset.percent === undefined ? null : Number(td.dataset.percent),
  text: td.textContent }));
return {
  marker: window.__shoalTestMarker === true,
  updates: Number(q('live').dataset.updates),
  live: q('live').textContent,
  gridEmpty: !q('grid-empty').hidden,
  cells,
  saved: q('saved').dataset.bytes, savedText: q('saved').textContent,
  offload: q('offload').dataset.percent, offloadText: q('offload').textContent,
  money: q('money').dataset.amount, moneyText: q('money').textContent,
  agents: q('agents').dataset.count,
  fromPeers: q('from-peers').dataset.bytes, fromOrigin: q('from-origin').dataset.bytes,
  held: q('progress').dataset.held, count: q('progress').dataset.count,
  release: q('release').textContent,
  where: q('where').textContent,
  peers: document.querySelectorAll('#peers tbody tr').length,
};"#;

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        Value::Number(n) => n.as_f64().unwrap(),
        _ => f64::NAN,
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_updates_live_and_shows_what_the_api_says() {
    require(
        browser::available(),
        "chromium and chromium-driver (Debian packages)",
    );
    let v = Vendor::start("dashboard").await;
    let fleet = Fleet::start(&v, &["alpha", "bravo", "charlie"]);
    let profile = TempDir::new("chromium-profile");
    // The browser calls block: the daemons keep the runtime's other worker meanwhile.
    let b = blocking(|| Browser::start(profile.path())).expect("headless chromium");
    let url = format!("http://{}/", fleet.apis[0]);

    // Nothing published yet: the page loads and says so.
    blocking(|| b.open(&url)).unwrap();
    let (page, ok) = blocking(|| {
        b.wait_for(READ_PAGE, Duration::from_secs(20), |p| {
            p["updates"].as_u64() >= Some(1)
        })
    })
    .unwrap();
    assert!(ok, "the page never heard from the agent: {page:#}");
    assert_eq!(page["gridEmpty"], true, "{page:#}");
    // Marks this page load: a reload would lose it.
    blocking(|| b.eval("window.__shoalTestMarker = true;", &[])).unwrap();

    // The vendor publishes; the agents fetch; the page follows without a reload.
    let src = v.source("src/update.bin", 5_000_000, 9);
    v.release("7.2", std::slice::from_ref(&src));
    fleet.delivered("7.2", Duration::from_secs(60)).await;
    let swarm = fleet
        .everyone_complete(0, "7.2", Duration::from_secs(30))
        .await;
    let status = fleet.settled(0).await;
    let expected_saved = swarm["origin_bytes_saved"].as_u64().unwrap();
    let (page, ok) = blocking(|| {
        b.wait_for(READ_PAGE, Duration::from_secs(20), |p| {
            let cells = p["cells"]
                .as_array()
                .map_or(0, |c| c.iter().filter(|c| c["percent"] == 100.0).count());
            cells == 3 && p["saved"].as_str() == Some(&expected_saved.to_string())
        })
    })
    .unwrap();
    assert!(
        ok,
        "the page never showed the finished swarm: {page:#}\nAPI: {swarm:#}"
    );
    assert_eq!(page["marker"], true, "the page was reloaded");
    assert!(
        page["where"].as_str().unwrap().contains("public swarm"),
        "{page:#}"
    );
    assert!(page["updates"].as_u64().unwrap() >= 2, "{page:#}");
    assert!(
        page["live"].as_str().unwrap().starts_with("live"),
        "{page:#}"
    );

    // Every number shown is the API's.
    for name in ["alpha", "bravo", "charlie"] {
        let cell = page["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["agent"] == name || c["agent"] == format!("{name} (this agent)"))
            .unwrap_or_else(|| panic!("no cell for {name}: {page:#}"));
        assert_eq!(cell["release"], "7.2");
        assert!(cell["text"].as_str().unwrap().contains("100%"), "{cell}");
    }
    assert_eq!(
        num(&page["saved"]),
        swarm["origin_bytes_saved"].as_f64().unwrap()
    );
    assert!((num(&page["offload"]) - swarm["offload_percent"].as_f64().unwrap()).abs() < 1e-9);
    assert_eq!(
        page["money"].as_str().unwrap(),
        format!("{:.2}", swarm["money_saved"].as_f64().unwrap())
    );
    assert!(
        page["moneyText"].as_str().unwrap().ends_with("EUR"),
        "{page:#}"
    );
    assert_eq!(num(&page["agents"]), 3.0);
    let c = &status["current"];
    assert_eq!(
        num(&page["fromPeers"]),
        c["bytes_from_peers"].as_f64().unwrap()
    );
    assert_eq!(
        num(&page["fromOrigin"]),
        c["bytes_from_origin"].as_f64().unwrap()
    );
    assert_eq!(num(&page["held"]), c["pieces_held"].as_f64().unwrap());
    assert_eq!(num(&page["count"]), c["piece_count"].as_f64().unwrap());
    assert!(
        page["release"].as_str().unwrap().starts_with("7.2 "),
        "{page:#}"
    );
    assert_eq!(page["peers"], 2);

    if let Ok(path) = std::env::var("SHOAL_SCREENSHOT") {
        std::fs::write(&path, blocking(|| b.screenshot()).unwrap()).unwrap();
        eprintln!("screenshot saved to {path}");
    }
    drop(b);
    fleet.stop().await;
}
