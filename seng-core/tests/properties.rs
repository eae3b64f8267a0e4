// SPDX-License-Identifier: GPL-2.0-only
//! Property tests: rule text ↔ rule ↔ matchinfo round trips, the match decision against a
//! straightforward reference, and the enclave table against a HashMap model.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use seng_core::rule::{Cond, Side};
use seng_core::origin::{OriginId, OriginSet};
use seng_core::table::{LocalTable, Registered, TableError, Unregistered, MAX_CATEGORIES_PER_APP};
use seng_core::{decide, Category, EnclaveMeta, Family, HostMask, Measurement, Rule, SengMtInfo};

const CATEGORY_NAMES: &[&str] = &["Browser", "Mail", "VPN", "My App", "web-2_0", "x\"y", "Bürosoftware", "12345678901234567890"];

fn measurement(i: u8) -> Measurement {
    let mut m = [0u8; 32];
    m[0] = i;
    m[31] = i.wrapping_mul(7);
    Measurement(m)
}

fn category(i: usize) -> Category {
    CATEGORY_NAMES[i % CATEGORY_NAMES.len()].parse().unwrap()
}

/// Small pools, so that generated rules and metadata collide often enough to match.
fn host_addr(family: Family, i: u8) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(10, 0, i >> 4, i & 0x0f)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(i >> 4), 0, 0, 0, u16::from(i & 0x0f))),
    }
}

fn arb_family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
}

fn arb_host(family: Family) -> impl Strategy<Value = HostMask> {
    let max = 8 * family.addr_len() as u8;
    (any::<u8>(), 0..=max, any::<bool>()).prop_map(move |(i, len, mapped)| {
        let addr = match (family, mapped) {
            // IPv6 rules over IPv4 hosts use the mapped form.
            (Family::Ipv6, true) => match host_addr(Family::Ipv4, i) {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            },
            _ => host_addr(family, i),
        };
        HostMask::with_prefix(addr, len)
    })
}

fn arb_cond<T: std::fmt::Debug + Clone>(value: impl Strategy<Value = T>) -> impl Strategy<Value = Option<Cond<T>>> {
    proptest::option::of((value, any::<bool>()).prop_map(|(value, negated)| Cond { value, negated }))
}

fn arb_side(family: Family) -> impl Strategy<Value = Side> {
    (
        arb_cond((0u8..4).prop_map(measurement)),
        arb_cond((0..CATEGORY_NAMES.len()).prop_map(category)),
        arb_cond(arb_host(family)),
    )
        .prop_map(|(app, cat, host)| Side { app, cat, host })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    arb_family()
        .prop_flat_map(|family| (Just(family), arb_side(family), arb_side(family)))
        .prop_map(|(family, src, dst)| Rule { family, src, dst })
        .prop_filter("a rule needs an option", |r| r.check().is_ok())
}

/// Splits save text into words, undoing the quoting of category names.
fn save_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.extend(chars.next()),
                    '"' => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

#[derive(Clone, Debug)]
struct Meta {
    app: Measurement,
    host: IpAddr,
    categories: Vec<Category>,
}

impl EnclaveMeta for Meta {
    fn app(&self) -> &Measurement {
        &self.app
    }
    fn host(&self) -> IpAddr {
        self.host
    }
    fn has_category_field(&self, field: &[u8; 21]) -> bool {
        self.categories.iter().any(|c| c.eq_field(field))
    }
}

fn arb_meta() -> impl Strategy<Value = Option<Meta>> {
    proptest::option::of(
        (0u8..4, arb_family(), any::<u8>(), proptest::collection::vec(0..CATEGORY_NAMES.len(), 0..3)).prop_map(
            |(app, family, host, cats)| Meta {
                app: measurement(app),
                host: host_addr(family, host),
                categories: cats.into_iter().map(category).collect(),
            },
        ),
    )
}

