// SPDX-License-Identifier: GPL-2.0-only
//! A private apt state directory (own sources.list, package lists and cache under the seng cache)
//! so kernels of any Debian release can be looked up and downloaded without touching the system's
//! apt configuration or installing anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::paths::{mkdir, write_if_changed};

/// Package lists older than this are refreshed before a lookup.
const MAX_LIST_AGE: Duration = Duration::from_secs(24 * 3600);

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian archive, overridable with `SENG_DEBIAN_MIRROR`.
fn mirror() -> String {
    std::env::var("SENG_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// The Debian security archive, overridable with `SENG_DEBIAN_SECURITY_MIRROR`.
fn security_mirror() -> String {
    std::env::var("SENG_DEBIAN_SECURITY_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian-security".into())
}

/// One private apt root for one Debian release (its main, updates and security suites).
pub struct AptRoot {
    dir: PathBuf,
}

impl AptRoot {
    /// Prepares `<cache>/apt/<release>` with a sources.list for `release` (e.g. `bookworm`).
    pub fn new(cache: &Path, release: &str) -> Result<Self> {
        let dir = cache.join("apt").join(release);
        mkdir(&dir.join("lists/partial"))?;
        mkdir(&dir.join("cache/archives/partial"))?;
        let sources = format!(
            "deb [signed-by={KEYRING}] {m} {release} main\n\
             deb [signed-by={KEYRING}] {m} {release}-updates main\n\
             deb [signed-by={KEYRING}] {s} {release}-security main\n",
            m = mirror(),
            s = security_mirror(),
        );
        if write_if_changed(&dir.join("sources.list"), sources.as_bytes())? {
            // New sources invalidate what was fetched for the old ones.
            let _ = fs::remove_file(dir.join("lists/.seng-updated"));
        }
        Ok(AptRoot { dir })
    }

    /// The `-o` options that point apt at this root. The sandbox user is root because `_apt`
    /// cannot enter root's home directory; the index targets that kernels do not need are off.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "APT::Sandbox::User=root".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// A file touched after every successful `apt-get update`.
    pub fn stamp(&self) -> PathBuf {
        self.dir.join("lists/.seng-updated")
    }

    /// The root directory (for small state files of the caller).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `apt-get update` if forced or the lists are missing or older than a day; returns
    /// whether it ran.
    pub fn update(&self, force: bool) -> Result<bool> {
        let fresh = fs::metadata(self.stamp())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < MAX_LIST_AGE);
        if fresh && !force {
            return Ok(false);
        }
        eprintln!("apt: updating package lists in {}", self.dir.display());
        Cmd::new("apt-get")
            .args(self.options())
            .args(["-q", "update"])
            .output()?;
        fs::write(self.stamp(), b"").context("cannot write the apt update stamp")?;
        Ok(true)
    }

    /// Names of known packages starting with `prefix`.
    pub fn pkgnames(&self, prefix: &str) -> Result<Vec<String>> {
        let out = Cmd::new("apt-cache")
            .args(self.options())
            .args(["pkgnames", prefix])
            .output_any()?;
        // apt-cache pkgnames exits non-zero when nothing matches.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The candidate version of `pkg`, if the lists know it.
    pub fn version(&self, pkg: &str) -> Result<Option<String>> {
        let out = Cmd::new("apt-cache")
            .args(self.options())
            .args(["show", "--no-all-versions", pkg])
            .output_any()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(str::to_string))
    }

    /// Downloads `pkg=version` for each entry into `dest` (verified against the signed lists).
    pub fn download(&self, pkgs: &[(String, String)], dest: &Path) -> Result<()> {
        Cmd::new("apt-get")
            .args(self.options())
            .args(["-q", "download"])
            .args(pkgs.iter().map(|(p, v)| format!("{p}={v}")))
            .dir(dest)
            .output()?;
        Ok(())
    }
}
