// SPDX-License-Identifier: GPL-2.0-only
//! What the agent knows, without any I/O: the key layout under the prefix, the values, the
//! local part and what of it etcd holds, the other gateways' parts and which of them wins an
//! address. The loop in `super` feeds it what the kernel and etcd say and performs what it
//! decides.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use seng_nl::{Category, Event, GatewayName, Measurement, Operation, Origin, Registration};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// The categories an application may have in the module (its per-application limit).
const MAX_CATEGORIES: usize = 32;

/// What the module holds for one enclave, apart from its address and origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The application measurement.
    pub app: Measurement,
    /// The untrusted host.
    pub host: IpAddr,
}

/// One origin's part of the table: enclaves and the categories of their applications.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// Enclaves by address.
    pub enclaves: BTreeMap<IpAddr, Entry>,
    /// The categories of each application that has an enclave, in a canonical order.
    pub apps: BTreeMap<Measurement, Vec<Category>>,
}

impl Part {
    /// The part made of dumped registrations (each carries its application's categories).
    pub fn from_registrations<'r>(registrations: impl IntoIterator<Item = &'r Registration>) -> Part {
        let mut part = Part::default();
        for r in registrations {
            part.enclaves.insert(r.addr, Entry { app: r.app, host: r.host });
            part.apps.insert(r.app, canonical(&r.categories));
        }
        part
    }
}

/// Categories sorted and without repeats, so that equal sets compare equal.
pub fn canonical(categories: &[Category]) -> Vec<Category> {
    let mut set = categories.to_vec();
    set.sort();
    set.dedup();
    set
}

/// The value of an enclave key.
#[derive(Serialize, Deserialize)]
struct EnclaveValue<'v> {
    /// Borrowed from the value when it has no escapes, as it never has when an agent wrote it:
    /// a snapshot decodes every remote enclave.
    #[serde(borrow)]
    app: Cow<'v, str>,
    host: IpAddr,
}

/// The value of an application key.
#[derive(Serialize, Deserialize)]
struct AppValue {
    categories: Vec<String>,
}

/// A key under the prefix, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// `<gw>/owner`: the gateway's agent is alive (the key lives on its lease).
    Owner(GatewayName),
    /// `<gw>/enclave/<addr>`.
    Enclave(GatewayName, IpAddr),
    /// `<gw>/app/<64 hex>`.
    App(GatewayName, Measurement),
}

impl Key {
    /// The gateway whose key it is.
    pub fn gateway(&self) -> &GatewayName {
        match self {
            Key::Owner(gw) | Key::Enclave(gw, _) | Key::App(gw, _) => gw,
        }
    }
}

/// A change that etcd's side of the local part needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Put this value (on the agent's lease).
    Put(String, String),
    /// Delete the key.
    Delete(String),
}

/// The key layout: `<prefix><gateway>/owner`, `.../enclave/<addr>`, `.../app/<hex>`.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
    me: GatewayName,
}

impl Layout {
    /// The layout of gateway `me` under `prefix` (which ends with `/`).
    pub fn new(prefix: &str, me: GatewayName) -> Layout {
        Layout { prefix: prefix.to_owned(), me }
    }

    /// The prefix every gateway's keys start with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This gateway's name.
    pub fn me(&self) -> &GatewayName {
        &self.me
    }

    /// This gateway's owner key.
    pub fn owner(&self) -> String {
        format!("{}{}/owner", self.prefix, self.me)
    }

    fn enclave(&self, addr: &IpAddr) -> String {
        format!("{}{}/enclave/{addr}", self.prefix, self.me)
    }

    fn app(&self, app: &Measurement) -> String {
        format!("{}{}/app/{app}", self.prefix, self.me)
    }

    /// Decodes a key found under the prefix; the error says what is wrong with it.
    pub fn parse(&self, key: &[u8]) -> Result<Key, String> {
        if let Some(key) = self.parse_well_formed(key) {
            return Ok(key);
        }
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_owned())?;
        let rest = key.strip_prefix(self.prefix.as_str()).ok_or("the key is outside the prefix")?;
        let (gw, rest) = rest.split_once('/').ok_or("no `/` after the gateway's name")?;
        let gw = GatewayName::new(gw.as_bytes()).map_err(|e| format!("bad gateway name: {e}"))?;
        match rest.split_once('/') {
            None if rest == "owner" => Ok(Key::Owner(gw)),
            Some(("enclave", addr)) => addr.parse().map(|a| Key::Enclave(gw, a)).map_err(|_| format!("bad enclave address {addr:?}")),
            Some(("app", hex)) => Measurement::parse_hex(hex).map(|m| Key::App(gw, m)).map_err(|e| format!("bad application measurement: {e}")),
            _ => Err(format!("unknown key kind {rest:?} (owner, enclave/ADDR or app/HEX)")),
        }
    }

    /// A well-formed key decoded as bytes, without checking it as UTF-8 and splitting it as a
    /// string, which took half of [`Layout::parse`]'s time: a snapshot decodes every key. What
    /// decodes here is ASCII past the prefix, and decodes alike there; anything else is `None`,
    /// for `parse` to say what is wrong with it.
    fn parse_well_formed(&self, key: &[u8]) -> Option<Key> {
        let (gw, rest) = self.split(key)?;
        let gw = GatewayName::new(gw).ok()?;
        if let Some(addr) = rest.strip_prefix(b"enclave/") {
            parse_addr(addr).map(|a| Key::Enclave(gw, a))
        } else if let Some(hex) = rest.strip_prefix(b"app/") {
            Measurement::parse_hex_bytes(hex).map(|m| Key::App(gw, m))
        } else {
            (rest == b"owner").then_some(Key::Owner(gw))
        }
    }

    /// The gateway's name of an enclave key, undecoded (`parse` decodes and checks it): what
    /// counting a snapshot page's enclaves by gateway needs.
    pub fn enclave_gateway<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        let (gw, rest) = self.split(key)?;
        rest.starts_with(b"enclave/").then_some(gw)
    }

    /// A key under the prefix split at the `/` after the gateway's name, as bytes.
    fn split<'k>(&self, key: &'k [u8]) -> Option<(&'k [u8], &'k [u8])> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let slash = rest.iter().position(|b| *b == b'/')?;
        Some((&rest[..slash], &rest[slash + 1..]))
    }
}