/// Host containment written independently of seng-core: integer arithmetic on the rule's family.
fn reference_contains(rule: &HostMask, host: IpAddr) -> bool {
    let as_u128 = |a: IpAddr| match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let host = match (rule.family(), host) {
        (Family::Ipv4, IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        (Family::Ipv6, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (_, h) => h,
    };
    (as_u128(rule.addr()) ^ as_u128(host)) & as_u128(rule.mask()) == 0
}

fn reference_side(side: &Side, meta: Option<&Meta>) -> bool {
    if side.is_empty() {
        return true;
    }
    let Some(m) = meta else { return false };
    let app_ok = side.app.is_none_or(|c| (m.app == c.value) != c.negated);
    let cat_ok = side.cat.is_none_or(|c| m.categories.contains(&c.value) != c.negated);
    let host_ok = side.host.is_none_or(|c| reference_contains(&c.value, m.host) != c.negated);
    app_ok && cat_ok && host_ok
}

proptest! {
    #[test]
    fn save_text_round_trips(rule in arb_rule()) {
        let text = rule.save_form().to_string();
        let words = save_words(&text);
        let parsed = Rule::parse_args(words.iter().map(String::as_str), rule.family);
        prop_assert_eq!(parsed, Ok(rule), "{}", text);
    }

    #[test]
    fn matchinfo_round_trips(rule in arb_rule()) {
        let info = SengMtInfo::from(&rule);
        prop_assert_eq!(info.validate(), Ok(()));
        prop_assert_eq!(info.to_rule(rule.family), Ok(rule));
        prop_assert_eq!(SengMtInfo::from_bytes(info.as_bytes()), Ok(info));
    }

    #[test]
    fn any_blob_is_safe_and_canonicalises(bytes in proptest::collection::vec(any::<u8>(), 180), family in arb_family()) {
        let info = SengMtInfo::from_bytes(&bytes).unwrap();
        if let Ok(rule) = info.to_rule(family) {
            let canonical = SengMtInfo::from(&rule);
            prop_assert_eq!(canonical.to_rule(family), Ok(rule));
        } else {
            prop_assert!(info.validate().is_err());
        }
    }

    #[test]
    fn decision_agrees_with_reference(rule in arb_rule(), src in arb_meta(), dst in arb_meta()) {
        let info = SengMtInfo::from(&rule);
        let want = reference_side(&rule.src, src.as_ref()) && reference_side(&rule.dst, dst.as_ref());
        prop_assert_eq!(decide(&info, rule.family, src.as_ref(), dst.as_ref()), want);
    }

    #[test]
    fn decision_through_table_agrees(rule in arb_rule(), src in arb_meta(), dst in arb_meta()) {
        let mut table = LocalTable::new(4).unwrap();
        let src_ip: IpAddr = "192.168.28.10".parse().unwrap();
        let dst_ip: IpAddr = "fd00:28::20".parse().unwrap();
        for (ip, meta) in [(src_ip, &src), (dst_ip, &dst)] {
            if let Some(m) = meta {
                table.register(ip, &m.app, m.host, &m.categories).unwrap();
            }
        }
        // Registration unions categories per app: the reference sees what the table holds.
        let seen = |ip: IpAddr, meta: &Option<Meta>| meta.as_ref().map(|m| Meta {
            categories: table.lookup(&ip).unwrap().categories().to_vec(),
            ..m.clone()
        });
        let (src_seen, dst_seen) = (seen(src_ip, &src), seen(dst_ip, &dst));
        let want = reference_side(&rule.src, src_seen.as_ref()) && reference_side(&rule.dst, dst_seen.as_ref());
        let info = SengMtInfo::from(&rule);
        prop_assert_eq!(seng_core::match_packet(&info, rule.family, &table, &src_ip, &dst_ip), want);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Register { ip: usize, app: u8, host: u8, cats: Vec<usize> },
    Unregister { ip: usize },
    Attach { app: u8, cat: usize },
    Detach { app: u8, cat: usize },
    Flush,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24usize, 0u8..5, 0u8..4, proptest::collection::vec(0..CATEGORY_NAMES.len(), 0..3))
            .prop_map(|(ip, app, host, cats)| Op::Register { ip, app, host, cats }),
        3 => (0..24usize).prop_map(|ip| Op::Unregister { ip }),
        3 => (0u8..5, 0..CATEGORY_NAMES.len()).prop_map(|(app, cat)| Op::Attach { app, cat }),
        2 => (0u8..5, 0..CATEGORY_NAMES.len()).prop_map(|(app, cat)| Op::Detach { app, cat }),
        1 => Just(Op::Flush),
    ]
}

fn pool_ip(i: usize) -> IpAddr {
    if i % 3 == 0 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x28, 0, 0, 0, 0, 0, i as u16))
    } else {
        // Same first octet for all: the original's worst case.
        IpAddr::V4(Ipv4Addr::new(192, 168, 28, i as u8))
    }
}

