// SPDX-License-Identifier: GPL-2.0-only
//! `libsengnetfilter.so`: the C API of the original SENG user library, declared in
//! `include/seng_netfilter_api.h` (which includes the protocol constants of `xt_seng_genl.h`),
//! so the SENG server builds and links against it unchanged: `user-library/CMakeLists.txt`
//! gives the CMake target `sengnetfilter` as the original's does, and the packages install the
//! library, headers, pkg-config file and CMake package.
//!
//! The functions speak the original protocol (command 1 with ADD/RMV/FLUSH flag attributes,
//! IPv4 addresses as `uint32_t` in network byte order), so they work against the original module
//! as well as against seng.ko. Differences from the original library, all on purpose:
//!
//! - every call waits for the kernel's ack and returns 0 only if the change was applied; a
//!   failure returns a negative errno (`-ENOENT`: module not loaded or unknown application,
//!   `-EPERM`: CAP_NET_ADMIN missing, `-EINVAL`: refused arguments, `-ENOTCONN`: no
//!   `prep_nl_sock`) and prints one line naming the problem to stderr. A refused request is not
//!   sent four more times: the kernel's answer would not change;
//! - `remove_enclave_ack` no longer deletes conntrack entries from user space: seng.ko deletes
//!   every entry involving the address itself, before acknowledging, whenever an enclave is
//!   unregistered or moved to another application or host;
//! - the process-wide socket sits behind a mutex, so the functions may be called from several
//!   threads; no panic crosses into C.

use std::ffi::{c_char, c_int, CStr};
use std::io::Write;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

use seng_core::{Category, Measurement};
use seng_nl::{Client, LegacyOp};

/// The socket `prep_nl_sock` opens and `cleanup_nl_sock` closes.
static SOCKET: Mutex<Option<Client>> = Mutex::new(None);

/// A failed call: the errno to return (negated) and what to print.
struct Failure {
    errno: i32,
    message: String,
}

