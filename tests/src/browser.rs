//! Real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for tests of pages the agent serves.
//!
//! `chromedriver` runs in a process group of its own; dropping the [`Browser`] ends the
//! session and then kills that group (chromedriver and the Chromium it started), so a
//! failing test leaves no browser behind. Chromium is started with its background
//! networking off (no update checks, sync, or metrics): it talks only to the pages a test
//! opens, on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian installs them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether both are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A WebDriver session in headless Chromium.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose profile lives in `profile`.
    pub fn start(profile: &Path) -> Result<Browser, String> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER}: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new",
            "--no-sandbox", // tests run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--metrics-recording-only",
        ];
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
                }
            }
        });
        let v = b.call("POST", "/session", Some(&caps))?;
        b.session = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {v}"))?
            .to_owned();
        Ok(b)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) -> Result<(), String> {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(&json!({ "url": url })),
        )
        .map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns
    /// its result.
    pub fn eval(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        let v = self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({ "script": script, "args": args })),
        )?;
        Ok(v["value"].clone())
    }

    /// Evaluates `script` until `done` accepts its result or `limit` passes; returns the
    /// last result either way, and whether `done` accepted it.
    pub fn wait_for(
        &self,
        script: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Value, bool), String> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(script, &[])?;
            if done(&v) {
                return Ok((v, true));
            }
            if Instant::now() > deadline {
                return Ok((v, false));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let v = self.call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        )?;
        let b64 = v["value"].as_str().ok_or("no screenshot")?;
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("screenshot: {e}"))
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver may keep the connection open: read the head, then the body by its
        // length (or its chunks).
        let mut raw = Vec::new();
        let mut buf = [0u8; 64 << 10];
        let (split, head) = loop {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("chromedriver closed the connection".into());
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break (i, String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase());
            }
        };
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let body = &raw[split + 4..];
            let done = match length {
                Some(len) => body.len() >= len,
                None if chunked => dechunk(body).is_some(),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let mut payload = raw[split + 4..].to_vec();
        if chunked {
            payload = dechunk(&payload).ok_or("bad chunked answer")?;
        } else if let Some(len) = length {
            payload.truncate(len);
        }
        let v: Value = serde_json::from_slice(&payload)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&payload)))?;
        if v["value"]["error"].is_string() {
            return Err(format!("{method} {path}: {}", v["value"]));
        }
        Ok(v)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        // The whole group: chromedriver and every Chromium process it started.
        let pgid = self.driver.id() as libc::pid_t;
        // SAFETY: signalling a process group we created; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
