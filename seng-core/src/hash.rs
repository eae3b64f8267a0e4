// SPDX-License-Identifier: GPL-2.0-only
//! Keyed hashing for the table. The seed comes from the host environment (the kernel's random
//! pool), so the bucket of an address cannot be predicted from outside; the mixing spreads every
//! input bit (the original hashed only the first octet, which made a /8 one bucket).
//!
//! Addresses are hashed on the packet path, once per seng rule, so their mix is short: two
//! multiplications. The keys placed in the table are the SENG server's registrations, not attacker input;
//! a packet's address only chooses which probe sequence a lookup walks.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::table::AppKey;

/// A key of a table map.
pub(crate) trait TableKey: Copy + Eq {
    /// A well-mixed 64-bit hash of the key under `seed`.
    fn hash(&self, seed: u64) -> u64;
}

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline(always)]
fn absorb(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(MULTIPLIER).rotate_left(31)
}

/// Two multiplications, folded in between and rotated after: the low bits the table indexes
/// with are middle bits of the second product, which depend on every input bit, so runs of
/// consecutive addresses do not form runs of occupied slots. (The rotation costs the packet path
/// two instructions less than a second fold, and places keys as well.)
#[inline(always)]
fn short_mix(x: u64) -> u64 {
    let h = x.wrapping_mul(MULTIPLIER);
    (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93).rotate_left(32)
}

impl TableKey for Ipv4Addr {
    #[inline(always)]
    fn hash(&self, seed: u64) -> u64 {
        short_mix(u64::from(u32::from_ne_bytes(self.octets())) ^ seed)
    }
}

impl TableKey for Ipv6Addr {
    #[inline(always)]
    fn hash(&self, seed: u64) -> u64 {
        // No family tag: this mix is another function of the seed than IPv4's already.
        let [hi, lo] = split(self.octets());
        short_mix(absorb(seed ^ 6, hi) ^ lo)
    }
}

impl TableKey for IpAddr {
    #[inline(always)]
    fn hash(&self, seed: u64) -> u64 {
        match self {
            IpAddr::V4(a) => a.hash(seed),
            IpAddr::V6(a) => a.hash(seed),
        }
    }
}

impl TableKey for AppKey {
    fn hash(&self, seed: u64) -> u64 {
        // Measurements are already uniformly distributed (they are SHA-256 digests), but apps are
        // written by admins too, so mix all of it anyway; this runs only on the write path.
        let mut h = absorb(seed, self.origin.index() as u64);
        for chunk in self.measurement.0.chunks_exact(8) {
            let mut word = [0u8; 8];
            for (d, s) in word.iter_mut().zip(chunk) {
                *d = *s;
            }
            h = absorb(h, u64::from_ne_bytes(word));
        }
        finish(h)
    }
}

fn split(bytes: [u8; 16]) -> [u64; 2] {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = bytes;
    [
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    ]
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn one_slash_eight_spreads_over_buckets() {
        // The original's defect: all of 10/8 in one bucket. Here 4096 addresses of one /8 must
        // fill 4096 buckets about as evenly as random placement would.
        let buckets = 4096usize;
        let mut counts = vec![0u32; buckets];
        for i in 0..buckets as u32 {
            let ip = IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0000 | i));
            counts[(ip.hash(0x1234) as usize) & (buckets - 1)] += 1;
        }
        let max = *counts.iter().max().unwrap();
        assert!(max <= 9, "a bucket got {max} of {buckets} keys");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4: IpAddr = "32.1.13.184".parse().unwrap();
        assert_ne!(v6.hash(1), v4.hash(1));
        assert_ne!(v4.hash(1), v4.hash(2), "the seed changes placement");
    }

    #[test]
    fn linear_probing_at_half_load_probes_as_under_random_placement() {
        // What a lookup pays: the map probes linearly and is at most half full, where random
        // placement averages 2.5 probes for an absent key. Registrations come in structured runs
        // (a subnet, one address per subnet), which a weak mix would turn into long clusters.
        for bits in [6u32, 10, 16] {
            let slots = 1usize << bits;
            // Every stride keeps the addresses distinct.
            let strides = [1u32, 4, 1 << 8, 1 << 16];
            for (stride, seed) in strides.iter().zip([7u64, 0xdead_beef_cafe_babe, 42, 1 << 63]) {
                let mut used = vec![false; slots];
                for i in 0..slots as u32 / 2 {
                    let ip = IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0001u32.wrapping_add(i.wrapping_mul(*stride))));
                    let mut at = ip.hash(seed) as usize;
                    while used[at & (slots - 1)] {
                        at += 1;
                    }
                    used[at & (slots - 1)] = true;
                }
                let probes: usize = (0..slots).map(|start| (start..).take_while(|at| used[at & (slots - 1)]).count() + 1).sum();
                let mean = probes as f64 / slots as f64;
                assert!(mean < 3.2, "{slots} slots, stride {stride}: {mean:.2} probes per absent key");
            }
        }
    }
}
