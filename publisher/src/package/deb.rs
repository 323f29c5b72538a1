//! The Debian package: a staging tree written here, then `dpkg-deb --build`.
//!
//! Maintainer scripts follow what debhelper generates for a systemd service: `postinst`
//! enables the unit (and starts or restarts it where systemd runs), `prerm` stops it on
//! removal, `postrm` masks it on removal (as debhelper does: a reinstall brings it back
//! enabled) and, on purge, forgets it and deletes the
//! state (`/var/lib/<name>`, which `DynamicUser=` keeps under `/var/lib/private`). The
//! config is a conffile: `remove` keeps it, `purge` deletes it, an upgrade keeps an
//! admin's edits. The service runs as a dynamic user with no capabilities, a read-only
//! system and no access to home directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::PackageOptions;
use crate::error::{Error, Result};

/// Where the Debian package puts what the config names.
pub fn layout(n: &str) -> super::Layout {
    super::Layout {
        trust: format!("/usr/share/{n}/trust.json"),
        origin_ca: format!("/usr/share/{n}/origin-ca.pem"),
        state: format!("/var/lib/{n}"),
        releases: format!("/var/lib/{n}/releases"),
        restart: format!("systemctl restart {n}"),
        status: format!("{n} status"),
    }
}

/// Builds the package; returns its path.
pub fn build(o: &PackageOptions) -> Result<PathBuf> {
    o.validate()?;
    let arch = super::check_executable(&o.agent, false)?;
    super::with_staging(o, "deb", |stage| stage_and_build(o, &arch, stage))
}

fn stage_and_build(o: &PackageOptions, arch: &str, stage: &Path) -> Result<PathBuf> {
    let n = &o.name;
    let put = |rel: &str, bytes: &[u8], mode: u32| write_file(&stage.join(rel), bytes, mode);
    let agent = std::fs::read(&o.agent)
        .map_err(|e| Error::other(format!("reading {}: {e}", o.agent.display()), ""))?;
    put(&format!("usr/lib/{n}/shoal-agent"), &agent, 0o755)?;
    strip(&stage.join(format!("usr/lib/{n}/shoal-agent")));
    put(
        &format!("usr/bin/{n}"),
        format!(
            "#!/bin/sh\n# {n}: the Shoal agent with this package's config, e.g. `{n} status`.\n\
             # The service runs the agent itself; a second one (as root, on its state) would\n\
             # spoil that state's ownership.\n\
             case \"$1\" in run|fetch|service)\n\
             \techo \"{n}: the service {n} runs the agent: systemctl start {n}\" >&2; exit 2;;\n\
             esac\n\
             SHOAL_AGENT_CONFIG=/etc/{n}/agent.toml exec /usr/lib/{n}/shoal-agent \"$@\"\n"
        )
        .as_bytes(),
        0o755,
    )?;
    let layout = layout(n);
    put(
        &format!("etc/{n}/agent.toml"),
        o.config_text(&layout).as_bytes(),
        0o644,
    )?;
    let trust = std::fs::read(&o.trust)
        .map_err(|e| Error::other(format!("reading {}: {e}", o.trust.display()), ""))?;
    put(&format!("usr/share/{n}/trust.json"), &trust, 0o644)?;
    if let Some(ca) = &o.origin_ca {
        let pem = std::fs::read(ca)
            .map_err(|e| Error::other(format!("reading {}: {e}", ca.display()), ""))?;
        put(&format!("usr/share/{n}/origin-ca.pem"), &pem, 0o644)?;
    }
    put(
        &format!("lib/systemd/system/{n}.service"),
        unit(o).as_bytes(),
        0o644,
    )?;
    put(
        &format!("usr/share/doc/{n}/agent.toml.example"),
        super::SAMPLE_CONFIG.as_bytes(),
        0o644,
    )?;
    put(
        &format!("usr/share/doc/{n}/copyright"),
        copyright(o).as_bytes(),
        0o644,
    )?;
    // A version without a Debian revision is a native package's.
    let changelog_name = if o.version.contains('-') {
        "changelog.Debian.gz"
    } else {
        "changelog.gz"
    };
    put(
        &format!("usr/share/doc/{n}/{changelog_name}"),
        &gzip(&changelog(o))?,
        0o644,
    )?;
    put(
        &format!("usr/share/man/man1/{n}.1.gz"),
        &gzip(manual(o).as_bytes())?,
        0o644,
    )?;
    put(
        "DEBIAN/conffiles",
        format!("/etc/{n}/agent.toml\n").as_bytes(),
        0o644,
    )?;
    put("DEBIAN/postinst", postinst(n).as_bytes(), 0o755)?;
    put("DEBIAN/prerm", prerm(n).as_bytes(), 0o755)?;
    put("DEBIAN/postrm", postrm(n).as_bytes(), 0o755)?;
    let installed_kib = tree_size(stage).div_ceil(1024);
    let glibc = glibc_needed(&stage.join(format!("usr/lib/{n}/shoal-agent")));
    put(
        "DEBIAN/control",
        control(o, arch, installed_kib, &glibc).as_bytes(),
        0o644,
    )?;
    put("DEBIAN/preinst", preinst(n).as_bytes(), 0o755)?;
    let deb = o.out.join(format!("{n}_{}_{arch}.deb", o.version));
    super::run_tool(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(stage)
            .arg(&deb),
        "build Debian packages on a Debian or Ubuntu machine (package dpkg)",
    )?;
    Ok(deb)
}

