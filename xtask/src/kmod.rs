// SPDX-License-Identifier: GPL-2.0-only
//! Building `seng.ko`: the Rust static object once for `x86_64-unknown-none` (the flags and
//! checks of shared/reference/kernel-build.md), then the module with kbuild against each
//! kernel's headers, failing on any compiler, objtool or modpost warning.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{combined, failure_message, Cmd};
use crate::kernel::Kernel;
use crate::paths::{mkdir, remove_all, write_if_changed, Paths};

/// Code generation for kernel code: no PLT/GOT indirection (the module loader rejects
/// GOTPCREL), the kernel code model, no red zone, no jump tables (objtool cannot follow them),
/// one section per object, and the retpoline/return-thunk/IBT conventions of the kernels.
const RUSTFLAGS: &str = "-Crelocation-model=static -Ccode-model=kernel -Cno-redzone=yes \
    -Cjump-tables=no -Zplt=yes -Zfunction-sections=no -Zretpoline-external-thunk \
    -Zfunction-return=thunk-extern -Zcf-protection=branch";

const RUST_TARGET: &str = "x86_64-unknown-none";

/// The crate name as it prefixes the LTO'd member of the static library.
const CRATE_MEMBER_PREFIX: &str = "seng_kmod_rs";

/// Undefined symbols the Rust object may leave for the kernel beyond plain C functions.
const ALLOWED_UNDERSCORE_UNDEFINED: &[&str] = &["__x86_return_thunk", "__x86_indirect_thunk_"];

/// What KASAN's instrumentation calls in the kernel: the reports and the checked `mem*`.
const KASAN_UNDEFINED: &str = "__asan_";

/// Builds the Rust static library and extracts and checks its crate object; returns the object
/// (`<target>/kmod/seng_rs.o`), unchanged on disk if its content did not change.
pub fn build_rust(paths: &Paths) -> Result<PathBuf> {
    build_rust_variant(paths, None)
}

/// The Rust object for `kernel`: [`build_rust`]'s `plain` one, or, for a kernel with generic
/// KASAN (the debug kernel), one instrumented as the kernel instruments its own Rust code
/// (scripts/Makefile.kasan), so KASAN checks the accesses of seng-core's decoder and table too.
pub fn rust_object_for(paths: &Paths, kernel: &Kernel, plain: &Path) -> Result<PathBuf> {
    match kasan_shadow_offset(kernel) {
        Some(offset) => build_rust_variant(paths, Some(&offset)),
        None => Ok(plain.to_path_buf()),
    }
}

/// `CONFIG_KASAN_SHADOW_OFFSET` of a kernel with generic KASAN, from its build configuration.
fn kasan_shadow_offset(kernel: &Kernel) -> Option<String> {
    let config = fs::read_to_string(kernel.kdir().join(".config")).ok()?;
    let generic = config.lines().any(|l| l == "CONFIG_KASAN_GENERIC=y");
    let offset = config.lines().find_map(|l| l.strip_prefix("CONFIG_KASAN_SHADOW_OFFSET="))?;
    generic.then(|| offset.to_string())
}

