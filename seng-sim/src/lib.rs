// SPDX-License-Identifier: GPL-2.0-only
//! seng-sim: replays packet captures offline through a model of the Linux raw, mangle, nat and
//! filter tables (iptables and ip6tables) with the seng match, connection tracking, NAT and
//! timed enclave registrations, and reports what the kernel would have counted and decided.
//!
//! The pipeline: [`capture`] reads pcap/pcapng and peels link layers, [`packet`] parses IP
//! headers, [`defrag`] reassembles fragments as nf_defrag does, [`net`] knows interfaces and routes, [`conntrack`] gives its state and NAT bindings,
//! [`engine`] runs it through the [`rules`] compiled for replay, and [`report`] prints the
//! counters the way `iptables -L -v -n -x` does. [`gen`] makes captures (the shipped example and
//! the benchmark's).
#![deny(missing_docs)]

pub mod capture;
pub mod conntrack;
pub mod defrag;
pub mod engine;
pub mod gen;
pub mod net;
pub mod packet;
pub mod report;
pub mod rules;
pub mod tokenize;

use std::io::Write;

use capture::Capture;
use engine::{SimError, Simulator};

/// How often the progress callback runs, in frames (a power of two: a mask test per frame).
const PROGRESS_EVERY: u64 = 1 << 16;

/// Replays every frame of `capture` through `sim`, then applies the events left after the
/// last packet. `trace` receives one line per frame; `progress` is called now and then with the
/// byte offset reached.
pub fn replay<'w>(capture: &Capture, sim: &mut Simulator, mut trace: Option<&mut (dyn Write + 'w)>, progress: &mut dyn FnMut(usize)) -> Result<(), SimError> {
    let mut frames = capture.frames();
    let mut count = 0u64;
    while let Some(frame) = frames.next() {
        let frame = frame?;
        sim.process(&frame, trace.as_deref_mut())?;
        count += 1;
        if count & (PROGRESS_EVERY - 1) == 0 {
            progress(frames.offset());
        }
    }
    sim.finish(trace)
}
