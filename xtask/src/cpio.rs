// SPDX-License-Identifier: GPL-2.0-only
//! A minimal writer of `newc` cpio archives (the initramfs format), with a content fingerprint
//! so an unchanged archive is not written again.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

enum Node {
    Dir,
    /// A host file copied in (its content is read when hashing and writing).
    File {
        host: PathBuf,
        mode: u32,
    },
    Data {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
}

/// An archive being assembled: guest paths (without leading `/`) to nodes. The sorted map puts
/// every directory before its contents, as the kernel's unpacker needs.
#[derive(Default)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
}

impl Archive {
    fn parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            self.nodes
                .entry(path[..end].to_string())
                .or_insert(Node::Dir);
            end += 1;
        }
    }

    fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        self.parents(path);
        self.nodes.insert(path.to_string(), node);
    }

    /// Adds an (empty) directory.
    pub fn dir(&mut self, path: &str) {
        self.insert(path, Node::Dir);
    }

    /// Adds a copy of host file `host` (symlinks followed), keeping its permission bits.
    pub fn file(&mut self, path: &str, host: &Path) -> Result<()> {
        let meta = fs::metadata(host).with_context(|| format!("cannot read {}", host.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            path,
            Node::File {
                host: host.to_path_buf(),
                mode,
            },
        );
        Ok(())
    }

    /// Adds a file with the given content and permission bits.
    pub fn data(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            path,
            Node::Data {
                data: data.into(),
                mode,
            },
        );
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()));
    }

    /// A cheap hash of the archive's layout and its host files' metadata (size, mtime, inode)
    /// instead of their content: unchanged means the content fingerprint is unchanged too.
    pub fn stat_fingerprint(&self) -> Result<u64> {
        self.hash_with(|h, host| {
            let meta =
                fs::metadata(host).with_context(|| format!("cannot read {}", host.display()))?;
            h.write(host.as_os_str().as_encoded_bytes());
            h.write_u64(meta.len());
            h.write_i64(meta.mtime());
            h.write_i64(meta.mtime_nsec());
            h.write_u64(meta.ino());
            Ok(())
        })
    }

    /// A hash of every path, type, mode and content: equal fingerprints mean equal archives.
    pub fn fingerprint(&self) -> Result<u64> {
        self.hash_with(|h, host| {
            h.write(&read(host)?);
            Ok(())
        })
    }

    /// A hash of every path, type and mode, with `host_file` hashing each file from the host.
    fn hash_with(
        &self,
        host_file: impl Fn(&mut DefaultHasher, &Path) -> Result<()>,
    ) -> Result<u64> {
        let mut h = DefaultHasher::new();
        for (path, node) in &self.nodes {
            h.write(path.as_bytes());
            h.write_u8(0);
            match node {
                Node::Dir => h.write_u8(1),
                Node::File { host, mode } => {
                    h.write_u32(*mode);
                    host_file(&mut h, host)?;
                }
                Node::Data { data, mode } => {
                    h.write_u32(*mode);
                    h.write(data);
                }
                Node::Symlink(target) => {
                    h.write_u8(2);
                    h.write(target.as_bytes());
                }
            }
        }
        Ok(h.finish())
    }

    /// Writes the archive to `out` (through a temporary file renamed into place).
    pub fn write(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        for (ino, (path, node)) in (1..).zip(&self.nodes) {
            let (mode, data) = match node {
                Node::Dir => (S_IFDIR | 0o755, Vec::new()),
                Node::File { host, mode } => (S_IFREG | mode, read(host)?),
                Node::Data { data, mode } => (S_IFREG | mode, data.clone()),
                Node::Symlink(target) => (S_IFLNK | 0o777, target.as_bytes().to_vec()),
            };
            entry(&mut w, ino, path, mode, &data)?;
        }
        entry(&mut w, 0, "TRAILER!!!", 0, &[])?;
        w.flush()?;
        drop(w);
        fs::rename(&tmp, out).with_context(|| format!("cannot move {} into place", tmp.display()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn entry(w: &mut impl Write, ino: u32, name: &str, mode: u32, data: &[u8]) -> Result<()> {
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {devmajor:08x}{devminor:08x}{rdevmajor:08x}{rdevminor:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        devmajor = 0,
        devminor = 0,
        rdevmajor = 0,
        rdevminor = 0,
        namesize = name.len() + 1,
        check = 0,
    );
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, header.len() + name.len() + 1)?;
    w.write_all(data)?;
    pad(w, data.len())?;
    Ok(())
}

/// newc aligns headers and data to 4 bytes.
fn pad(w: &mut impl Write, len: usize) -> Result<()> {
    let zeros = [0u8; 3];
    w.write_all(&zeros[..(4 - len % 4) % 4])?;
    Ok(())
}
