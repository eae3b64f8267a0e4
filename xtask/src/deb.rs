// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask deb`: the Debian packages of `debian/` (seng-dkms, seng, libsengnetfilter1,
//! libsengnetfilter-dev, and the -dbgsym packages debhelper adds), built by debhelper from this
//! checkout into `<target>/deb/` and checked by lintian, which must report no error. With
//! `--test` they are then installed and tested as an admin would (`admin.rs`).

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cmd::{combined, Cmd};
use crate::paths::{mkdir, remove_all, Paths};

/// The packages an admin installs (the -dbgsym ones are left out).
pub const PACKAGES: [&str; 4] = ["seng-dkms", "seng", "libsengnetfilter1", "libsengnetfilter-dev"];

/// Builds and lints the packages; returns the `.deb`s of [`PACKAGES`].
pub fn build(paths: &Paths) -> Result<Vec<PathBuf>> {
    let version = check_version(paths)?;
    let builddeps = Cmd::new("dpkg-checkbuilddeps").dir(&paths.root).output_any()?;
    if !builddeps.status.success() {
        bail!(
            "{} (run .ci/setup-host.sh)",
            combined(&builddeps).trim()
        );
    }
    let out = paths.target.join("deb");
    remove_all(&out)?;
    mkdir(&out)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for target in ["clean", "binary"] {
        Cmd::new(paths.root.join("debian/rules"))
            .arg(target)
            .env("CARGO", &cargo)
            .env("CARGO_TARGET_DIR", &paths.target)
            .env("SENG_DEB_DIR", &out)
            // `cargo run` points it at cargo's deps directory, which dpkg-shlibdeps takes for
            // private libraries of the packages.
            .env_remove("LD_LIBRARY_PATH")
            .dir(&paths.root)
            .run()?;
    }
    let mut all: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    all.sort();
    lint(&all)?;
    println!("packages in {}:", out.display());
    for deb in &all {
        let installed = Cmd::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Installed-Size")
            .stdout()?;
        println!(
            "  {:<48} {:>9} bytes, installed {:>6} KiB",
            deb.file_name().unwrap_or_default().to_string_lossy(),
            fs::metadata(deb)?.len(),
            installed.trim()
        );
    }
    PACKAGES
        .iter()
        .map(|p| {
            let deb = out.join(format!("{p}_{version}_amd64.deb"));
            deb.exists()
                .then_some(deb.clone())
                .with_context(|| format!("debian/rules made no {}", deb.display()))
        })
        .collect()
}

/// The package version (debian/changelog) must be the `seng` command's (seng-nl's crate
/// version): `seng --version` and `dpkg -l` then agree.
fn check_version(paths: &Paths) -> Result<String> {
    let changelog = Cmd::new("dpkg-parsechangelog")
        .args(["-S", "Version"])
        .dir(&paths.root)
        .stdout()?
        .trim()
        .to_string();
    let manifest = paths.root.join("seng-nl/Cargo.toml");
    let text = fs::read_to_string(&manifest)?;
    let crate_version = text
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .with_context(|| format!("{} has no version", manifest.display()))?;
    if changelog != crate_version {
        bail!(
            "debian/changelog is at {changelog} but seng-nl/Cargo.toml at {crate_version}: add a \
             changelog entry (dch -v {crate_version}) or fix the crate version"
        );
    }
    Ok(changelog)
}

/// lintian on every package: errors fail, the rest is printed.
fn lint(debs: &[PathBuf]) -> Result<()> {
    let out = Cmd::new("lintian")
        .args(["--fail-on", "error", "--display-info"])
        .args(debs)
        .output_any()?;
    let text = combined(&out);
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && l.starts_with(['E', 'W', 'I', 'P']))
        .collect();
    println!("lintian:{}", if tags.is_empty() { " nothing to report" } else { "" });
    for tag in &tags {
        println!("  {tag}");
    }
    if !out.status.success() {
        bail!("lintian reports errors:\n{text}");
    }
    Ok(())
}
