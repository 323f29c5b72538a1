//! Whether this machine's network link is slow next to its LAN neighbours', which makes
//! its peer id *light* (PROTOCOL.md §6.4): a light agent is elected an origin fetcher
//! only when too few others are known, because the quarter of a release it would fetch
//! must then leave through its slow uplink before the LAN can spread it.
//!
//! The admin can say so (`link = "slow"` or `"fast"`); `auto` looks at the interfaces
//! the agent uses (the mDNS allow-list, or every physical interface that is up): a
//! machine whose only links are Wi-Fi or slower than 100 Mbit/s is slow. Auto errs
//! towards fast, the safe side (a fast machine wrongly light only fetches less from the
//! origin): an interface of unknown speed (a bridge, a virtual NIC, a mobile modem)
//! counts as fast, and so does a link shaped elsewhere (a thin WAN hop, traffic
//! control): set `slow` for those.

use std::path::Path;

use serde::Deserialize;

/// The `link` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// Decide from the interfaces (see the module docs).
    #[default]
    Auto,
    /// A wired link as fast as the neighbours'.
    Fast,
    /// A link slower than the neighbours' (Wi-Fi, a thin branch link).
    Slow,
}

/// The decision, with the reason to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The agent's id is light.
    pub light: bool,
    /// Why, in a few words.
    pub reason: String,
}

/// Wired links below this speed count as slow, Mbit/s.
const SLOW_BELOW_MBITS: u32 = 100;

impl Link {
    /// Decides for the agent that uses `interfaces` (empty: all).
    pub fn resolve(self, interfaces: &[String]) -> Verdict {
        match self {
            Link::Fast => Verdict {
                light: false,
                reason: "link = \"fast\"".into(),
            },
            Link::Slow => Verdict {
                light: true,
                reason: "link = \"slow\"".into(),
            },
            Link::Auto => detect(Path::new("/sys/class/net"), interfaces),
        }
    }
}

/// One interface as the kernel describes it.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Wireless,
    Wired { mbits: Option<u32> },
}

/// Reads `sys` (`/sys/class/net`, or a test's copy). Interfaces that are down, the
/// loopback and (when no allow-list is given) virtual ones are skipped; the machine is
/// slow only if every interface left is Wi-Fi or a wired link known to be slow.
fn detect(sys: &Path, interfaces: &[String]) -> Verdict {
    let names: Vec<String> = if interfaces.is_empty() {
        let Ok(dir) = std::fs::read_dir(sys) else {
            return unknown("no interface list on this system");
        };
        let mut names: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // Physical interfaces have a `device`; veths, bridges and tunnels do not.
            .filter(|n| sys.join(n).join("device").exists())
            .collect();
        names.sort();
        names
    } else {
        interfaces.to_vec()
    };
    let mut seen = Vec::new();
    for name in &names {
        let dir = sys.join(name);
        let up = std::fs::read_to_string(dir.join("operstate"))
            .map(|s| s.trim() != "down")
            .unwrap_or(false);
        if name == "lo" || !up {
            continue;
        }
        let kind = if dir.join("wireless").exists() || dir.join("phy80211").exists() {
            Kind::Wireless
        } else {
            let mbits = std::fs::read_to_string(dir.join("speed"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0);
            Kind::Wired { mbits }
        };
        seen.push((name.clone(), kind));
    }
    let fast = seen.iter().find(|(_, k)| match k {
        Kind::Wireless => false,
        Kind::Wired { mbits } => mbits.is_none_or(|m| m >= SLOW_BELOW_MBITS),
    });
    match (fast, seen.first()) {
        (Some((name, _)), _) => Verdict {
            light: false,
            reason: format!("{name} is wired"),
        },
        (None, Some((name, Kind::Wireless))) => Verdict {
            light: true,
            reason: format!("{name} is Wi-Fi"),
        },
        (None, Some((name, Kind::Wired { mbits }))) => Verdict {
            light: true,
            reason: format!("{name} runs at {} Mbit/s", mbits.unwrap_or(0)),
        },
        (None, None) => unknown("no interface in use is up"),
    }
}

fn unknown(why: &str) -> Verdict {
    Verdict {
        light: false,
        reason: format!("{why}; counted as fast"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake `/sys/class/net`: (name, physical, up, wireless, speed).
    fn sys(ifaces: &[(&str, bool, bool, bool, &str)]) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = Scratch(
            std::env::temp_dir().join(format!("shoal-link-test-{}-{n}", std::process::id())),
        );
        for (name, physical, up, wireless, speed) in ifaces {
            let i = d.path().join(name);
            std::fs::create_dir_all(&i).unwrap();
            if *physical {
                std::fs::create_dir(i.join("device")).unwrap();
            }
            if *wireless {
                std::fs::create_dir(i.join("wireless")).unwrap();
            }
            std::fs::write(i.join("operstate"), if *up { "up\n" } else { "down\n" }).unwrap();
            std::fs::write(i.join("speed"), format!("{speed}\n")).unwrap();
        }
        d
    }

    #[test]
    fn a_laptop_on_wifi_is_light_a_desktop_on_a_wire_is_not() {
        let laptop = sys(&[
            ("lo", false, true, false, "-1"),
            ("eth0", true, false, false, "-1"),
            ("wlan0", true, true, true, "-1"),
        ]);
        let v = detect(laptop.path(), &[]);
        assert!(v.light, "{v:?}");
        assert!(v.reason.contains("wlan0"), "{v:?}");
        let desktop = sys(&[
            ("eth0", true, true, false, "1000"),
            ("wlan0", true, true, true, "-1"),
            ("docker0", false, true, false, "10"),
        ]);
        assert!(!detect(desktop.path(), &[]).light);
    }

    #[test]
    fn a_slow_wire_is_light_an_unknown_speed_is_not() {
        let slow = sys(&[("eth0", true, true, false, "10")]);
        assert!(detect(slow.path(), &[]).light);
        let unknown = sys(&[("eth0", true, true, false, "-1")]);
        assert!(!detect(unknown.path(), &[]).light);
        let nothing = sys(&[("lo", false, true, false, "-1")]);
        assert!(!detect(nothing.path(), &[]).light);
    }

    #[test]
    fn the_allow_list_decides_which_interfaces_count() {
        // A namespace's veth has no `device`; named in the allow-list it counts.
        let lab = sys(&[
            ("veth-a", false, true, false, "10000"),
            ("wlan0", true, true, true, "-1"),
        ]);
        assert!(!detect(lab.path(), &["veth-a".into()]).light);
        assert!(detect(lab.path(), &["wlan0".into()]).light);
    }

    #[test]
    fn the_setting_overrides_detection() {
        assert!(Link::Slow.resolve(&[]).light);
        assert!(!Link::Fast.resolve(&[]).light);
    }
}