impl From<seng_nl::Error> for Failure {
    fn from(e: seng_nl::Error) -> Failure {
        Failure { errno: e.errno().unwrap_or(libc::EIO), message: e.to_string() }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure { errno: libc::EINVAL, message: message.into() }
}

fn socket() -> MutexGuard<'static, Option<Client>> {
    // A panic while the lock was held (none is expected) leaves the client usable.
    SOCKET.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body`, turning its outcome into the C return value: 0, or a negative errno after one
/// line on stderr. Panics are caught so they never unwind into C.
fn call(what: &str, body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return 0,
        Ok(Err(f)) => f,
        Err(_) => Failure { errno: libc::EIO, message: "internal error".into() },
    };
    let _ = writeln!(std::io::stderr(), "SENG: {what}: {}", failure.message);
    -failure.errno
}

/// Sends one original-protocol operation on the process-wide socket.
fn legacy(op: LegacyOp) -> Result<(), Failure> {
    let mut guard = socket();
    let client = guard.as_mut().ok_or(Failure { errno: libc::ENOTCONN, message: "prep_nl_sock has not been called".into() })?;
    Ok(client.legacy(&op)?)
}

/// An IPv4 address from a `uint32_t` in network byte order (its bytes in memory are the octets).
fn ipv4(net_order: u32) -> Ipv4Addr {
    Ipv4Addr::from(net_order.to_ne_bytes())
}

/// Reads the 32-byte application hash.
///
/// # Safety
/// `app_hash` is null or points to 32 readable bytes.
unsafe fn app(app_hash: *const u8) -> Result<Measurement, Failure> {
    if app_hash.is_null() {
        return Err(invalid("app_hash is NULL"));
    }
    // SAFETY: by the caller: 32 readable bytes.
    Ok(Measurement(unsafe { *app_hash.cast::<[u8; 32]>() }))
}

/// Reads an optional category name.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn category(name: *const c_char) -> Result<Option<Category>, Failure> {
    if name.is_null() {
        return Ok(None);
    }
    // SAFETY: by the caller: NUL-terminated.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    Category::new(bytes).map(Some).map_err(|e| invalid(format!("category {:?}: {e}", String::from_utf8_lossy(bytes))))
}

/// Opens the process-wide netlink socket and resolves the seng family. Replaces a socket opened
/// before. Returns 0, or a negative errno (`-ENOENT` when the module is not loaded).
#[no_mangle]
pub extern "C" fn prep_nl_sock() -> c_int {
    call("prep_nl_sock", || {
        let client = Client::connect()?;
        *socket() = Some(client);
        Ok(())
    })
}

/// Closes the socket. Returns 0, or `-ENOTCONN` if none is open. A replace transaction cannot be
/// pending: this API never opens one.
#[no_mangle]
pub extern "C" fn cleanup_nl_sock() -> c_int {
    call("cleanup_nl_sock", || match socket().take() {
        Some(_) => Ok(()),
        None => Err(Failure { errno: libc::ENOTCONN, message: "no socket is open".into() }),
    })
}

/// Unregisters every enclave (their connections end). Returns 0 or a negative errno.
#[no_mangle]
pub extern "C" fn flush_module() -> c_int {
    call("flush_module", || legacy(LegacyOp::Flush))
}

/// Registers `enclave_ip` as an enclave of `app_hash` (32 bytes) on `host`, attaching
/// `cat_name` (may be NULL) to the application. Addresses are IPv4 in network byte order.
/// Returns 0 or a negative errno.
///
/// # Safety
/// `app_hash` is null or points to 32 readable bytes; `cat_name` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn add_enclave_ack(enclave_ip: u32, app_hash: *const u8, host: u32, cat_name: *const c_char) -> c_int {
    call("add_enclave_ack", || {
        // SAFETY: forwarded from the caller.
        let (app, category) = unsafe { (app(app_hash)?, category(cat_name)?) };
        legacy(LegacyOp::Register { addr: ipv4(enclave_ip), app, host: ipv4(host), category })
    })
}

/// Attaches `cat_name` to the application `app_hash`, which must have a registered enclave.
/// Returns 0 or a negative errno.
///
/// # Safety
/// `app_hash` is null or points to 32 readable bytes; `cat_name` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cat_to_app_ack(app_hash: *const u8, cat_name: *const c_char) -> c_int {
    call("cat_to_app_ack", || {
        // SAFETY: forwarded from the caller.
        let (app, category) = unsafe { (app(app_hash)?, category(cat_name)?) };
        let category = category.ok_or_else(|| invalid("cat_name is NULL"))?;
        legacy(LegacyOp::Attach { app, category })
    })
}

/// Detaches `cat_name` from the application `app_hash`; an absent category is not an error.
/// Returns 0 or a negative errno.
///
/// # Safety
/// `app_hash` is null or points to 32 readable bytes; `cat_name` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn remove_cat_from_app_ack(app_hash: *const u8, cat_name: *const c_char) -> c_int {
    call("remove_cat_from_app_ack", || {
        // SAFETY: forwarded from the caller.
        let (app, category) = unsafe { (app(app_hash)?, category(cat_name)?) };
        let category = category.ok_or_else(|| invalid("cat_name is NULL"))?;
        legacy(LegacyOp::Detach { app, category })
    })
}

/// Unregisters `enclave_ip` (IPv4, network byte order); an unregistered address is not an error.
/// seng.ko deletes the conntrack entries of the address itself, so nothing is left to clean up
/// from user space. Returns 0 or a negative errno.
#[no_mangle]
pub extern "C" fn remove_enclave_ack(enclave_ip: u32) -> c_int {
    call("remove_enclave_ack", || legacy(LegacyOp::Unregister { addr: ipv4(enclave_ip) }))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn addresses_are_network_byte_order() {
        // 192.168.28.10 as C's htonl() leaves it in memory.
        let net = u32::from_ne_bytes([192, 168, 28, 10]);
        assert_eq!(ipv4(net), Ipv4Addr::new(192, 168, 28, 10));
        // htonl(INADDR_LOOPBACK)
        assert_eq!(ipv4(0x7f00_0001_u32.to_be()), Ipv4Addr::new(127, 0, 0, 1));
    }

    #[test]
    fn refuses_bad_arguments_without_a_socket() {
        let hash = [0xabu8; 32];
        let long = c"123456789012345678901";
        let cases: Vec<(c_int, c_int)> = vec![
            // SAFETY (all): valid or null pointers.
            (unsafe { add_enclave_ack(1, std::ptr::null(), 2, std::ptr::null()) }, -libc::EINVAL),
            (unsafe { add_enclave_ack(1, hash.as_ptr(), 2, long.as_ptr()) }, -libc::EINVAL),
            (unsafe { cat_to_app_ack(hash.as_ptr(), std::ptr::null()) }, -libc::EINVAL),
            (unsafe { remove_cat_from_app_ack(hash.as_ptr(), c"".as_ptr()) }, -libc::EINVAL),
            (unsafe { cat_to_app_ack(hash.as_ptr(), c"Mail".as_ptr()) }, -libc::ENOTCONN),
            (remove_enclave_ack(1), -libc::ENOTCONN),
            (flush_module(), -libc::ENOTCONN),
            (cleanup_nl_sock(), -libc::ENOTCONN),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn panics_do_not_escape() {
        assert_eq!(call("test", || panic!("boom")), -libc::EIO);
        assert_eq!(call("test", || Ok(())), 0);
    }
}