/// The table's contract, written plainly.
#[derive(Default)]
struct Model {
    enclaves: HashMap<IpAddr, (Measurement, IpAddr)>,
    categories: HashMap<Measurement, Vec<Category>>,
}

impl Model {
    fn refs(&self, app: &Measurement) -> usize {
        self.enclaves.values().filter(|(a, _)| a == app).count()
    }

    fn drop_app_if_unused(&mut self, app: &Measurement) {
        if self.refs(app) == 0 {
            self.categories.remove(app);
        }
    }

    fn union(&self, app: &Measurement, extra: &[Category]) -> Result<Vec<Category>, TableError> {
        let mut cats = self.categories.get(app).cloned().unwrap_or_default();
        for c in extra {
            if !cats.contains(c) {
                cats.push(*c);
            }
        }
        if cats.len() > MAX_CATEGORIES_PER_APP {
            return Err(TableError::TooManyCategories);
        }
        Ok(cats)
    }

    fn register(&mut self, ip: IpAddr, app: Measurement, host: IpAddr, extra: &[Category], capacity: usize) -> Result<Registered, TableError> {
        let previous = self.enclaves.get(&ip).copied();
        if previous.is_none() && self.enclaves.len() >= capacity {
            return Err(TableError::Full { capacity });
        }
        let cats = self.union(&app, extra)?;
        self.categories.insert(app, cats);
        self.enclaves.insert(ip, (app, host));
        Ok(match previous {
            None => Registered::New,
            Some((a, h)) if a == app && h == host => Registered::Unchanged,
            Some((a, h)) => {
                self.drop_app_if_unused(&a);
                Registered::Replaced { app: a, host: h, origin: OriginId::LOCAL }
            }
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_behaves_like_model(ops in proptest::collection::vec(arb_op(), 1..60)) {
        const CAPACITY: usize = 12;
        let mut table = LocalTable::new(CAPACITY).unwrap();
        let mut model = Model::default();
        for op in &ops {
            match op {
                Op::Register { ip, app, host, cats } => {
                    let cats: Vec<Category> = cats.iter().map(|&c| category(c)).collect();
                    // Hosts of both families on enclaves of both: the four node layouts.
                    let host_family = if *host % 2 == 0 { Family::Ipv4 } else { Family::Ipv6 };
                    let (ip, app, host) = (pool_ip(*ip), measurement(*app), host_addr(host_family, *host));
                    let got = table.register(ip, &app, host, &cats);
                    prop_assert_eq!(got, model.register(ip, app, host, &cats, CAPACITY), "{:?}", op);
                }
                Op::Unregister { ip } => {
                    let ip = pool_ip(*ip);
                    let want = match model.enclaves.remove(&ip) {
                        Some((app, host)) => {
                            model.drop_app_if_unused(&app);
                            Ok(Unregistered { app, host, origin: OriginId::LOCAL })
                        }
                        None => Err(TableError::NotRegistered),
                    };
                    prop_assert_eq!(table.unregister(&ip), want, "{:?}", op);
                }
                Op::Attach { app, cat } => {
                    let (app, cat) = (measurement(*app), category(*cat));
                    let want = match model.categories.get_mut(&app) {
                        None => Err(TableError::UnknownApp),
                        Some(cats) if cats.contains(&cat) => Ok(false),
                        Some(cats) => { cats.push(cat); Ok(true) }
                    };
                    prop_assert_eq!(table.attach_category(&app, &cat), want, "{:?}", op);
                }
                Op::Detach { app, cat } => {
                    let (app, cat) = (measurement(*app), category(*cat));
                    let want = match model.categories.get_mut(&app) {
                        None => Err(TableError::UnknownApp),
                        Some(cats) => match cats.iter().position(|c| *c == cat) {
                            None => Err(TableError::CategoryNotAttached),
                            Some(i) => { cats.remove(i); Ok(()) }
                        },
                    };
                    prop_assert_eq!(table.detach_category(&app, &cat), want, "{:?}", op);
                }
                Op::Flush => {
                    table.flush();
                    model = Model::default();
                }
            }
            // After every step, every observable agrees.
            for i in 0..24 {
                let ip = pool_ip(i);
                let got = table.lookup(&ip).map(|e| (*e.app(), e.host(), e.categories().to_vec()));
                let want = model.enclaves.get(&ip).map(|(a, h)| (*a, *h, model.categories[a].clone()));
                prop_assert_eq!(got, want, "lookup {} after {:?}", ip, op);
            }
            let stats = table.stats();
            prop_assert_eq!(stats.enclaves, model.enclaves.len());
            prop_assert_eq!(stats.apps, model.categories.len());
            let mut walked: Vec<IpAddr> = table.enclaves_from(0).map(|e| e.addr()).collect();
            walked.sort();
            let mut want: Vec<IpAddr> = model.enclaves.keys().copied().collect();
            want.sort();
            prop_assert_eq!(walked, want);
            for app in table.apps() {
                prop_assert_eq!(app.enclaves(), model.refs(app.measurement()));
                prop_assert_eq!(app.categories(), model.categories[app.measurement()].as_slice());
            }
        }
    }
}

proptest! {
    #[test]
    fn addr_set_is_a_set(ips in proptest::collection::vec(0..64usize, 0..40), probe in proptest::collection::vec(0..64usize, 0..20)) {
        use seng_core::table::{AddrSet, StdPlatform};
        let mut set = AddrSet::with_capacity(StdPlatform, 40, 9).unwrap();
        let mut model = std::collections::HashSet::new();
        for &i in &ips {
            set.insert(pool_ip(i)).unwrap();
            model.insert(pool_ip(i));
        }
        prop_assert_eq!(set.len(), model.len());
        for &i in ips.iter().chain(&probe) {
            prop_assert_eq!(set.contains(&pool_ip(i)), model.contains(&pool_ip(i)));
        }
    }

    #[test]
    fn changed_in_names_dropped_and_reassigned(ops in proptest::collection::vec((0..16usize, 0u8..3, proptest::option::of(0u8..3)), 0..16)) {
        use seng_core::table::{AddrSet, StdPlatform};
        let mut old = LocalTable::new(32).unwrap();
        let mut new = LocalTable::new(32).unwrap();
        let host = host_addr(Family::Ipv4, 1);
        // Each op: enclave i with app a in the old table, and app b (or absent) in the new one.
        let mut want = std::collections::HashSet::new();
        for &(i, a, b) in &ops {
            let ip = pool_ip(i);
            if old.lookup(&ip).is_some() || new.lookup(&ip).is_some() {
                continue;
            }
            old.register(ip, &measurement(a), host, &[]).unwrap();
            if let Some(b) = b {
                new.register(ip, &measurement(b), host, &[]).unwrap();
            }
            if b != Some(a) {
                want.insert(ip);
            }
        }
        let mut cut = AddrSet::with_capacity(StdPlatform, old.len(), 3).unwrap();
        old.changed_in(&new, &OriginSet::of(OriginId::LOCAL), |ip| cut.insert(ip).unwrap());
        prop_assert_eq!(cut.len(), want.len());
        for ip in &want {
            prop_assert!(cut.contains(ip));
        }
    }
}
