// SPDX-License-Identifier: GPL-2.0-only
//! What `inject pcap --summary FILE` reports, shared with the differential harness (seng-e2e)
//! that reads it, so the two cannot disagree on the format.

use std::collections::BTreeMap;

/// What a capture replay did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplaySummary {
    /// Frames read from the capture.
    pub frames: u64,
    /// IP packets handed to the kernel (arrived + output).
    pub ip_packets: u64,
    /// Frames that are not IP.
    pub non_ip: u64,
    /// Arriving packets the simulator calls malformed (the kernel drops them before netfilter).
    pub malformed_arriving: u64,
    /// Packets written into each tun device.
    pub arrived: BTreeMap<String, u64>,
    /// Gateway packets sent through OUTPUT and passed on.
    pub output_sent: u64,
    /// Gateway packets sent through OUTPUT that netfilter dropped.
    pub output_refused: u64,
    /// Gateway packets to one of its own addresses (OUTPUT then INPUT via lo).
    pub loopback: u64,
    /// Timed events applied between packets.
    pub events_applied: u64,
    /// Timed events applied after the last packet.
    pub events_after_capture: u64,
    /// Packets the kernel sent out of each tun device (forwarded or OUTPUT).
    pub sent_out: BTreeMap<String, u64>,
}