/// Decodes an enclave key's value.
pub fn parse_enclave(value: &[u8]) -> Result<Entry, String> {
    if let Some(entry) = parse_enclave_as_written(value) {
        return Ok(entry);
    }
    // Checked as UTF-8 once, not string by string as `from_slice` does.
    let value = std::str::from_utf8(value).map_err(|e| format!("bad enclave value: {e}"))?;
    let v: EnclaveValue = serde_json::from_str(value).map_err(|e| format!("bad enclave value: {e}"))?;
    let app = Measurement::parse_hex(&v.app).map_err(|e| format!("bad enclave value: app: {e}"))?;
    Ok(Entry { app, host: v.host })
}

/// An enclave value exactly as [`enclave_value`] writes it, `{"app":"<hex>","host":"<address>"}`
/// (every agent's), without serde_json, which takes twice as long: a snapshot decodes
/// every remote enclave. Anything else is `None`, for serde_json to decode or to say what is
/// wrong with it: neither hex digits nor an address can hold a quote or a JSON escape, so what
/// matches here is what serde_json would decode.
fn parse_enclave_as_written(value: &[u8]) -> Option<Entry> {
    let (hex, rest) = value.strip_prefix(br#"{"app":""#)?.split_at_checked(2 * size_of::<Measurement>())?;
    let host = rest.strip_prefix(br#"","host":""#)?.strip_suffix(br#""}"#)?;
    let app = Measurement::parse_hex_bytes(hex)?;
    let host = parse_addr(host)?;
    Some(Entry { app, host })
}

/// An address in a key or value. IPv4 as `Display` writes it (every agent's) is decoded here
/// in two thirds of the time std's parser takes, which decodes anything else (or refuses it):
/// a snapshot decodes two addresses per remote enclave.
fn parse_addr(text: &[u8]) -> Option<IpAddr> {
    match parse_ipv4_as_written(text) {
        Some(addr) => Some(IpAddr::V4(addr)),
        None => std::str::from_utf8(text).ok()?.parse().ok(),
    }
}

/// Four decimal octets without leading zeros: a subset of what std's parser accepts, decoded
/// alike. One pass, byte by byte: splitting at the dots took as long as std's parser.
fn parse_ipv4_as_written(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut done, mut value, mut digits) = (0, 0u32, 0);
    for b in text {
        if *b == b'.' {
            if digits == 0 || done == 3 {
                return None;
            }
            octets[done] = value as u8;
            (done, value, digits) = (done + 1, 0, 0);
            continue;
        }
        let d = b.wrapping_sub(b'0');
        // A digit after a leading zero, or a value past 255 (so at most three digits).
        if d > 9 || (digits == 1 && value == 0) {
            return None;
        }
        value = value * 10 + u32::from(d);
        digits += 1;
        if value > 255 {
            return None;
        }
    }
    if done != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// Decodes an application key's value.
pub fn parse_app(value: &[u8]) -> Result<Vec<Category>, String> {
    let v: AppValue = serde_json::from_slice(value).map_err(|e| format!("bad application value: {e}"))?;
    let categories = v
        .categories
        .iter()
        .map(|c| Category::new(c.as_bytes()).map_err(|e| format!("bad application value: category {c:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let categories = canonical(&categories);
    if categories.len() > MAX_CATEGORIES {
        return Err(format!("bad application value: {} categories, at most {MAX_CATEGORIES}", categories.len()));
    }
    Ok(categories)
}

fn enclave_value(entry: &Entry) -> String {
    serde_json::to_string(&EnclaveValue { app: Cow::Owned(entry.app.to_string()), host: entry.host }).unwrap_or_default()
}

fn app_value(categories: &[Category]) -> String {
    serde_json::to_string(&AppValue { categories: categories.iter().map(|c| c.as_str().to_owned()).collect() }).unwrap_or_default()
}

/// The local part and what etcd holds of it, with what changed since the last writes.
#[derive(Debug)]
pub struct Publisher {
    layout: Layout,
    local: Part,
    published: Part,
    dirty_enclaves: BTreeSet<IpAddr>,
    dirty_apps: BTreeSet<Measurement>,
    /// Keys under this gateway's name that etcd holds but that are not the agent's own
    /// writes (another lease's, or undecodable): deleted unless a write replaces them.
    strays: BTreeSet<String>,
    /// The local enclaves of each application, kept with `local`: an application's enclave to
    /// read its categories from, and its last enclave's going, without a pass over them all.
    by_app: BTreeMap<Measurement, BTreeSet<IpAddr>>,
    /// Local applications that may have no enclave left, for [`Publisher::drop_empty_apps`].
    emptied: BTreeSet<Measurement>,
}

impl Publisher {
    /// Nothing local, nothing published.
    pub fn new(layout: Layout) -> Publisher {
        Publisher {
            layout,
            local: Part::default(),
            published: Part::default(),
            dirty_enclaves: BTreeSet::new(),
            dirty_apps: BTreeSet::new(),
            strays: BTreeSet::new(),
            by_app: BTreeMap::new(),
            emptied: BTreeSet::new(),
        }
    }

    /// The local part as last read from the module.
    pub fn local(&self) -> &Part {
        &self.local
    }

    /// Whether the local part holds `addr` (a remote entry must then not be installed there).
    pub fn is_local(&self, addr: &IpAddr) -> bool {
        self.local.enclaves.contains_key(addr)
    }

    /// The module's local entry at `addr` is `entry`.
    pub fn set_enclave(&mut self, addr: IpAddr, entry: Option<Entry>) {
        let old = match entry {
            Some(e) => self.local.enclaves.insert(addr, e),
            None => self.local.enclaves.remove(&addr),
        };
        if old == entry {
            return;
        }
        self.dirty_enclaves.insert(addr);
        if let Some(old) = old {
            if let Some(addrs) = self.by_app.get_mut(&old.app) {
                addrs.remove(&addr);
                if addrs.is_empty() {
                    self.by_app.remove(&old.app);
                    self.emptied.insert(old.app);
                }
            }
        }
        if let Some(e) = entry {
            self.by_app.entry(e.app).or_default().insert(addr);
        }
    }

    /// The module's local application `app` has `categories`, or no enclave (`None`).
    pub fn set_app(&mut self, app: Measurement, categories: Option<Vec<Category>>) {
        let changed = match categories {
            Some(c) => {
                if !self.by_app.contains_key(&app) {
                    self.emptied.insert(app);
                }
                let c = canonical(&c);
                self.local.apps.insert(app, c.clone()).as_ref() != Some(&c)
            }
            None => self.local.apps.remove(&app).is_some(),
        };
        if changed {
            self.dirty_apps.insert(app);
        }
    }

    /// The applications' whose last local enclave went: dropped from the local part.
    pub fn drop_empty_apps(&mut self) {
        for app in std::mem::take(&mut self.emptied) {
            if !self.by_app.contains_key(&app) {
                self.set_app(app, None);
            }
        }
    }

    /// A local enclave of `app`, to read its categories from the module.
    pub fn enclave_of(&self, app: &Measurement) -> Option<IpAddr> {
        self.by_app.get(app).and_then(|addrs| addrs.first()).copied()
    }

    /// The whole local part as the module dumped it.
    pub fn replace_local(&mut self, part: Part) {
        self.dirty_enclaves.extend(self.local.enclaves.keys().chain(part.enclaves.keys()).copied());
        self.dirty_apps.extend(self.local.apps.keys().chain(part.apps.keys()).copied());
        self.by_app.clear();
        for (addr, e) in &part.enclaves {
            self.by_app.entry(e.app).or_default().insert(*addr);
        }
        self.emptied = part.apps.keys().filter(|a| !self.by_app.contains_key(a)).copied().collect();
        self.local = part;
    }

    /// What etcd holds under this gateway's name, read in a snapshot: the keys on the agent's
    /// lease are its own writes; the others are strays.
    pub fn replace_published(&mut self, published: Part, strays: BTreeSet<String>) {
        self.dirty_enclaves.extend(self.published.enclaves.keys().chain(published.enclaves.keys()).copied());
        self.dirty_apps.extend(self.published.apps.keys().chain(published.apps.keys()).copied());
        self.published = published;
        self.strays = strays;
    }

    /// etcd holds nothing of the agent's (a new lease took the place of one that expired).
    pub fn forget_published(&mut self) {
        self.replace_published(Part::default(), BTreeSet::new());
    }

    /// Key `key` of this gateway changed in etcd by someone else's hand (written, or
    /// deleted): etcd no longer holds what the agent published there, so it is written again
    /// (or deleted, if the local part has nothing there).
    pub fn overwritten(&mut self, key: &str, written: bool) {
        match self.layout.parse(key.as_bytes()) {
            Ok(Key::Enclave(_, addr)) => {
                self.published.enclaves.remove(&addr);
                self.dirty_enclaves.insert(addr);
            }
            Ok(Key::App(_, app)) => {
                self.published.apps.remove(&app);
                self.dirty_apps.insert(app);
            }
            Ok(Key::Owner(_)) | Err(_) => return,
        }
        if written {
            self.strays.insert(key.to_owned());
        }
    }

    /// Whether writes are pending.
    pub fn is_dirty(&self) -> bool {
        !self.dirty_enclaves.is_empty() || !self.dirty_apps.is_empty() || !self.strays.is_empty()
    }

    /// The writes that bring etcd to the local part, at most `limit` of them, in an order where
    /// a peer never sees an enclave of an application whose categories are not there yet:
    /// application puts, then enclave puts and deletes, then application deletes, then strays.
    /// They count as published once [`Publisher::published`] is called with them.
    pub fn take_writes(&mut self, limit: usize) -> Vec<Write> {
        let mut writes = Vec::new();
        let app_puts: Vec<Measurement> =
            self.dirty_apps.iter().filter(|a| self.local.apps.get(a).is_some_and(|c| self.published.apps.get(a) != Some(c))).copied().collect();
        for app in app_puts.into_iter().take(limit) {
            writes.push(Write::Put(self.layout.app(&app), app_value(self.local.apps.get(&app).map_or(&[][..], Vec::as_slice))));
        }
        // Only as far as this call's writes go: a restore dirties every enclave, and a pass
        // over them all per transaction would make publishing it quadratic.
        let mut clean = Vec::new();
        for addr in &self.dirty_enclaves {
            if writes.len() >= limit {
                break;
            }
            match (self.local.enclaves.get(addr), self.published.enclaves.get(addr)) {
                (Some(l), p) if p != Some(l) => writes.push(Write::Put(self.layout.enclave(addr), enclave_value(l))),
                (None, Some(_)) => writes.push(Write::Delete(self.layout.enclave(addr))),
                _ => clean.push(*addr),
            }
        }
        for addr in clean {
            self.dirty_enclaves.remove(&addr);
        }
        if writes.len() >= limit {
            return writes;
        }
        let apps: Vec<Measurement> = self.dirty_apps.iter().copied().collect();
        for app in apps {
            if writes.len() >= limit {
                return writes;
            }
            match (self.local.apps.get(&app), self.published.apps.get(&app)) {
                (None, Some(_)) => writes.push(Write::Delete(self.layout.app(&app))),
                (Some(l), Some(p)) if l == p => {
                    self.dirty_apps.remove(&app);
                }
                (None, None) => {
                    self.dirty_apps.remove(&app);
                }
                _ => {}
            }
        }
        let written: BTreeSet<&String> = writes.iter().map(|w| match w {
            Write::Put(k, _) | Write::Delete(k) => k,
        }).collect();
        let strays: Vec<String> = self.strays.iter().filter(|k| !written.contains(k)).cloned().collect();
        for key in strays {
            if writes.len() >= limit {
                break;
            }
            writes.push(Write::Delete(key));
        }
        writes
    }

    /// etcd applied `writes` (from [`Publisher::take_writes`]).
    pub fn published(&mut self, writes: &[Write]) {
        for w in writes {
            let (key, put) = match w {
                Write::Put(k, _) => (k, true),
                Write::Delete(k) => (k, false),
            };
            self.strays.remove(key);
            match self.layout.parse(key.as_bytes()) {
                Ok(Key::Enclave(_, addr)) => settle(&self.local.enclaves, &mut self.published.enclaves, &mut self.dirty_enclaves, addr, put),
                Ok(Key::App(_, app)) => settle(&self.local.apps, &mut self.published.apps, &mut self.dirty_apps, app, put),
                Ok(Key::Owner(_)) | Err(_) => {}
            }
        }
    }
}

/// An applied write of `key`, an enclave or an application (`put`: of its local value): etcd
/// holds the local value, or nothing, and the key is clean once that is what the local part has.
fn settle<K: Ord + Copy, V: Clone + PartialEq>(local: &BTreeMap<K, V>, published: &mut BTreeMap<K, V>, dirty: &mut BTreeSet<K>, key: K, put: bool) {
    match local.get(&key) {
        Some(v) if put => published.insert(key, v.clone()),
        _ => published.remove(&key),
    };
    if local.get(&key) == published.get(&key) {
        dirty.remove(&key);
    }
}

/// An entry a remote gateway wants at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The gateway.
    pub origin: GatewayName,
    /// Application and host.
    pub entry: Entry,
    /// The application's categories as the gateway publishes them, shared with the model: a
    /// snapshot asks for every address's winner.
    pub categories: Rc<[Category]>,
}

impl Wanted {
    /// The registration that installs it.
    pub fn registration(&self, addr: IpAddr) -> Registration {
        Registration { addr, app: self.entry.app, host: self.entry.host, categories: self.categories.to_vec(), origin: self.origin.into() }
    }

    /// Makes `r` the registration that installs it, in the categories' buffer `r` has: a
    /// snapshot registers every remote entry, and allocating each one's categories took a fifth
    /// of the time from the winners to the registrations.
    pub fn refill(&self, addr: IpAddr, r: &mut Registration) {
        (r.addr, r.app, r.host, r.origin) = (addr, self.entry.app, self.entry.host, self.origin.into());
        r.categories.clear();
        r.categories.extend_from_slice(&self.categories);
    }
}

/// One remote gateway's part as etcd holds it.
#[derive(Debug, Default)]
struct RemotePart {
    /// Enclaves with their keys' create revisions. Hashed, not ordered: a snapshot inserts
    /// every entry of every gateway, and nothing needs them in order.
    enclaves: FxHashMap<IpAddr, (Entry, i64)>,
    apps: BTreeMap<Measurement, Rc<[Category]>>,
}

impl RemotePart {
    /// Gateway `gw`'s `entry` of this part, with its application's categories.
    fn wanted(&self, gw: GatewayName, entry: &Entry) -> Wanted {
        Wanted { origin: gw, entry: *entry, categories: self.apps.get(&entry.app).cloned().unwrap_or_else(|| Rc::from([])) }
    }
}

/// The gateways claiming one address, oldest key first; almost always one, held inline.
type Claims = SmallVec<[(i64, GatewayName); 1]>;

/// The other gateways' parts, and for each address which gateways claim it.
#[derive(Debug, Default)]
pub struct Remote {
    parts: BTreeMap<GatewayName, RemotePart>,
    /// Claims by the create revision of their keys: the oldest claim wins an address, so that a
    /// later duplicate cannot take an address from the gateway that had it first.
    claims: FxHashMap<IpAddr, Claims>,
}

impl Remote {
    /// Nothing known.
    pub fn clear(&mut self) {
        *self = Remote::default();
    }

    /// Room for `additional` more claimed addresses (a snapshot page's keys), so that the map
    /// does not grow by steps, rehashing what it has at each.
    pub fn reserve(&mut self, additional: usize) {
        self.claims.reserve(additional);
    }

    /// Gateway `gw` has `entry` at `addr`, its key created at `create_revision`.
    pub fn put_enclave(&mut self, gw: GatewayName, addr: IpAddr, entry: Entry, create_revision: i64) {
        if let Some((_, old)) = self.parts.entry(gw).or_default().enclaves.insert(addr, (entry, create_revision)) {
            self.unclaim(addr, old, gw);
        }
        let claims = self.claims.entry(addr).or_default();
        let at = claims.partition_point(|c| *c < (create_revision, gw));
        claims.insert(at, (create_revision, gw));
    }

    /// Gateway `gw` no longer has an enclave at `addr`.
    pub fn delete_enclave(&mut self, gw: GatewayName, addr: IpAddr) {
        if let Some(part) = self.parts.get_mut(&gw) {
            if let Some((_, revision)) = part.enclaves.remove(&addr) {
                self.unclaim(addr, revision, gw);
            }
        }
    }

    fn unclaim(&mut self, addr: IpAddr, revision: i64, gw: GatewayName) {
        if let Some(claims) = self.claims.get_mut(&addr) {
            claims.retain(|c| *c != (revision, gw));
            if claims.is_empty() {
                self.claims.remove(&addr);
            }
        }
    }

    /// Gateway `gw`'s application `app` has `categories` (`None`: its key went).
    pub fn set_app(&mut self, gw: GatewayName, app: Measurement, categories: Option<Vec<Category>>) {
        let part = self.parts.entry(gw).or_default();
        match categories {
            Some(c) => {
                part.apps.insert(app, c.into());
            }
            None => {
                part.apps.remove(&app);
            }
        }
    }

    /// The gateway's entry that wins `addr`, if any claims it.
    pub fn winner(&self, addr: &IpAddr) -> Option<Wanted> {
        self.winner_of(addr, self.claims.get(addr)?)
    }

    /// How many addresses some gateway claims.
    pub fn claimed(&self) -> usize {
        self.claims.len()
    }

    /// Room for `additional` more enclaves of gateway `gw` (a snapshot page's), so that its
    /// part does not grow by doubling: under emulation every page a grown table touches costs
    /// a fault and its zeroing.
    pub fn reserve_enclaves(&mut self, gw: GatewayName, additional: usize) {
        self.parts.entry(gw).or_default().enclaves.reserve(additional);
    }

    /// Every claimed address with its winner, by gateway (in the gateways' order), streamed
    /// rather than collected and sorted: a snapshot's list of 100,000 winners was 13 MB of
    /// fresh pages.
    pub fn winners(&self) -> impl Iterator<Item = (IpAddr, Wanted)> + '_ {
        self.winning().map(|(addr, gw, part, entry)| (addr, part.wanted(*gw, entry)))
    }

    /// [`Remote::winners`] without their categories (a lookup each).
    pub fn winning_entries(&self) -> impl Iterator<Item = (IpAddr, GatewayName, Entry)> + '_ {
        self.winning().map(|(addr, gw, _, entry)| (addr, *gw, *entry))
    }

    fn winning(&self) -> impl Iterator<Item = (IpAddr, &GatewayName, &RemotePart, &Entry)> + '_ {
        self.parts.iter().flat_map(move |(gw, part)| {
            part.enclaves.iter().filter_map(move |(addr, (entry, revision))| {
                let wins = self.claims.get(addr).and_then(|c| c.first()) == Some(&(*revision, *gw));
                wins.then_some((*addr, gw, part, entry))
            })
        })
    }

    fn winner_of(&self, addr: &IpAddr, claims: &Claims) -> Option<Wanted> {
        let (_, gw) = claims.first()?;
        let part = self.parts.get(gw)?;
        let (entry, _) = part.enclaves.get(addr)?;
        Some(part.wanted(*gw, entry))
    }

    /// The categories gateway `gw` publishes for `app`.
    pub fn categories(&self, gw: &GatewayName, app: &Measurement) -> Vec<Category> {
        self.parts.get(gw).and_then(|p| p.apps.get(app)).map_or_else(Vec::new, |c| c.to_vec())
    }

    /// The addresses where gateway `gw` has an enclave of `app`, in no particular order.
    pub fn enclaves_of<'a>(&'a self, gw: &GatewayName, app: &'a Measurement) -> impl Iterator<Item = IpAddr> + 'a {
        self.parts.get(gw).into_iter().flat_map(move |p| p.enclaves.iter().filter(move |(_, (e, _))| e.app == *app).map(|(a, _)| *a))
    }
}

/// The echoes of the agent's own replace transactions and flushes that the module's events
/// still have to bring, counted, so that they cause no resync. Those events do not say who made
/// them: while one of the agent's is on its way, someone else's of the same kind is taken for
/// it; the agent's own then counts as someone else's, and the resync it causes reads the table
/// after both, which is all the other one needed. The module echoes every flush and commit,
/// even one that changes nothing, so a count never waits for an echo that does not come.
#[derive(Debug, Default)]
pub struct Echoes {
    replaces: usize,
    flushes: BTreeMap<GatewayName, usize>,
}

impl Echoes {
    /// The agent committed a replace transaction.
    pub fn replaced(&mut self) {
        self.replaces += 1;
    }

    /// The agent flushed gateway `gw`'s entries.
    pub fn flushed(&mut self, gw: GatewayName) {
        *self.flushes.entry(gw).or_default() += 1;
    }

    /// Whether `event` is the echo of one of the agent's replace transactions or flushes
    /// (counted off). Lost events may have held some: none is expected any more, so a late one
    /// causes a resync, which costs a dump but misses nothing.
    pub fn take_own(&mut self, event: &Event) -> bool {
        let count = match event {
            Event::Replaced => &mut self.replaces,
            Event::Change(Operation::Flush { origin: Origin::Gateway(gw) }) => match self.flushes.get_mut(gw) {
                Some(count) => count,
                None => return false,
            },
            Event::Lost => {
                self.forget();
                return false;
            }
            Event::Change(_) => return false,
        };
        let own = *count > 0;
        *count = count.saturating_sub(1);
        own
    }

    /// Expects no echo (the events were lost, or their stream reopened).
    pub fn forget(&mut self) {
        *self = Echoes::default();
    }
}

/// The remote entries the agent installed in the module, by address, with how many each
/// gateway has there: the status file says those counts four times a second, and counting a
/// table of 100,000 entries each time kept every peer busy while a late joiner loaded.
#[derive(Debug, Default)]
pub struct Installed {
    entries: FxHashMap<IpAddr, (GatewayName, Entry)>,
    counts: BTreeMap<GatewayName, usize>,
}

impl Installed {
    /// The gateway and entry installed at `addr`.
    pub fn get(&self, addr: &IpAddr) -> Option<&(GatewayName, Entry)> {
        self.entries.get(addr)
    }

    /// Gateway `gw`'s `entry` is installed at `addr`, in the place of whatever was.
    pub fn insert(&mut self, addr: IpAddr, gw: GatewayName, entry: Entry) {
        if let Some((old, _)) = self.entries.insert(addr, (gw, entry)) {
            self.uncount(old);
        }
        *self.counts.entry(gw).or_default() += 1;
    }

    /// Nothing the agent installed is at `addr` any more.
    pub fn remove(&mut self, addr: &IpAddr) {
        if let Some((old, _)) = self.entries.remove(addr) {
            self.uncount(old);
        }
    }

    fn uncount(&mut self, gw: GatewayName) {
        if let Some(count) = self.counts.get_mut(&gw) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&gw);
            }
        }
    }

    /// Nothing installed.
    pub fn clear(&mut self) {
        *self = Installed::default();
    }

    /// How many entries each gateway has installed (only gateways with some).
    pub fn counts(&self) -> &BTreeMap<GatewayName, usize> {
        &self.counts
    }

    /// Nothing installed, with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Installed {
        Installed { entries: FxHashMap::with_capacity_and_hasher(capacity, Default::default()), counts: BTreeMap::new() }
    }
}

