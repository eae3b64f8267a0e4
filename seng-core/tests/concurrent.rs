// SPDX-License-Identifier: GPL-2.0-only
//! Readers on other threads while one writer churns the table: every lookup must see a
//! consistent entry (never a torn mix of two registrations), with memory kept alive by a
//! platform that defers frees the way RCU does.

use std::alloc::Layout;
use std::net::{IpAddr, Ipv4Addr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use seng_core::origin::OriginId;
use seng_core::table::{EnclaveTable, Platform, StdPlatform};
use seng_core::{Category, Measurement};

/// Retired memory is kept until the test ends, standing in for a grace period longer than any
/// reader's critical section.
#[derive(Default)]
struct Deferring {
    retired: Mutex<Vec<(usize, Layout)>>,
}

// SAFETY: alloc/free delegate to the system allocator; retire never frees while readers run.
unsafe impl Platform for Deferring {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        StdPlatform.alloc(layout)
    }
    unsafe fn retire(&self, ptr: NonNull<u8>, layout: Layout) {
        self.retired.lock().unwrap().push((ptr.as_ptr() as usize, layout));
    }
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        unsafe { StdPlatform.free(ptr, layout) }
    }
}

impl Drop for Deferring {
    fn drop(&mut self) {
        for (ptr, layout) in self.retired.get_mut().unwrap().drain(..) {
            unsafe { StdPlatform.free(NonNull::new(ptr as *mut u8).unwrap(), layout) }
        }
    }
}

/// Registration `version` of enclave `i`: app, host and category all encode (i, version), so a
/// reader can tell a consistent entry from a torn one.
fn entry(i: u32, version: u32) -> (IpAddr, Measurement, IpAddr, Category) {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i));
    let mut app = [0u8; 32];
    app[..4].copy_from_slice(&i.to_be_bytes());
    app[4..8].copy_from_slice(&version.to_be_bytes());
    let host = IpAddr::V4(Ipv4Addr::from(version));
    let cat = Category::new(format!("v{version}").as_bytes()).unwrap();
    (ip, Measurement(app), host, cat)
}

#[test]
fn readers_see_consistent_entries_during_churn() {
    const ENCLAVES: u32 = 2000;
    let table = EnclaveTable::new(Deferring::default(), ENCLAVES as usize, 42).unwrap();
    let stop = AtomicBool::new(false);
    let lookups = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..ENCLAVES {
                        let (ip, ..) = entry(i, 0);
                        if let Some(e) = table.lookup(&ip) {
                            let app = e.app().0;
                            assert_eq!(app[..4], i.to_be_bytes(), "entry of another enclave");
                            let version = u32::from_be_bytes(app[4..8].try_into().unwrap());
                            let (_, _, host, cat) = entry(i, version);
                            assert_eq!(e.host(), host, "host torn from app");
                            let cats = e.categories();
                            assert!(cats.is_empty() || cats == [cat], "categories torn: {cats:?}");
                            n += 1;
                        }
                    }
                }
                lookups.fetch_add(n, Ordering::Relaxed);
            });
        }
        for round in 0..20u32 {
            for i in 0..ENCLAVES {
                let (ip, app, host, cat) = entry(i, round);
                // SAFETY: this thread is the only writer; retire defers frees.
                unsafe {
                    table.register(ip, OriginId::LOCAL, &app, host, &[]).unwrap();
                    table.attach_category(OriginId::LOCAL, &app, &cat).unwrap();
                    if i % 7 == round % 7 {
                        table.unregister(&ip).unwrap();
                    }
                }
            }
            if round % 5 == 4 {
                // SAFETY: as above.
                unsafe { table.flush() };
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(lookups.load(Ordering::Relaxed) > 0, "readers ran");
}
