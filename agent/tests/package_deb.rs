//! A vendor's Debian package through its whole life on this machine, with real `dpkg`:
//! build (`shoal-publisher agent-package`'s library), inspect, install, run the installed
//! agent as its unit would (an unprivileged user, its own state directory, inside a
//! network namespace so its mDNS stays there) until it delivers a release, upgrade
//! (state and config kept), install and remove a second vendor's package beside it
//! (the first keeps working), remove (config and state kept), purge (gone), and compare
//! the machine's files before and after. Lintian checks the package on the way. Needs
//! root, dpkg, lintian and iproute2; elsewhere it fails and says so.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Vendor, read};
use shoal_publisher::package::{PackageOptions, deb};
use shoal_tests::netns::{self, Lan};
use shoal_tests::{TempDir, require};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");
const ACME: &str = "shoaltest-acme";
const GLOBEX: &str = "shoaltest-globex";

/// Where a package puts files, and where dpkg and systemd keep their records of it.
const WATCHED: &[&str] = &[
    "/etc",
    "/usr/bin",
    "/usr/lib",
    "/usr/share/doc",
    "/usr/share/man/man1",
    "/lib/systemd/system",
    "/var/lib",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dpkg(args: &[&str]) -> Output {
    run(Command::new("dpkg").args(args))
}

/// Every path under the watched directories, except dpkg's own bookkeeping (its status
/// and logs change with any install) and this test's scratch space.
fn files() -> BTreeSet<String> {
    let out = Command::new("find")
        .args(WATCHED)
        .args([
            "-xdev",
            "-not",
            "-path",
            "/var/lib/dpkg/*",
            "-not",
            "-path",
            "/var/lib/apt/*",
        ])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Purges both test packages when the test ends, however it ends.
struct Purge(bool);

impl Purge {
    /// Takes away what an earlier, killed run may have left: the packages and their
    /// state (a run killed at its timeout cannot clean up after itself).
    fn leftovers() {
        if std::fs::read_to_string(POLICY_RC_D).is_ok_and(|t| t.contains(POLICY_MARK)) {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
        let _ = Command::new("dpkg").args(["-P", ACME, GLOBEX]).output();
        for n in [ACME, GLOBEX] {
            let _ = std::fs::remove_dir_all(format!("/var/lib/{n}"));
            let _ = std::fs::remove_dir_all(format!("/var/lib/private/{n}"));
        }
    }
}

impl Drop for Purge {
    fn drop(&mut self) {
        Self::leftovers();
        if self.0 {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Where Debian's service scripts ask whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Marks the one this test writes (a killed run's is taken away by the next).
const POLICY_MARK: &str = "written by shoal's package_deb test";

fn options(v: &Vendor, name: &str, version: &str, out: &Path) -> PackageOptions {
    PackageOptions {
        name: name.into(),
        version: version.into(),
        maintainer: "Shoal Tests <tests@example.invalid>".into(),
        summary: format!("{name} test updates"),
        trust: v.keys.join("trust/1.json"),
        origin: v.url.clone(),
        channel: "stable".into(),
        origin_ca: Some(v.cert.clone()),
        agent: PathBuf::from(BIN),
        peer_port: 0,
        api_port: 0,
        out: out.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_package_installs_runs_upgrades_and_leaves_nothing_behind() {
    require(netns::available(), "root and iproute2 (network namespaces)");
    let has_dpkg = Command::new("dpkg-deb").arg("--version").output().is_ok();
    require(has_dpkg, "dpkg and dpkg-deb (a Debian or Ubuntu machine)");
    Purge::leftovers();
    // Install scripts may not start services during the test, on a machine where
    // systemd runs too (the agent under test runs in a namespace, as the test says).
    let own_policy = !Path::new(POLICY_RC_D).exists();
    if own_policy {
        std::fs::write(
            POLICY_RC_D,
            format!("#!/bin/sh\n# {POLICY_MARK}\nexit 101\n"),
        )
        .unwrap();
        run(Command::new("chmod").args(["755", POLICY_RC_D]));
    }
    let _purge = Purge(own_policy);
    let before = files();

    // The origin lives in host 0's namespace; the installed agent will run in host 1's.
    let lan = Lan::new(2).expect("build the test LAN");
    let v = Vendor::start_with("deb", &lan.host_ip(0), lan.listen_on(0, 8443)).await;
    let src = v.source("src/driver.bin", 3_000_000, 17);
    v.release("1.0", std::slice::from_ref(&src));
    let work = TempDir::new("debs");
    let build = |name: &str, version: &str| {
        tokio::task::block_in_place(|| deb::build(&options(&v, name, version, work.path())))
            .unwrap_or_else(|e| panic!("building {name} {version}: {e}"))
    };
    let (v1, v2, other) = (
        build(ACME, "1.0.0"),
        build(ACME, "1.0.1"),
        build(GLOBEX, "1.0.0"),
    );

    // What is inside.
    let info = String::from_utf8_lossy(&dpkg(&["-I", v1.to_str().unwrap()]).stdout).into_owned();
    for needle in [
        &format!("Package: {ACME}"),
        "Version: 1.0.0",
        "conffiles",
        "postinst",
    ] {
        assert!(info.contains(needle), "{needle}: {info}");
    }
    let contents =
        String::from_utf8_lossy(&dpkg(&["-c", v1.to_str().unwrap()]).stdout).into_owned();
    for path in [
        format!("./usr/lib/{ACME}/shoal-agent"),
        format!("./usr/bin/{ACME}"),
        format!("./etc/{ACME}/agent.toml"),
        format!("./usr/share/{ACME}/trust.json"),
        format!("./usr/share/{ACME}/origin-ca.pem"),
        format!("./lib/systemd/system/{ACME}.service"),
        format!("./usr/share/doc/{ACME}/copyright"),
    ] {
        assert!(contents.contains(&path), "{path} missing:\n{contents}");
    }

    // Lintian (Debian's package checker) finds nothing to warn about.
    let lintian = Command::new("lintian")
        .args(["--fail-on", "warning", "--tag-display-limit", "0"])
        .arg(&v1)
        .output();
    require(lintian.is_ok(), "lintian (Debian package lintian)");
    let lintian = lintian.unwrap();
    assert!(
        lintian.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&lintian.stdout),
        String::from_utf8_lossy(&lintian.stderr)
    );

    // Install: the unit is enabled (systemd is not running here, so not started) and
    // systemd accepts it.
    dpkg(&["-i", v1.to_str().unwrap()]);
    let unit = format!("/lib/systemd/system/{ACME}.service");
    let wants = format!("/etc/systemd/system/multi-user.target.wants/{ACME}.service");
    assert!(Path::new(&wants).exists(), "the service is not enabled");
    let verify = Command::new("systemd-analyze")
        .args(["verify", &unit])
        .output()
        .expect("systemd-analyze");
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Run the installed agent as its unit would: an unprivileged user owning only its
    // state directory (what DynamicUser= and StateDirectory= give it).
    let state = format!("/var/lib/{ACME}");
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new("chown").args(["nobody:nogroup", &state]));
    let log = std::fs::File::create(work.join("agent.log")).unwrap();
    let mut agent = shoal_tests::ChildGuard(
        lan.command_in(1, "setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--no-new-privs",
            ])
            // What the unit's ExecStart runs.
            .args([
                &format!("/usr/lib/{ACME}/shoal-agent"),
                "run",
                "--config",
                &format!("/etc/{ACME}/agent.toml"),
            ])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the installed agent"),
    );
    let delivered = PathBuf::from(format!("{state}/releases/1.0/driver.bin"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !delivered.exists() {
        assert!(
            Instant::now() < deadline,
            "the installed agent did not deliver: {}",
            std::fs::read_to_string(work.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read(&delivered), read(&src));
    // The package's command reads the running service's API with the package's config.
    let status = tokio::task::block_in_place(|| {
        lan.command_in(1, format!("/usr/bin/{ACME}"))
            .args(["status", "--json"])
            .output()
            .unwrap()
    });
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["current"]["release"], "1.0", "{st}");
    assert!(
        agent.terminate(Duration::from_secs(20)).is_some(),
        "the agent did not stop"
    );

    // The package's command is for admins: it will not start a second agent.
    let second = Command::new(format!("/usr/bin/{ACME}"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{second:?}");

    // Upgrade: new version, the admin's edit of the config kept, the piece store and
    // releases kept.
    let config = format!("/etc/{ACME}/agent.toml");
    let mut edited = std::fs::read_to_string(&config).unwrap();
    edited.push_str("# edited by the admin\n");
    std::fs::write(&config, &edited).unwrap();
    dpkg(&["-i", v2.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        edited,
        "the upgrade lost an edit"
    );
    let version = dpkg(&["-s", ACME]);
    assert!(String::from_utf8_lossy(&version.stdout).contains("Version: 1.0.1"));
    assert!(delivered.exists(), "an upgrade lost the delivered release");
    let pieces = std::fs::read_dir(format!("{state}/pieces")).map_or(0, Iterator::count);
    assert!(pieces > 0, "an upgrade lost the piece store");

    // A second vendor beside it, then removed and purged: the first is untouched.
    dpkg(&["-i", other.to_str().unwrap()]);
    assert!(Path::new(&format!("/usr/lib/{GLOBEX}/shoal-agent")).exists());
    dpkg(&["-r", GLOBEX]);
    dpkg(&["-P", GLOBEX]);
    for path in [
        format!("/usr/lib/{ACME}/shoal-agent"),
        format!("/etc/{ACME}/agent.toml"),
        unit.clone(),
        wants.clone(),
    ] {
        assert!(Path::new(&path).exists(), "removing {GLOBEX} took {path}");
    }
    assert!(!Path::new(&format!("/etc/{GLOBEX}")).exists());

    // Remove: the program goes and the unit is masked (it cannot start); the config and
    // the state stay.
    dpkg(&["-r", ACME]);
    assert!(!Path::new(&format!("/usr/lib/{ACME}/shoal-agent")).exists());
    let mask = format!("/etc/systemd/system/{ACME}.service");
    assert_eq!(
        std::fs::read_link(&mask).ok(),
        Some(PathBuf::from("/dev/null")),
        "remove did not mask the service"
    );
    assert!(Path::new(&config).exists(), "remove took the config");
    assert!(delivered.exists(), "remove took the state");
    // Installing it again brings the service back, enabled, with its state.
    dpkg(&["-i", v2.to_str().unwrap()]);
    assert!(
        Path::new(&wants).exists(),
        "a reinstall left the service disabled"
    );
    assert!(
        !Path::new(&mask).exists(),
        "a reinstall left the service masked"
    );
    assert!(delivered.exists());

    // Purge: everything goes; the machine is as it was.
    dpkg(&["-P", ACME]);
    assert!(!Path::new(&state).exists(), "purge left the state");
    let after = files();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the machine changed: added {added:?}, removed {removed:?}"
    );
}
