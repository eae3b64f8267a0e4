// SPDX-License-Identifier: GPL-2.0-only
//! `seng.ko` for kernels with Rust-for-Linux: per-application firewall rules for Netfilter, with
//! the behaviour of the distro flavour (`seng-kmod/`): the `seng` xtables match for IPv4 and IPv6
//! (revision 0), the `seng_family` generic netlink family with its multicast groups, a lock-free
//! enclave table per network namespace, conntrack cleanup, and the `capacity` parameter.
//!
//! Nothing about requests or packets is decided here. seng-core is linked in as its own crate
//! (see `Kbuild`), and the distro flavour's request handling (`net`) and memory services
//! (`platform`) are compiled from their files in `seng-kmod/rust/src/`, unchanged; this flavour
//! provides the kernel services they call (`sys`), as the C glue does for the distro flavour.

use kernel::prelude::*;
use seng_core::table::MAX_CAPACITY;

mod sys;

// The shared modules are written for a crate whose items are reachable only through their
// `extern "C"` entry points; here they are private modules.
#[allow(unreachable_pub)]
#[path = "../../seng-kmod/rust/src/net.rs"]
mod net;
#[allow(unreachable_pub)]
#[path = "../../seng-kmod/rust/src/platform.rs"]
mod platform;

module! {
    type: Seng,
    name: "seng",
    description: "seng: per-application firewall rules (xt match and generic netlink)",
    license: "GPL",
    // MODULE_ALIAS_GENL_FAMILY(seng_family) is the last: genetlink asks for it by name.
    alias: ["ipt_seng", "ip6t_seng", "net-pf-16-proto-16-family-seng_family"],
}

/// Whether a command answers with attributes (and so needs a reply message).
fn replies(command: u8) -> bool {
    use seng_core::genl::cmd;
    command == cmd::GET || command == cmd::STATS
}

struct Seng {
    _registrations: Pin<KBox<sys::Registrations>>,
}

impl kernel::Module for Seng {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let capacity = sys::capacity();
        if capacity == 0 || capacity as usize > MAX_CAPACITY {
            pr_err!("capacity must be between 1 and {}\n", MAX_CAPACITY);
            return Err(EINVAL);
        }
        let registrations = sys::Registrations::new(module)?;
        pr_info!("loaded (capacity {} enclaves per namespace)\n", capacity);
        Ok(Seng {
            _registrations: registrations,
        })
    }
}