/// Builds the Rust object, instrumented for KASAN with shadow offset `kasan` if given (into
/// `<target>/kmod/seng_rs-kasan.o`). The instrumentation is inline, as `CONFIG_KASAN_INLINE`'s;
/// globals and the stack stay uninstrumented (their redzones need module constructors).
fn build_rust_variant(paths: &Paths, kasan: Option<&str>) -> Result<PathBuf> {
    let manifest = paths.root.join("seng-kmod/rust/Cargo.toml");
    let (target_dir, name) = match kasan {
        None => (paths.target.join("kmod/rust"), "seng_rs.o"),
        Some(_) => (paths.target.join("kmod/rust-kasan"), "seng_rs-kasan.o"),
    };
    let mut rustflags = RUSTFLAGS.to_string();
    if let Some(offset) = kasan {
        rustflags.push_str(&format!(
            " -Zsanitizer=kernel-address -Zsanitizer-recover=kernel-address \
             -Cllvm-args=-asan-mapping-offset={offset} \
             -Cllvm-args=-asan-instrumentation-with-call-threshold=10000 \
             -Cllvm-args=-asan-stack=0 -Cllvm-args=-asan-globals=0 \
             -Cllvm-args=-asan-kernel-mem-intrinsic-prefix=1"
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Unstable flags (-Z...) are needed on the stable toolchain, as the kernel's own Rust build
    // does; build-std rebuilds core with the same flags so memcpy calls also go through the PLT.
    Cmd::new(cargo)
        .args(["build", "--quiet", "--release", "--target", RUST_TARGET])
        .arg("-Zbuild-std=core,compiler_builtins")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", &rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .run()?;

    let lib = target_dir
        .join(RUST_TARGET)
        .join("release/libseng_kmod_rs.a");
    let members = Cmd::new("ar").arg("t").arg(&lib).stdout()?;
    let ours: Vec<&str> = members
        .lines()
        .filter(|m| m.starts_with(CRATE_MEMBER_PREFIX))
        .collect();
    let [member] = ours[..] else {
        bail!("{} should hold one {CRATE_MEMBER_PREFIX}* object (LTO, one codegen unit), found {ours:?}", lib.display());
    };
    // compiler_builtins stays out: its symbols are what modpost would reject anyway.
    let object = Cmd::new("ar")
        .arg("p")
        .arg(&lib)
        .arg(member)
        .output()?
        .stdout;
    let checked = paths.target.join(format!("kmod/{name}.check"));
    mkdir(checked.parent().context("no kmod dir")?)?;
    fs::write(&checked, &object).context("cannot write the extracted Rust object")?;
    check_rust_object(&checked, kasan.is_some())?;
    let out = paths.target.join("kmod").join(name);
    write_if_changed(&out, &object)?;
    fs::remove_file(&checked).ok();
    Ok(out)
}

/// Rejects Rust objects the kernel cannot load or that break kernel rules; a KASAN build may
/// also call KASAN's entry points.
fn check_rust_object(obj: &Path, kasan: bool) -> Result<()> {
    let shown = obj.display();
    let disasm = Cmd::new("objdump").arg("-d").arg(obj).stdout()?;
    let mut function = "";
    let sse: Vec<String> = disasm
        .lines()
        .filter_map(|l| {
            if l.ends_with(">:") {
                function = l;
            }
            l.contains("xmm")
                .then(|| format!("{function} {}", l.trim()))
        })
        .take(5)
        .collect();
    if !sse.is_empty() {
        bail!(
            "{shown} uses SSE registers, which kernel code must not touch:\n{}",
            sse.join("\n")
        );
    }

    let relocs = Cmd::new("readelf").arg("-rW").arg(obj).stdout()?;
    let bad: Vec<&str> = relocs
        .lines()
        .filter(|l| {
            ["GOTPCREL", "TPOFF", "TLSGD", "TLSLD", "DTPOFF"]
                .iter()
                .any(|r| l.contains(r))
        })
        .take(5)
        .collect();
    if !bad.is_empty() {
        bail!(
            "{shown} has GOT or TLS relocations the module loader rejects (is -Zplt=yes with \
             build-std in effect?):\n{}",
            bad.join("\n")
        );
    }

    check_panic_free(obj)?;
    let symbols = Cmd::new("nm").arg(obj).stdout()?;
    let foreign: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.trim().strip_prefix("U "))
        .filter(|s| {
            s.starts_with("_ZN")
                || (s.starts_with("__")
                    && !ALLOWED_UNDERSCORE_UNDEFINED
                        .iter()
                        .any(|a| s.starts_with(a))
                    && !(kasan && s.starts_with(KASAN_UNDEFINED)))
        })
        .collect();
    if !foreign.is_empty() {
        bail!(
            "{shown} needs compiler-rt or Rust library symbols the kernel does not have (u128 \
             division, floating point?): {}",
            foreign.join(", ")
        );
    }
    Ok(())
}

/// Rejects an object that can panic: one that defines or calls a panic entry point of `core`.
/// It reads both the distro flavour's Rust object and a Rust-for-Linux module, which calls
/// core's entry points in the kernel.
pub fn check_panic_free(obj: &Path) -> Result<()> {
    let symbols = Cmd::new("nm").arg(obj).stdout()?;
    let panics = panic_entry_points(&symbols);
    if !panics.is_empty() {
        bail!(
            "{} can panic (it references {}); make the code panic-free:\n{}",
            obj.display(),
            panics.first().map_or("", |(_, name)| name.as_str()),
            panics.iter().take(8).map(|(line, name)| format!("{line}   ({name})")).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// The lines of `nm` output that name a panic entry point of `core`, each with its demangled
/// name. Both manglings are read: the distro object's legacy one and the v0 one of the kernel's
/// Rust flags. The entry points are those objtool knows as Rust's no-return functions (see
/// `is_rust_noreturn` in the kernel's tools/objtool/check.c): everything in `core::panicking`,
/// `unwrap_failed`, `expect_failed` and the `*_fail` functions of slice indexing and copying, and
/// the `panic_*` functions of other modules such as `core::cell`. Where the whole of `core` is
/// linked in (the distro object) they all end in `core::panicking`; a Rust-for-Linux module calls
/// them in the kernel, so each is looked for by name.
fn panic_entry_points(nm: &str) -> Vec<(String, String)> {
    nm.lines()
        .filter_map(|line| {
            let symbol = line.split_whitespace().last()?;
            let name = format!("{:#}", rustc_demangle::demangle(symbol));
            is_panic_entry_point(&name).then(|| (line.trim().to_string(), name))
        })
        .collect()
}

fn is_panic_entry_point(demangled: &str) -> bool {
    // Instances of generic entry points (`assert_failed::<u32, u32>`) count as the entry point.
    let path = demangled.split("::<").next().unwrap_or(demangled);
    let Some(path) = path.strip_prefix("core::") else {
        return false;
    };
    let item = path.rsplit("::").next().unwrap_or(path);
    path.starts_with("panicking::")
        || item.starts_with("panic")
        || item.ends_with("_fail")
        || item.ends_with("_failed")
}

/// Builds `seng.ko` for `kernel` with kbuild; returns `<target>/kmod/<release>/seng.ko`.
pub fn build_module(paths: &Paths, kernel: &Kernel, rust_obj: &Path) -> Result<PathBuf> {
    let out = paths.kmod_out(&kernel.release);
    let build = out.join("build");
    mkdir(&build)?;
    sync_sources(&paths.root.join("seng-kmod"), &build)?;

    let mut make = Cmd::new("make")
        .arg("-C")
        .arg(kernel.kdir())
        .arg(format!("M={}", build.display()))
        .arg(format!("SENG_RUST_OBJ={}", rust_obj.display()))
        .args(["-j2", "modules"]);
    if let Some(cc) = compiler_override(kernel) {
        make = make.arg(format!("CC={cc}"));
    }
    let key = build_key(kernel, &build, rust_obj, make.shown())?;
    kbuild_cached(make, &kernel.release, &key, &out, &build, &build)
}

/// Runs kbuild's `make` unless `out/seng.ko` was already built from inputs fingerprinted as
/// `key`; kbuild works in `build` and leaves `seng.ko` in `module_dir`. Any warning fails the
/// build. Returns `out/seng.ko`.
pub fn kbuild_cached(
    make: Cmd,
    release: &str,
    key: &str,
    out: &Path,
    build: &Path,
    module_dir: &Path,
) -> Result<PathBuf> {
    // kbuild takes most of a second even with nothing to do: skip it when no input changed.
    let ko = out.join("seng.ko");
    let key_file = out.join("build.key");
    if ko.exists() && fs::read_to_string(&key_file).ok().as_deref() == Some(key) {
        return Ok(ko);
    }
    let shown = make.shown().to_string();
    let output = make.output_any()?;
    if !output.status.success() {
        bail!(
            "kbuild for {release} failed: {}",
            failure_message(&shown, &output)
        );
    }
    let text = combined(&output);
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning"))
        .collect();
    if !warnings.is_empty() {
        // Objects built with warnings must not count as up to date on the next run.
        remove_all(build)?;
        bail!(
            "kbuild for {release} printed warnings (they fail the build):\n{}\n--- full output of `{shown}` ---\n{text}",
            warnings.join("\n")
        );
    }
    fs::copy(module_dir.join("seng.ko"), &ko)
        .with_context(|| format!("cannot copy seng.ko to {}", ko.display()))?;
    fs::write(&key_file, key).with_context(|| format!("cannot write {}", key_file.display()))?;
    Ok(ko)
}

/// A fingerprint of everything a module build depends on: the kbuild inputs in `build`, the
/// Rust object, the make command line (KDIR, compiler) and the kernel's identity.
fn build_key(kernel: &Kernel, build: &Path, rust_obj: &Path, make: &str) -> Result<String> {
    let mut h = DefaultHasher::new();
    h.write(make.as_bytes());
    h.write(kernel.release.as_bytes());
    h.write(kernel.version.as_bytes());
    h.write(&fs::read(rust_obj).with_context(|| format!("cannot read {}", rust_obj.display()))?);
    let mut inputs: Vec<PathBuf> = fs::read_dir(build)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            is_kbuild_input(&name)
        })
        .collect();
    inputs.sort();
    for input in inputs {
        h.write(input.as_os_str().as_encoded_bytes());
        h.write(&fs::read(&input)?);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// The files of seng-kmod/ that kbuild reads.
fn is_kbuild_input(name: &str) -> bool {
    name == "Kbuild" || name.ends_with(".c") || name.ends_with(".h")
}

/// Mirrors the kbuild inputs (Kbuild, *.c, *.h) of `src` into the per-kernel build directory, so
/// kernels build side by side without touching the source tree. Unchanged files keep their
/// mtime, so an unchanged module is not rebuilt.
fn sync_sources(src: &Path, build: &Path) -> Result<()> {
    let mut wanted = Vec::new();
    for entry in fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && is_kbuild_input(&name) {
            let data = fs::read(entry.path())?;
            write_if_changed(&build.join(&name), &data)?;
            wanted.push(name);
        }
    }
    for entry in fs::read_dir(build)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if is_kbuild_input(&name) && !wanted.contains(&name) {
            fs::remove_file(build.join(&name))?;
        }
    }
    Ok(())
}

/// Debian's headers name the compiler the kernel was built with (5.10: gcc-10). If it is not
/// installed, use the host's gcc: these configs use no GCC plugins, so modules stay compatible.
fn compiler_override(kernel: &Kernel) -> Option<String> {
    let vars = kernel.kdir().join(".kernelvariables");
    let text = fs::read_to_string(vars).ok()?;
    let wanted = text
        .lines()
        .filter(|l| l.trim_start().starts_with("CC "))
        .filter_map(|l| l.split_whitespace().last())
        .next_back()?
        .trim_start_matches("$(CROSS_COMPILE)");
    (!on_path(wanted)).then(|| "gcc".into())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn panic_entry_points_in_both_manglings() {
        let nm = "\
0000000000000000 T _ZN4core9panicking9panic_fmt17h0123456789abcdefE
                 U _RNvNtCs5QSdWC790r4_4core6option13unwrap_failed
                 U _RNvNtNtCs5QSdWC790r4_4core5slice5index24slice_end_index_len_fail
                 U _RNvNtNtCs5QSdWC790r4_4core9panicking11panic_const23panic_const_div_by_zero
                 U _RNvNtCs5QSdWC790r4_4core4cell22panic_already_borrowed
0000000000000010 t _ZN4core3fmt9Formatter3pad17h0123456789abcdefE
0000000000000020 T _RNvNtCs5QSdWC790r4_4core6option6expect
                 U _RNvNtCs1234_6kernel5print11call_printk
                 U __x86_return_thunk
0000000000000030 T seng_rs_doit
";
        let names: Vec<String> = panic_entry_points(nm).into_iter().map(|(_, name)| name).collect();
        assert_eq!(
            names,
            [
                "core::panicking::panic_fmt",
                "core::option::unwrap_failed",
                "core::slice::index::slice_end_index_len_fail",
                "core::panicking::panic_const::panic_const_div_by_zero",
                "core::cell::panic_already_borrowed",
            ]
        );
    }

    #[test]
    fn generic_instances_count_as_their_entry_point() {
        assert!(is_panic_entry_point("core::panicking::assert_failed::<u32, u32>"));
        assert!(!is_panic_entry_point("<core::option::Option<u8> as core::fmt::Debug>::fmt"));
        assert!(!is_panic_entry_point("core::panic::location::Location::caller"));
    }
}
