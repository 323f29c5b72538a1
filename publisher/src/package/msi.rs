//! The Windows Installer package: a WiX source written here, then `wixl` (Debian's
//! `wixl` package builds MSIs on Linux).
//!
//! It installs everything under `%ProgramFiles%\<name>`: `shoal-agent.exe`, the config
//! (`agent.toml`, which names the trust document, the origin's CA and the state by paths
//! relative to itself), and the agent's state and releases, written there by the service.
//! That folder is writable by administrators and SYSTEM only (the default of Program
//! Files), so no user can plant a config, a piece, a delivery record or a release for
//! the service, which runs as LocalSystem. (`%ProgramData%`, the usual place for state,
//! lets every user create files in its subfolders; locking a folder there needs ACLs set
//! by the installer, which wixl cannot write.) The config is a permanent component
//! (`msibuild` after `wixl`, which lacks the attribute): upgrades and uninstalls keep it
//! and an admin's edits; the state stays after an uninstall too. It registers the
//! service `<name>`, started automatically, running `shoal-agent.exe service --name
//! <name> --config …` ([`ServiceInstall`], [`ServiceControl`]: started on install,
//! stopped on upgrade and removal, removed on uninstall). `MajorUpgrade` replaces an
//! older version of the same package (one upgrade code per package name; one product
//! code per version, so the same version cannot be installed twice).
//!
//! [`ServiceInstall`]: https://wixtoolset.org/docs/v3/xsd/wix/serviceinstall/
//! [`ServiceControl`]: https://wixtoolset.org/docs/v3/xsd/wix/servicecontrol/

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Layout, PackageOptions};
use crate::error::{Error, Result};

/// Where the Windows package puts what the config names.
pub fn layout(n: &str) -> Layout {
    // Relative paths: the agent resolves them against the config's folder, the
    // program's own (wherever the admin installed it).
    Layout {
        trust: "trust.json".into(),
        origin_ca: "origin-ca.pem".into(),
        state: "state".into(),
        releases: "releases".into(),
        restart: format!("Restart-Service {n}"),
        status: format!(
            r#""C:\Program Files\{n}\shoal-agent.exe" status --config "C:\Program Files\{n}\agent.toml""#
        ),
    }
}

/// Builds the package; returns its path.
pub fn build(o: &PackageOptions) -> Result<PathBuf> {
    o.validate()?;
    let arch = super::check_executable(&o.agent, true)?;
    if arch != "amd64" {
        return Err(Error::usage(
            format!(
                "{} is built for {arch}; the MSI is for x64",
                o.agent.display()
            ),
            "build the agent for x86_64-pc-windows-gnu",
        ));
    }
    let version = msi_version(&o.version)?;
    super::with_staging(o, "msi", |stage| stage_and_build(o, &version, stage))
}

/// An MSI's ProductVersion from `v`: up to three numbers (major and minor up to 255,
/// build up to 65535), written in full (`1.2` is `1.2.0`, `01.2` is `1.2.0`), since
/// Windows compares them as numbers.
fn msi_version(v: &str) -> Result<String> {
    let parts: Vec<&str> = v.split('.').collect();
    let limits = [255u32, 255, 65535];
    let numbers: Option<Vec<u32>> = ((1..=3).contains(&parts.len()))
        .then(|| {
            parts
                .iter()
                .zip(limits)
                .map(|(p, max)| {
                    let digits =
                        !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
                    digits
                        .then(|| p.parse::<u32>().ok())
                        .flatten()
                        .filter(|n| *n <= max)
                })
                .collect()
        })
        .flatten();
    let Some(mut numbers) = numbers else {
        return Err(Error::usage(
            format!("--version {v:?} cannot be a Windows Installer version"),
            "use up to three numbers, e.g. 1.4.2 (major and minor up to 255, the third up to 65535)",
        ));
    };
    numbers.resize(3, 0);
    Ok(format!("{}.{}.{}", numbers[0], numbers[1], numbers[2]))
}

fn stage_and_build(o: &PackageOptions, version: &str, stage: &Path) -> Result<PathBuf> {
    let n = &o.name;
    std::fs::create_dir_all(stage)
        .map_err(|e| Error::other(format!("creating {}: {e}", stage.display()), ""))?;
    let copy = |from: &Path, to: &str| -> Result<PathBuf> {
        let dest = stage.join(to);
        std::fs::copy(from, &dest)
            .map_err(|e| Error::other(format!("copying {}: {e}", from.display()), ""))?;
        Ok(dest)
    };
    let exe = copy(&o.agent, "shoal-agent.exe")?;
    let trust = copy(&o.trust, "trust.json")?;
    let ca = o
        .origin_ca
        .as_ref()
        .map(|c| copy(c, "origin-ca.pem"))
        .transpose()?;
    let layout = layout(n);
    let config = stage.join("agent.toml");
    std::fs::write(&config, o.config_text(&layout).replace('\n', "\r\n"))
        .map_err(|e| Error::other(format!("writing {}: {e}", config.display()), ""))?;
    let wxs = stage.join("product.wxs");
    std::fs::write(
        &wxs,
        source(o, version, &exe, &trust, ca.as_deref(), &config),
    )
    .map_err(|e| Error::other(format!("writing {}: {e}", wxs.display()), ""))?;
    let msi = o.out.join(format!("{n}-{}-x64.msi", o.version));
    let msi = std::path::absolute(&msi).unwrap_or(msi);
    super::run_tool(
        Command::new("wixl")
            .current_dir(stage)
            .args(["-a", "x64", "-o"])
            .arg(&msi)
            .arg("product.wxs"),
        "install Debian's wixl package (apt install wixl msitools)",
    )?;
    // wixl has no `Permanent`: mark the config's component permanent (16) in the table
    // itself, with 64-bit (256), so an upgrade or uninstall leaves the config alone.
    let marked = super::run_tool(
        Command::new("msibuild")
            .arg(&msi)
            .arg("-q")
            .arg("UPDATE `Component` SET `Attributes` = 272 WHERE `Component` = 'Config'"),
        "install Debian's msitools package (apt install msitools)",
    );
    if marked.is_err() {
        let _ = std::fs::remove_file(&msi);
    }
    marked?;
    Ok(msi)
}

