// SPDX-License-Identifier: GPL-2.0-only
//! Where things live: the repository, cargo's target directory (build outputs) and the user cache
//! (downloaded and extracted kernels, shared by every checkout on the machine).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The directories xtask works in.
pub struct Paths {
    /// The workspace root (the parent of `xtask/`).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
    pub target: PathBuf,
    /// The download cache: `$SENG_CACHE_DIR`, else `$XDG_CACHE_HOME/seng`, else `~/.cache/seng`.
    pub cache: PathBuf,
}

impl Paths {
    /// Finds the directories from the environment.
    pub fn discover() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => cwd.join(dir),
            _ => root.join("target"),
        };
        let cache = if let Some(dir) = std::env::var_os("SENG_CACHE_DIR").filter(|d| !d.is_empty())
        {
            cwd.join(dir)
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(dir).join("seng")
        } else {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/seng")
        };
        Ok(Paths {
            root,
            target,
            cache,
        })
    }

    /// The cache directory of extracted kernels, one subdirectory per kernel release.
    pub fn kernels(&self) -> PathBuf {
        self.cache.join("kernels")
    }

    /// The build output directory for one kernel release's module.
    pub fn kmod_out(&self, release: &str) -> PathBuf {
        self.target.join("kmod").join(release)
    }

    /// The VM test work directory for one kernel release.
    pub fn vmtest_out(&self, release: &str) -> PathBuf {
        self.target.join("vmtest").join(release)
    }
}

/// `fs::create_dir_all` with the path in the error.
pub fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Removes a file or directory tree if it exists.
pub fn remove_all(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("cannot remove {}", path.display()))
}

/// Writes `data` to `path` only if the content differs, so unchanged files keep their mtime
/// (make then sees nothing to rebuild).
pub fn write_if_changed(path: &Path, data: &[u8]) -> Result<bool> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}