/// The glibc the binary needs at least: the highest `GLIBC_x.y` symbol version it
/// references (objdump), or 2.34 (what a build on Debian 12 needs) if that cannot be read.
fn glibc_needed(binary: &Path) -> String {
    let out = Command::new("objdump").arg("-T").arg(binary).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut best: Option<(u32, u32)> = None;
    for word in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        if let Some(v) = word.strip_prefix("GLIBC_") {
            let mut parts = v.split('.').map(|p| p.parse::<u32>());
            if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
                best = best.max(Some((major, minor)));
            }
        }
    }
    best.map_or_else(|| "2.34".into(), |(a, b)| format!("{a}.{b}"))
}

/// Strips the shipped binary where `strip` exists (debug line tables are for developers).
fn strip(path: &Path) {
    let _ = Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment"])
        .arg(path)
        .output();
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let io = |e: std::io::Error| Error::other(format!("writing {}: {e}", path.display()), "");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    let _ = mode;
    Ok(())
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "DEBIAN") {
            continue;
        }
        match e.metadata() {
            Ok(m) if m.is_dir() => total += tree_size(&p),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::other(format!("running gzip: {e}"), ""))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(data)
            .map_err(|e| Error::other(format!("gzip: {e}"), ""))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::other(format!("gzip: {e}"), ""))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(Error::other(format!("gzip failed: {}", out.status), ""));
    }
    Ok(out.stdout)
}