impl FromIterator<(IpAddr, GatewayName, Entry)> for Installed {
    fn from_iter<I: IntoIterator<Item = (IpAddr, GatewayName, Entry)>>(iter: I) -> Installed {
        let iter = iter.into_iter();
        let mut installed = Installed::with_capacity(iter.size_hint().0);
        for (addr, gw, entry) in iter {
            installed.insert(addr, gw, entry);
        }
        installed
    }
}

#[cfg(test)]
mod test {
    use seng_nl::Origin;

    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    fn gw(name: &str) -> GatewayName {
        GatewayName::new(name.as_bytes()).unwrap()
    }

    fn app() -> Measurement {
        Measurement::parse_hex(APP).unwrap()
    }

    fn cat(name: &str) -> Category {
        Category::new(name.as_bytes()).unwrap()
    }

    fn entry(host: &str) -> Entry {
        Entry { app: app(), host: host.parse().unwrap() }
    }

    fn layout() -> Layout {
        Layout::new("/seng/v1/", gw("gw-a"))
    }

    #[test]
    fn addresses_as_std_parses_them() {
        for text in ["0.0.0.0", "10.1.255.9", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1..2.3", "1.2.3.", ".1.2.3", "", "1.2.3.4 ", "1000.1.1.1", "::1", "fe80::1:2", "::ffff:1.2.3.4", "a.b.c.d"] {
            assert_eq!(parse_addr(text.as_bytes()), text.parse().ok(), "{text:?}");
        }
    }