/// A GUID derived from the package name and `what`: the same package always gets the
/// same upgrade code and component ids, so a newer version replaces an older one.
pub fn guid(name: &str, what: &str) -> String {
    let d = shoal_protocol::Digest::of(format!("SHOAL-MSI-V1\0{name}\0{what}").as_bytes()).0;
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = shoal_protocol::digest::hex_encode(&b).to_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `s` as XML attribute text.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn source(
    o: &PackageOptions,
    version: &str,
    exe: &Path,
    trust: &Path,
    ca: Option<&Path>,
    config: &Path,
) -> String {
    let n = &o.name;
    // wixl takes sources relative to the directory it runs in (the staging directory).
    let src = |p: &Path| xml(&p.file_name().unwrap_or_default().to_string_lossy());
    let ca_component = ca.map_or(String::new(), |ca| {
        format!(
            r#"          <Component Id="OriginCa" Guid="{g}" Win64="yes">
            <File Id="OriginCaPem" Name="origin-ca.pem" Source="{s}" KeyPath="yes"/>
          </Component>
"#,
            g = guid(n, "origin-ca"),
            s = src(ca)
        )
    });
    let ca_ref = if ca.is_some() {
        "      <ComponentRef Id=\"OriginCa\"/>\n"
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="{product}" Name="{summary}" Language="1033" Version="{version}" Manufacturer="{maintainer}" UpgradeCode="{upgrade}">
    <Package InstallerVersion="500" Compressed="yes" InstallScope="perMachine" Description="{summary} (Shoal agent)"/>
    <MajorUpgrade DowngradeErrorMessage="A newer version of {name} is already installed."/>
    <Media Id="1" Cabinet="agent.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="{name}">
          <Component Id="Agent" Guid="{g_agent}" Win64="yes">
            <File Id="AgentExe" Name="shoal-agent.exe" Source="{exe}" KeyPath="yes"/>
            <ServiceInstall Id="AgentService" Name="{name}" DisplayName="{summary} (Shoal agent)" Description="Keeps {summary_lower} up to date with LAN peers; verifies everything against the vendor's signatures." Type="ownProcess" Start="auto" ErrorControl="normal" Arguments="service --name {name} --config &quot;[INSTALLDIR]agent.toml&quot;"/>
            <ServiceControl Id="AgentServiceControl" Name="{name}" Start="install" Stop="both" Remove="uninstall" Wait="yes"/>
          </Component>
          <Component Id="Trust" Guid="{g_trust}" Win64="yes">
            <File Id="TrustJson" Name="trust.json" Source="{trust}" KeyPath="yes"/>
          </Component>
{ca_component}          <Component Id="Config" Guid="{g_config}" Win64="yes">
            <File Id="AgentToml" Name="agent.toml" Source="{config}" KeyPath="yes"/>
          </Component>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Agent" Title="{summary}" Level="1">
      <ComponentRef Id="Agent"/>
      <ComponentRef Id="Trust"/>
      <ComponentRef Id="Config"/>
{ca_ref}    </Feature>
  </Product>
</Wix>
"#,
        name = xml(n),
        summary = xml(&o.summary),
        summary_lower = xml(&o.summary.to_lowercase()),
        maintainer = xml(&o.maintainer),
        upgrade = guid(n, "upgrade"),
        // One product code per version: rebuilding a version cannot install twice.
        product = guid(n, &format!("product {version}")),
        g_agent = guid(n, "agent"),
        g_trust = guid(n, "trust"),
        g_config = guid(n, "config"),
        exe = src(exe),
        trust = src(trust),
        config = src(config),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stable_per_name_and_well_formed() {
        let a = guid("acme-updates", "upgrade");
        assert_eq!(a, guid("acme-updates", "upgrade"));
        assert_ne!(a, guid("globex-tools", "upgrade"));
        assert_ne!(a, guid("acme-updates", "agent"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn windows_installer_versions_are_three_small_numbers() {
        assert_eq!(msi_version("1.4.2").unwrap(), "1.4.2");
        assert_eq!(msi_version("255.255.65535").unwrap(), "255.255.65535");
        // One version, one spelling (and so one product code).
        assert_eq!(msi_version("1.2").unwrap(), "1.2.0");
        assert_eq!(msi_version("01.2.3").unwrap(), "1.2.3");
        for bad in [
            "1.4.2.7",
            "256.0.0",
            "1.0.0-rc1",
            "1.x",
            "",
            "1.+2.3",
            "1..2",
        ] {
            assert!(msi_version(bad).is_err(), "{bad}");
        }
    }
}