fn control(o: &PackageOptions, arch: &str, installed_kib: u64, glibc: &str) -> String {
    let long = format!(
        "Keeps this machine's {s} up to date with the Shoal agent: it finds the other \
         machines of the LAN that run it, swaps verified pieces of each new release with \
         them, fetches from {origin} only what none of them has, checks everything \
         against the vendor's signatures and delivers it under /var/lib/{n}/releases.",
        s = o.summary.to_lowercase(),
        origin = o.origin,
        n = o.name,
    );
    let mut text = format!(
        "Package: {n}\nVersion: {v}\nArchitecture: {arch}\nMaintainer: {m}\n\
         Installed-Size: {installed_kib}\nDepends: libc6 (>= {glibc}), libgcc-s1\nSection: admin\n\
         Priority: optional\nDescription: {s}\n",
        n = o.name,
        v = o.version,
        m = o.maintainer,
        s = o.summary,
    );
    for line in wrap(&long, 72) {
        text.push(' ');
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// `text` in lines of at most `width` characters (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A short manual page for the package's command.
fn manual(o: &PackageOptions) -> String {
    let n = &o.name;
    format!(
        ".TH {upper} 1\n.SH NAME\n{n} \\- {s} (the Shoal agent)\n\
         .SH SYNOPSIS\n.B {n}\n.RB [ status | swarm ]\n.RB [ \\-\\-json ]\n\
         .SH DESCRIPTION\n\
         .B {n}\nruns the Shoal agent with /etc/{n}/agent.toml.\n\
         The service {n}.service runs the agent itself.\n\
         .B {n} status\nshows this machine's release, progress, peers and last check;\n\
         .B {n} swarm\nshows every machine of the LAN it hears of, and what they saved.\n\
         The dashboard is at http://127.0.0.1:{api}/.\n\
         .SH FILES\n/etc/{n}/agent.toml, /var/lib/{n}, /usr/share/doc/{n}/agent.toml.example\n",
        upper = n.to_uppercase(),
        s = o.summary,
        api = o.api_port(),
    )
}

fn unit(o: &PackageOptions) -> String {
    let n = &o.name;
    format!(
        "[Unit]\n\
         Description={summary} (Shoal agent)\n\
         Documentation=file:///usr/share/doc/{n}/agent.toml.example\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart=/usr/lib/{n}/shoal-agent run --config /etc/{n}/agent.toml\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         # A config it refuses (exit 2) waits for an admin, not for another restart.\n\
         RestartPreventExitStatus=2\n\
         DynamicUser=yes\n\
         StateDirectory={n}\n\
         StateDirectoryMode=0750\n\
         UMask=0027\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         SystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged @resources\n\
         SystemCallErrorNumber=EPERM\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        summary = o.summary,
    )
}

fn postinst(n: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = configure ] || [ \"$1\" = abort-upgrade ] || [ \"$1\" = abort-deconfigure ] || [ \"$1\" = abort-remove ]; then\n\
         \tdeb-systemd-helper unmask '{n}.service' >/dev/null || true\n\
         \tif deb-systemd-helper --quiet was-enabled '{n}.service'; then\n\
         \t\tdeb-systemd-helper enable '{n}.service' >/dev/null || true\n\
         \telse\n\
         \t\tdeb-systemd-helper update-state '{n}.service' >/dev/null || true\n\
         \tfi\n\
         \tif [ -d /run/systemd/system ]; then\n\
         \t\tsystemctl --system daemon-reload >/dev/null || true\n\
         \t\tif [ -n \"$2\" ]; then action=restart; else action=start; fi\n\
         \t\tdeb-systemd-invoke $action '{n}.service' >/dev/null || true\n\
         \tfi\n\
         fi\n"
    )
}

/// Refuses to take over a `/var/lib/<name>` this package did not make (another
/// program's data, which purge would delete).
fn preinst(n: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = install ] && [ -z \"$2\" ] && [ -e '/var/lib/{n}' ] && ! [ -e '/var/lib/{n}/pieces' ]; then\n\
         \techo \"{n}: /var/lib/{n} exists and is not this package's state; move it away first\" >&2\n\
         \texit 1\n\
         fi\n"
    )
}

fn prerm(n: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n\
         \tdeb-systemd-invoke stop '{n}.service' >/dev/null || true\n\
         fi\n"
    )
}

fn postrm(n: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ]; then\n\
         \tsystemctl --system daemon-reload >/dev/null || true\n\
         fi\n\
         if [ \"$1\" = remove ] && command -v deb-systemd-helper >/dev/null; then\n\
         \tdeb-systemd-helper mask '{n}.service' >/dev/null || true\n\
         fi\n\
         if [ \"$1\" = purge ]; then\n\
         \tif command -v deb-systemd-helper >/dev/null; then\n\
         \t\tdeb-systemd-helper purge '{n}.service' >/dev/null || true\n\
         \t\tdeb-systemd-helper unmask '{n}.service' >/dev/null || true\n\
         \tfi\n\
         \trm -rf '/var/lib/{n}' '/var/lib/private/{n}'\n\
         fi\n"
    )
}

fn copyright(o: &PackageOptions) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: shoal\n\
         \n\
         Files: *\n\
         Copyright: 2026 The Shoal authors\n\
         \x20          2026 {m} (this package)\n\
         License: Apache-2.0\n \
         On Debian systems the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        m = o.maintainer
    )
}

fn changelog(o: &PackageOptions) -> Vec<u8> {
    // (RFC 2822 date, as dpkg-parsechangelog wants it)
    let date = httpdate::fmt_http_date(std::time::SystemTime::now()).replace("GMT", "+0000");
    format!(
        "{n} ({v}) stable; urgency=medium\n\n  * Built by shoal-publisher agent-package.\n\n -- {m}  {date}\n",
        n = o.name,
        v = o.version,
        m = o.maintainer,
    )
    .into_bytes()
}