    #[test]
    fn keys_round_trip_and_bad_keys_say_why() {
        let l = layout();
        let addr: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(l.parse(l.owner().as_bytes()), Ok(Key::Owner(gw("gw-a"))));
        assert_eq!(l.parse(l.enclave(&addr).as_bytes()), Ok(Key::Enclave(gw("gw-a"), addr)));
        assert_eq!(l.parse(l.app(&app()).as_bytes()), Ok(Key::App(gw("gw-a"), app())));
        for (key, why) in [
            (&b"/other/gw-b/owner"[..], "outside the prefix"),
            (b"/seng/v1/gw-b", "no `/`"),
            (b"/seng/v1/gw/b/owner", "unknown key kind"),
            (b"/seng/v1/g w/owner", "bad gateway name"),
            (b"/seng/v1/gw-b/enclave/10.0.0.300", "bad enclave address"),
            (b"/seng/v1/gw-b/app/abc", "bad application measurement"),
            (b"/seng/v1/gw-b/app", "unknown key kind"),
            (b"/seng/v1/gw-b/\xff", "not UTF-8"),
            (b"/seng/v1/\xff/owner", "not UTF-8"),
        ] {
            let e = l.parse(key).expect_err(&String::from_utf8_lossy(key));
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn values_round_trip_and_bad_values_say_why() {
        let e = entry("10.0.0.5");
        assert_eq!(parse_enclave(enclave_value(&e).as_bytes()), Ok(e));
        let cats = vec![cat("Browser"), cat("Mail")];
        assert_eq!(parse_app(app_value(&cats).as_bytes()), Ok(cats));
        assert_eq!(parse_app(br#"{"categories":["Mail","Browser","Mail"]}"#), Ok(vec![cat("Browser"), cat("Mail")]));
        for (value, why) in [
            (&b"{"[..], "bad enclave value"),
            (br#"{"app":"zz","host":"10.0.0.5"}"#, "app:"),
            (br#"{"host":"10.0.0.5"}"#, "missing field `app`"),
            (br#"{"app":"d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0","host":"x"}"#, "bad enclave value"),
        ] {
            assert!(parse_enclave(value).unwrap_err().contains(why), "{}", String::from_utf8_lossy(value));
        }
        let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
        assert!(parse_app(serde_json::json!({ "categories": many }).to_string().as_bytes()).unwrap_err().contains("33 categories"));
        assert!(parse_app(br#"{"categories":["123456789012345678901"]}"#).unwrap_err().contains("category"));
        assert!(parse_app(b"[]").unwrap_err().contains("bad application value"));
    }

    #[test]
    fn enclave_values_as_written_decode_as_serde_json_decodes_them() {
        let serde = |value: &str| {
            let v: EnclaveValue = serde_json::from_str(value).unwrap();
            Entry { app: Measurement::parse_hex(&v.app).unwrap(), host: v.host }
        };
        for host in ["10.0.0.5", "fd00::5", "::ffff:10.0.0.5"] {
            let value = enclave_value(&entry(host));
            assert_eq!(parse_enclave_as_written(value.as_bytes()), Some(serde(&value)), "{value}");
        }
        // Written otherwise: left to serde_json, which reads the same entry.
        for value in [
            format!(r#"{{ "app": "{APP}", "host": "10.0.0.5" }}"#),
            format!(r#"{{"host":"10.0.0.5","app":"{APP}"}}"#),
            format!(r#"{{"app":"{APP}","host":"10.0.0.\u0035"}}"#),
            format!(r#"{{"app":"{APP}","host":"10.0.0.5","x":"y"}}"#),
            format!(r#"{{"app":"{APP}","host":"10.0.0.5"}} "#),
        ] {
            assert_eq!(parse_enclave_as_written(value.as_bytes()), None, "{value}");
            assert_eq!(parse_enclave(value.as_bytes()), Ok(entry("10.0.0.5")), "{value}");
        }
        // Wrong as written: serde_json's errors.
        assert!(parse_enclave(format!(r#"{{"app":"{APP}","host":"10.0.0.500"}}"#).as_bytes()).unwrap_err().contains("bad enclave value"));
        assert!(parse_enclave(br#"{"app":"zz","host":"10.0.0.5"}"#).unwrap_err().contains("app:"));
    }

    #[test]
    fn publisher_writes_app_puts_first_and_app_deletes_last() {
        let l = layout();
        let mut p = Publisher::new(l.clone());
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        p.set_enclave(a, Some(entry("10.0.0.5")));
        p.set_app(app(), Some(vec![cat("Mail"), cat("Browser")]));
        let w = p.take_writes(128);
        assert_eq!(w, vec![Write::Put(l.app(&app()), r#"{"categories":["Browser","Mail"]}"#.into()), Write::Put(l.enclave(&a), enclave_value(&entry("10.0.0.5")))]);
        p.published(&w);
        assert!(p.take_writes(128).is_empty());
        assert!(!p.is_dirty());

        p.set_enclave(a, None);
        p.drop_empty_apps();
        let w = p.take_writes(128);
        assert_eq!(w, vec![Write::Delete(l.enclave(&a)), Write::Delete(l.app(&app()))]);
        p.published(&w);
        assert!(!p.is_dirty());
    }

    #[test]
    fn an_app_key_goes_with_its_last_enclave_and_not_before() {
        let l = layout();
        let mut p = Publisher::new(l.clone());
        let other = Measurement([7; 32]);
        let (a1, a2): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
        let of = |app| Entry { app, host: "10.0.0.5".parse().unwrap() };
        fn publish(p: &mut Publisher) -> Vec<Write> {
            p.drop_empty_apps();
            let w = p.take_writes(128);
            p.published(&w);
            assert!(!p.is_dirty());
            w
        }
        p.set_enclave(a1, Some(of(app())));
        p.set_enclave(a2, Some(of(app())));
        p.set_app(app(), Some(vec![cat("Mail")]));
        publish(&mut p);
        // a1 moves from app() to other: app() keeps a2.
        p.set_enclave(a1, Some(of(other)));
        p.set_app(other, Some(vec![]));
        let w = publish(&mut p);
        assert!(!w.contains(&Write::Delete(l.app(&app()))), "{w:?}");
        assert_eq!((p.enclave_of(&app()), p.enclave_of(&other)), (Some(a2), Some(a1)));
        // a2 moves too: app()'s last enclave went.
        p.set_enclave(a2, Some(of(other)));
        assert!(publish(&mut p).contains(&Write::Delete(l.app(&app()))));
        assert_eq!(p.enclave_of(&app()), None);
        assert!(!p.local().apps.contains_key(&app()));
        // An application emptied and given an enclave again before the publish stays.
        p.set_enclave(a1, None);
        p.set_enclave(a2, None);
        p.set_enclave(a2, Some(of(other)));
        assert!(!publish(&mut p).contains(&Write::Delete(l.app(&other))));
        p.set_enclave(a2, None);
        assert_eq!(publish(&mut p), vec![Write::Delete(l.enclave(&a2)), Write::Delete(l.app(&other))]);
        // A dumped part's applications count their enclaves the same way.
        let mut part = Part::default();
        part.enclaves.insert(a1, of(app()));
        part.apps.insert(app(), vec![]);
        part.apps.insert(other, vec![]);
        p.replace_local(part);
        publish(&mut p);
        assert_eq!(p.local().apps.keys().collect::<Vec<_>>(), vec![&app()]);
        p.set_enclave(a1, None);
        assert_eq!(publish(&mut p), vec![Write::Delete(l.enclave(&a1)), Write::Delete(l.app(&app()))]);
    }

    #[test]
    fn publisher_respects_the_limit_and_resumes() {
        let mut p = Publisher::new(layout());
        for i in 0..10u8 {
            p.set_enclave(IpAddr::from([10, 1, 0, i]), Some(entry("10.0.0.5")));
        }
        p.set_app(app(), Some(vec![]));
        let mut total = 0;
        loop {
            let w = p.take_writes(4);
            if w.is_empty() {
                break;
            }
            assert!(w.len() <= 4);
            total += w.len();
            p.published(&w);
        }
        assert_eq!(total, 11);
        // A write that failed is not published: taken again.
        p.set_enclave(IpAddr::from([10, 1, 0, 0]), Some(entry("10.0.0.6")));
        assert_eq!(p.take_writes(4).len(), 1);
        assert_eq!(p.take_writes(4).len(), 1);
    }

    #[test]
    fn publisher_deletes_strays_and_what_a_snapshot_shows_published_but_gone() {
        let l = layout();
        let mut p = Publisher::new(l.clone());
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        let mut published = Part::default();
        published.enclaves.insert(a, entry("10.0.0.5"));
        let stray = format!("{}gw-a/enclave/10.9.9.9", l.prefix());
        p.replace_published(published, BTreeSet::from([stray.clone()]));
        let w = p.take_writes(128);
        assert_eq!(w, vec![Write::Delete(l.enclave(&a)), Write::Delete(stray)]);
        p.published(&w);
        assert!(!p.is_dirty());
    }

    #[test]
    fn a_key_overwritten_by_someone_else_is_written_again_or_deleted() {
        let l = layout();
        let mut p = Publisher::new(l.clone());
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        p.set_enclave(a, Some(entry("10.0.0.5")));
        let w = p.take_writes(128);
        p.published(&w);
        // Deleted by hand: put again.
        p.overwritten(&l.enclave(&a), false);
        assert_eq!(p.take_writes(128), vec![Write::Put(l.enclave(&a), enclave_value(&entry("10.0.0.5")))]);
        // A foreign value where the local part has nothing: deleted.
        let b: IpAddr = "10.1.0.2".parse().unwrap();
        p.overwritten(&l.enclave(&b), true);
        assert_eq!(p.take_writes(128).last(), Some(&Write::Delete(l.enclave(&b))));
    }

    #[test]
    fn winners_are_each_address_once_by_gateway() {
        let mut r = Remote::default();
        let (a, b): (IpAddr, IpAddr) = ("10.2.0.1".parse().unwrap(), "10.2.0.2".parse().unwrap());
        r.reserve_enclaves(gw("gw-c"), 2);
        r.put_enclave(gw("gw-c"), a, entry("10.0.0.7"), 20);
        r.put_enclave(gw("gw-c"), b, entry("10.0.0.7"), 21);
        r.put_enclave(gw("gw-b"), a, entry("10.0.0.6"), 10);
        let winners: Vec<(IpAddr, GatewayName)> = r.winners().map(|(addr, w)| (addr, w.origin)).collect();
        assert_eq!(winners, vec![(a, gw("gw-b")), (b, gw("gw-c"))]);
        let entries: Vec<(IpAddr, GatewayName)> = r.winning_entries().map(|(addr, gw, _)| (addr, gw)).collect();
        assert_eq!(entries, winners);
    }

    #[test]
    fn oldest_claim_wins_and_the_next_takes_over() {
        let mut r = Remote::default();
        let a: IpAddr = "10.2.0.1".parse().unwrap();
        r.set_app(gw("gw-c"), app(), Some(vec![cat("Mail")]));
        r.put_enclave(gw("gw-c"), a, entry("10.0.0.7"), 20);
        r.put_enclave(gw("gw-b"), a, entry("10.0.0.6"), 10);
        assert_eq!(r.winner(&a).map(|w| w.origin), Some(gw("gw-b")));
        // A re-put keeps its create revision: still the winner.
        r.put_enclave(gw("gw-b"), a, entry("10.0.0.8"), 10);
        assert_eq!(r.winner(&a).map(|w| (w.origin, w.entry.host)), Some((gw("gw-b"), "10.0.0.8".parse().unwrap())));
        r.delete_enclave(gw("gw-b"), a);
        let w = r.winner(&a).unwrap();
        assert_eq!((w.origin, w.categories.to_vec()), (gw("gw-c"), vec![cat("Mail")]));
        assert_eq!(w.registration(a).origin, Origin::Gateway(gw("gw-c")));
        r.delete_enclave(gw("gw-c"), a);
        assert_eq!(r.winner(&a), None);
        assert_eq!(r.winners().count(), 0);
    }

    #[test]
    fn only_the_agents_own_replace_and_flush_echoes_are_its_own() {
        let flush = |origin| Event::Change(Operation::Flush { origin });
        let b = Origin::Gateway(gw("gw-b"));
        let mut echoes = Echoes::default();
        // Nothing of the agent's on its way: `seng restore`, the SENG server's flush and a flush
        // of a remote origin by hand are someone else's.
        for event in [Event::Replaced, flush(Origin::Local), flush(b)] {
            assert!(!echoes.take_own(&event), "{event}");
        }
        echoes.replaced();
        echoes.flushed(gw("gw-b"));
        for event in [flush(Origin::Local), flush(Origin::Gateway(gw("gw-c"))), Event::Change(Operation::Unregister { origin: b, addrs: vec![] })] {
            assert!(!echoes.take_own(&event), "{event}");
        }
        assert!(echoes.take_own(&Event::Replaced));
        assert!(echoes.take_own(&flush(b)));
        // Each echo counts once: the next of its kind is someone else's.
        assert!(!echoes.take_own(&Event::Replaced));
        assert!(!echoes.take_own(&flush(b)));
        // Two on their way, two echoes.
        echoes.replaced();
        echoes.replaced();
        assert!(echoes.take_own(&Event::Replaced) && echoes.take_own(&Event::Replaced) && !echoes.take_own(&Event::Replaced));
        // Lost events may have held the echoes: none is expected after them.
        echoes.replaced();
        echoes.flushed(gw("gw-b"));
        assert!(!echoes.take_own(&Event::Lost));
        assert!(!echoes.take_own(&Event::Replaced));
        assert!(!echoes.take_own(&flush(b)));
    }

    #[test]
    fn part_from_registrations_keeps_the_categories_canonical() {
        let regs = vec![Registration {
            addr: "10.1.0.1".parse().unwrap(),
            app: app(),
            host: "10.0.0.5".parse().unwrap(),
            categories: vec![cat("b"), cat("a")],
            origin: Origin::Local,
        }];
        let part = Part::from_registrations(&regs);
        assert_eq!(part.apps.get(&app()), Some(&vec![cat("a"), cat("b")]));
        assert_eq!(part.enclaves.len(), 1);
    }
}
