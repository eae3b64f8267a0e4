// SPDX-License-Identifier: GPL-2.0-only
//! `seng agent`: one gateway's share of a table that several gateways keep in etcd, in the way
//! Cilium's agents keep their ipcache: each agent publishes its gateway's local part under a
//! lease it keeps alive, and installs every other gateway's part in its own module with that
//! gateway's name as the origin, so that a dead gateway's entries expire with its lease.
//!
//! Every decision is level-triggered: an event of the module or of etcd only says *where* to
//! look; the agent then reads the module's entry at that address (`GET`) and compares it with
//! what etcd wants there, so a lost event, a reordering or a change by someone else converges
//! at the next look instead of drifting. A snapshot (after connecting, after a compacted watch,
//! after the module's events overflowed) compares the whole table and loads the remote part as
//! one replace transaction.
//!
//! The runtime is tokio's single-threaded one: the module's calls are short local syscalls,
//! and one thread keeps the order of decisions obvious.

mod model;
mod range;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fs;
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::cell::Cell;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use etcd_client::{Certificate, Compare, CompareOp, ConnectOptions, EventType, Identity, KeyValue, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse};
use futures_core::Stream;
use rustc_hash::FxHashMap;
use seng_nl::{Client, Event, EventStream, GatewayName, Operation, Origin, Registration};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep, sleep_until, timeout, Instant, Interval};

use crate::cli::AgentArgs;
use crate::Failure;
use model::{Echoes, Entry, Installed, Key, Layout, Part, Publisher, Remote, Write};

/// Keys per snapshot page: bounded replies however large the table (about 15 MB at most), and
/// few pages, because etcd 3.4 walks its index from a page's first key to the end of the range
/// for every page: a table of n keys costs n²/(2·PAGE) index steps (a sixth of what reading a
/// key costs etcd each), and 100,000 entries with their gateways' other keys take one page and
/// a short one.
const PAGE: i64 = 100_000;
/// Operations per transaction: etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// Watch replies can carry a whole gateway's part (a restore of 100,000 entries is one revision),
/// snapshot pages [`PAGE`] keys.
const MAX_MESSAGE: usize = 256 << 20;
/// Reconnection backoff bounds: short enough that a gateway reconnects within a second of etcd
/// coming back.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the status file is refreshed while entries change.
const STATUS_PERIOD: Duration = Duration::from_millis(250);
/// Events handled before the agent publishes, so a burst does not starve etcd's side.
const EVENT_BURST: usize = 4096;
/// Addresses in one watch reply from which they are installed in bulk: a few changes keep a
/// request each, the fastest way for one.
const BULK: usize = 64;

/// The agent's connection to etcd, as the status file says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Not connected yet, or reconnecting within the lease time.
    Connecting,
    /// A session is running.
    Connected,
    /// No contact for longer than the lease time: the remote entries were removed.
    Unreachable,
}

impl Reach {
    fn as_str(self) -> &'static str {
        match self {
            Reach::Connecting => "connecting",
            Reach::Connected => "connected",
            Reach::Unreachable => "unreachable",
        }
    }
}

/// TLS to etcd: the CA (PEM) to verify it by, and a client certificate and key (PEM).
struct Tls {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// What the command line configures, with the files it names already read.
struct Config {
    endpoints: Vec<String>,
    ttl: Duration,
    tls: Option<Tls>,
    user: Option<(String, String)>,
    status_file: Option<String>,
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| Failure::Input(format!("cannot read the {what} {path}: {e}")))
}

impl Config {
    fn load(args: &AgentArgs) -> Result<Config, Failure> {
        let tls_wanted = args.ca.is_some() || args.cert.is_some();
        for url in &args.etcd {
            match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                (Some(_), _) if !tls_wanted => return Err(Failure::Input(format!("etcd endpoint {url}: https needs --ca (and --cert/--key for client certificates)"))),
                (None, Some(_)) if tls_wanted => return Err(Failure::Input(format!("etcd endpoint {url}: --ca/--cert are for https:// endpoints"))),
                (None, None) => return Err(Failure::Input(format!("etcd endpoint {url}: must start with http:// or https://"))),
                _ => {}
            }
        }
        let ca = args.ca.as_deref().map(|p| read_file("CA certificate", p)).transpose()?;
        let identity = match (&args.cert, &args.key) {
            (Some(c), Some(k)) => Some((read_file("client certificate", c)?, read_file("client key", k)?)),
            _ => None,
        };
        let user = match (&args.user, &args.password_file) {
            (Some(u), Some(p)) => {
                let text = String::from_utf8(read_file("password file", p)?).map_err(|_| Failure::Input(format!("the password file {p} is not UTF-8")))?;
                let password = text.lines().next().unwrap_or_default().to_owned();
                if password.is_empty() {
                    return Err(Failure::Input(format!("the password file {p} is empty")));
                }
                Some((u.clone(), password))
            }
            _ => None,
        };
        Ok(Config {
            endpoints: args.etcd.clone(),
            ttl: Duration::from_secs(args.lease_ttl.into()),
            tls: tls_wanted.then_some(Tls { ca, identity }),
            user,
            status_file: args.status_file.clone(),
        })
    }

    /// The keep-alive period of a connection to etcd.
    fn beat(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_secs(1))
    }

    fn tls_options(&self) -> Option<TlsOptions> {
        let Tls { ca, identity } = self.tls.as_ref()?;
        let mut tls = TlsOptions::new();
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Some(tls)
    }

    fn options(&self) -> ConnectOptions {
        let beat = self.beat();
        let mut options = ConnectOptions::new().with_connect_timeout(self.ttl).with_keep_alive(beat, beat).with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = self.tls_options() {
            options = options.with_tls(tls);
        }
        options
    }

    /// The endpoints as etcd-client configures them from [`Config::options`], for the
    /// snapshot's own channel.
    fn endpoints(&self) -> Result<Vec<tonic::transport::Endpoint>, String> {
        let beat = self.beat();
        let tls = self.tls_options();
        let endpoint = |url: &String| -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())?;
            let endpoint = match &tls {
                Some(tls) => endpoint.tls_config(tls.clone())?,
                None => endpoint,
            };
            Ok(endpoint.connect_timeout(self.ttl).http2_keep_alive_interval(beat).keep_alive_timeout(beat).keep_alive_while_idle(true))
        };
        self.endpoints.iter().map(|url| endpoint(url).map_err(|e| format!("etcd endpoint {url}: {e}"))).collect()
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(args: AgentArgs) -> Result<(), Failure> {
    let config = Config::load(&args)?;
    if let Some(netns) = &args.netns {
        enter_netns(netns)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::Op(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let agent = Agent::new(config, Layout::new(&args.prefix, args.name))?;
        agent.run().await
    })
}

/// Moves the process into network namespace `name` (an `ip netns` name or a path) before any
/// socket exists: the module's table and the route to etcd are then that namespace's, and every
/// thread started later inherits it.
fn enter_netns(name: &str) -> Result<(), Failure> {
    let path = match name.contains('/') {
        true => name.to_owned(),
        false => format!("/run/netns/{name}"),
    };
    let ns = fs::File::open(&path).map_err(|e| Failure::Input(format!("cannot open network namespace {path}: {e}")))?;
    // SAFETY: setns on a file descriptor this function owns; no memory is shared with the kernel.
    match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(Failure::Op(format!("cannot enter network namespace {path}: {}", std::io::Error::last_os_error()))),
    }
}

/// The next module event if one is ready, without waiting.
fn ready_event(events: &mut EventStream) -> Option<seng_nl::Result<Event>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(events).poll_next(&mut cx) {
        Poll::Ready(event) => event,
        Poll::Pending => None,
    }
}

async fn next_event(events: &mut EventStream) -> Option<seng_nl::Result<Event>> {
    std::future::poll_fn(|cx| Pin::new(&mut *events).poll_next(cx)).await
}

/// An etcd call bounded by `limit`, its error as text.
async fn bounded<T, E: std::fmt::Display>(limit: Duration, what: &str, call: impl std::future::Future<Output = Result<T, E>>) -> Result<T, String> {
    match timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}s", limit.as_secs())),
    }
}

/// How a session ended.
enum End {
    Signal,
    Stale,
    Failed(String),
}

struct Agent {
    config: Config,
    layout: Layout,
    kernel: Client,
    events: EventStream,
    publisher: Publisher,
    remote: Remote,
    /// The remote entries the agent installed, by address (at start, those its previous run
    /// left in the module): what a watch event is compared with, the status file's counts and
    /// what a fail-closed removal or SIGTERM removes.
    installed: Installed,
    /// The table as start-up dumped it, for the first snapshot's resync to use instead of a
    /// second dump: the event stream was open before the dump, and its events are handled only
    /// after that resync, so nothing that changed in between is missed.
    startup_table: Option<Vec<Registration>>,
    /// The agent's own replace transactions and flushes whose events are still to come.
    echoes: Echoes,
    lease: Option<i64>,
    revision: i64,
    /// The last answer from etcd; shared with the loop that watches for staleness while a
    /// session runs.
    contact: Rc<Cell<Instant>>,
    /// Whether remote entries may be in the module, so that losing etcd must remove them: from
    /// the start (a previous run may have left some) and from every snapshot on, until removed.
    armed: Rc<Cell<bool>>,
    reach: Reach,
    status_written: String,
}

impl Agent {
    fn new(config: Config, layout: Layout) -> Result<Agent, Failure> {
        let mut kernel = Client::connect().map_err(|e| Failure::Op(e.to_string()))?;
        let events = EventStream::connect().map_err(|e| Failure::Op(e.to_string()))?;
        // A previous run's remote entries stay until a snapshot replaces them or losing etcd
        // removes them; from then on the agent knows what it installs.
        let table = kernel.list().map_err(|e| Failure::Op(format!("cannot dump the module's table: {e}")))?;
        let installed = table.iter().filter_map(|r| r.origin.gateway().map(|gw| (r.addr, *gw, Entry { app: r.app, host: r.host }))).collect();
        Ok(Agent {
            config,
            publisher: Publisher::new(layout.clone()),
            layout,
            kernel,
            events,
            remote: Remote::default(),
            installed,
            startup_table: Some(table),
            echoes: Echoes::default(),
            lease: None,
            revision: 0,
            contact: Rc::new(Cell::new(Instant::now())),
            armed: Rc::new(Cell::new(true)),
            reach: Reach::Connecting,
            status_written: String::new(),
        })
    }

    fn log(&self, message: impl std::fmt::Display) {
        eprintln!("seng agent {}: {message}", self.layout.me());
    }

    async fn run(mut self) -> Result<(), Failure> {
        let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::Op(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::Op(format!("cannot handle SIGINT: {e}")))?;
        self.write_status();
        let contact = self.contact.clone();
        let armed = self.armed.clone();
        let ttl = self.config.ttl;
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let end = {
                let mut session = pin!(self.session());
                loop {
                    // Unarmed (nothing to remove), look again soon: a session may arm it.
                    let wake = match armed.get() {
                        true => contact.get() + ttl,
                        false => Instant::now() + STATUS_PERIOD,
                    };
                    tokio::select! {
                        biased;
                        _ = term.recv() => break End::Signal,
                        _ = int.recv() => break End::Signal,
                        result = &mut session => break End::Failed(match result { Err(e) => e, Ok(never) => match never {} }),
                        _ = sleep_until(wake) => if armed.get() && contact.get() + ttl <= Instant::now() { break End::Stale },
                    }
                }
            };
            match end {
                End::Signal => break,
                End::Stale => self.log(format_args!("no answer from etcd for {}s", ttl.as_secs())),
                End::Failed(why) => self.log(why),
            }
            if armed.get() && contact.get() + ttl <= Instant::now() {
                self.fail_closed();
            } else if self.reach == Reach::Connected {
                self.reach = Reach::Connecting;
            }
            self.write_status();
            // A session that ran for a while was a connection, not an attempt: start over fast.
            if started.elapsed() > ttl {
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                biased;
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.shutdown().await;
        Ok(())
    }

    /// On SIGTERM: the lease goes (the peers drop this gateway's entries at once) and so do the
    /// remote entries here, which nobody would keep up to date any more.
    async fn shutdown(&mut self) {
        self.remove_remote_part("the agent is stopping");
        if let Some(lease) = self.lease.take() {
            let revoked = async {
                let mut etcd = bounded(Duration::from_secs(1), "connect", etcd_client::Client::connect(&self.config.endpoints, Some(self.config.options()))).await?;
                bounded(Duration::from_secs(1), "revoke the lease", etcd.lease_revoke(lease)).await
            };
            match revoked.await {
                Ok(_) => self.log(format_args!("lease {lease:x} revoked")),
                Err(e) => self.log(format_args!("{e}; the entries expire with the lease")),
            }
        }
        self.reach = Reach::Connecting;
        self.write_status();
    }

    fn touch(&self) {
        self.contact.set(Instant::now());
    }

    /// One connection to etcd, from connecting to the error that ends it.
    async fn session(&mut self) -> Result<Infallible, String> {
        let ttl = self.config.ttl;
        let mut etcd = bounded(ttl, "cannot connect to etcd", etcd_client::Client::connect(&self.config.endpoints, Some(self.config.options()))).await?;
        let lease = self.lease(&mut etcd).await?;
        let (mut keeper, mut beats) = bounded(ttl, "cannot keep the lease alive", etcd.lease_keep_alive(lease)).await?;
        self.claim_owner(&mut etcd, &mut keeper, lease).await?;
        let mut beat = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
        let mut status = tokio::time::interval(STATUS_PERIOD);
        loop {
            self.snapshot(&mut etcd, lease).await?;
            self.publish(&mut etcd, lease, &mut keeper, &mut beat).await?;
            self.reach = Reach::Connected;
            self.write_status();
            let options = WatchOptions::new().with_prefix().with_start_revision(self.revision + 1).with_progress_notify();
            let mut watch = bounded(ttl, "cannot watch", etcd.watch_client().max_decoding_message_size(MAX_MESSAGE).watch(self.layout.prefix(), Some(options))).await?;
            loop {
                tokio::select! {
                    event = next_event(&mut self.events) => self.on_events(event),
                    reply = watch.message() => match reply {
                        Ok(Some(reply)) if reply.canceled() || reply.compact_revision() > 0 => {
                            self.touch();
                            self.log(format_args!("watch cancelled at revision {} (compacted to {}): taking a new snapshot", self.revision, reply.compact_revision()));
                            break;
                        }
                        Ok(Some(reply)) => {
                            self.touch();
                            self.on_watch(&reply, lease)?;
                        }
                        Ok(None) => return Err("etcd ended the watch".into()),
                        Err(e) => return Err(format!("watch failed: {e}")),
                    },
                    _ = beat.tick() => keeper.keep_alive().await.map_err(|e| format!("cannot keep the lease alive: {e}"))?,
                    reply = beats.message() => match reply {
                        Ok(Some(reply)) if reply.ttl() > 0 => self.touch(),
                        Ok(Some(_)) => {
                            self.lease = None;
                            return Err(format!("lease {lease:x} expired"));
                        }
                        Ok(None) => return Err("etcd ended the lease's keep-alive stream".into()),
                        Err(e) => return Err(format!("keep-alive failed: {e}")),
                    },
                    _ = status.tick() => self.write_status(),
                }
                if self.publisher.is_dirty() {
                    self.publish(&mut etcd, lease, &mut keeper, &mut beat).await?;
                }
            }
        }
    }

    /// The lease of the previous session if it is still alive (its keys are still there), or
    /// a new one (and nothing of this gateway's is published).
    async fn lease(&mut self, etcd: &mut etcd_client::Client) -> Result<i64, String> {
        let ttl = self.config.ttl;
        if let Some(id) = self.lease {
            let left = bounded(ttl, "cannot ask for the lease", etcd.lease_time_to_live(id, None)).await?;
            if left.ttl() > 0 {
                self.touch();
                return Ok(id);
            }
            self.log(format_args!("lease {id:x} expired while etcd was out of reach"));
        }
        let granted = bounded(ttl, "cannot get a lease", etcd.lease_grant(ttl.as_secs() as i64, None)).await?;
        self.touch();
        self.lease = Some(granted.id());
        self.publisher.forget_published();
        self.log(format_args!("lease {:x} granted for {}s", granted.id(), granted.ttl()));
        Ok(granted.id())
    }

    /// Takes the gateway's owner key, which another live agent of the same name holds until its
    /// lease ends (also this agent's own previous run, killed, until its lease expires).
    async fn claim_owner(&mut self, etcd: &mut etcd_client::Client, keeper: &mut LeaseKeeper, lease: i64) -> Result<(), String> {
        let owner = self.layout.owner();
        let value = json!({ "agent": concat!("seng ", env!("CARGO_PKG_VERSION")), "pid": std::process::id() }).to_string();
        let mut waited = false;
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(owner.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(owner.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)))])
                .or_else([TxnOp::get(owner.clone(), None)]);
            let reply = bounded(self.config.ttl, "cannot claim the gateway's name", etcd.txn(txn)).await?;
            self.touch();
            let holder = reply.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(KeyValue::lease),
                _ => None,
            });
            match holder {
                _ if reply.succeeded() => return Ok(()),
                Some(holder) if holder == lease => return Ok(()),
                Some(holder) => {
                    if !waited {
                        self.log(format_args!("{owner} is held by lease {holder:x} (another agent named so, or this one's previous run until its lease expires): waiting"));
                        waited = true;
                    }
                    keeper.keep_alive().await.map_err(|e| format!("cannot keep the lease alive: {e}"))?;
                    sleep(Duration::from_millis(500)).await;
                }
                None => {}
            }
        }
    }

    /// Reads everything under the prefix at one revision, then brings the module to it.
    async fn snapshot(&mut self, etcd: &mut etcd_client::Client, lease: i64) -> Result<(), String> {
        let prefix = self.layout.prefix().as_bytes().to_vec();
        let end = prefix_end(&prefix);
        let mut start = prefix;
        let mut revision = 0;
        let mut remote = Remote::default();
        let mut published = Part::default();
        let mut strays = BTreeSet::new();
        let mut keys = 0usize;
        let mut kv = self.range_client(etcd).await?;
        loop {
            // Revision 0 is the newest: the first page's, which the next pages are read at.
            let request = range::RangeRequest { key: start.clone(), range_end: end.clone(), limit: PAGE, revision };
            let page = bounded(self.config.ttl, "cannot read the snapshot", kv.range(request)).await?;
            self.touch();
            if revision == 0 {
                revision = page.header.as_ref().map_or(0, |h| h.revision);
            }
            remote.reserve(page.kvs.len());
            self.reserve_parts(&page.kvs, &mut remote);
            for kv in &page.kvs {
                keys += 1;
                self.absorb(kv, lease, &mut remote, &mut published, &mut strays);
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => {
                    start = last.key.to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        self.remote = remote;
        self.armed.set(true);
        self.publisher.replace_published(published, strays);
        self.revision = revision;
        self.log(format_args!("snapshot at revision {revision}: {keys} keys"));
        self.resync_module();
        Ok(())
    }

    /// A client of the snapshot's `Range` calls, on a channel of its own (see [`range`]), with
    /// a token of its own when etcd has users.
    async fn range_client(&self, etcd: &mut etcd_client::Client) -> Result<range::RangeClient, String> {
        let endpoints = self.config.endpoints()?;
        let token = match &self.config.user {
            Some((user, password)) => {
                let reply = bounded(self.config.ttl, "cannot authenticate for the snapshot", etcd.auth_client().authenticate(user.clone(), password.clone())).await?;
                let token = reply.token().parse().map_err(|_| "cannot authenticate for the snapshot: etcd's token is not ASCII".to_owned())?;
                Some(token)
            }
            None => None,
        };
        Ok(range::RangeClient::new(endpoints, MAX_MESSAGE, token))
    }

    /// Sizes each other gateway's part for its enclave keys in `kvs`, once: the keys come
    /// sorted, so each gateway's are one run.
    fn reserve_parts(&self, kvs: &[range::KeyValue], remote: &mut Remote) {
        let mut reserve = |name: &[u8], n: usize| {
            if let Ok(gw) = GatewayName::new(name) {
                if gw != *self.layout.me() {
                    remote.reserve_enclaves(gw, n);
                }
            }
        };
        let mut run: Option<(&[u8], usize)> = None;
        for kv in kvs {
            let Some(gw) = self.layout.enclave_gateway(&kv.key) else { continue };
            match &mut run {
                Some((name, n)) if *name == gw => *n += 1,
                _ => {
                    if let Some((name, n)) = run.replace((gw, 1)) {
                        reserve(name, n);
                    }
                }
            }
        }
        if let Some((name, n)) = run {
            reserve(name, n);
        }
    }

    /// One key of a snapshot: this gateway's own (published by this lease, or a stray), or
    /// another gateway's.
    fn absorb(&self, kv: &range::KeyValue, lease: i64, remote: &mut Remote, published: &mut Part, strays: &mut BTreeSet<String>) {
        let key = match self.layout.parse(&kv.key) {
            Ok(key) => key,
            Err(why) => return self.skip(&kv.key, &why),
        };
        if key.gateway() == self.layout.me() {
            let own = kv.lease == lease;
            match key {
                Key::Enclave(_, addr) => match model::parse_enclave(&kv.value) {
                    Ok(entry) if own => {
                        published.enclaves.insert(addr, entry);
                    }
                    _ => {
                        strays.insert(String::from_utf8_lossy(&kv.key).into_owned());
                    }
                },
                Key::App(_, app) => match model::parse_app(&kv.value) {
                    Ok(categories) if own => {
                        published.apps.insert(app, categories);
                    }
                    _ => {
                        strays.insert(String::from_utf8_lossy(&kv.key).into_owned());
                    }
                },
                Key::Owner(_) => {}
            }
            return;
        }
        match key {
            Key::Enclave(gw, addr) => match model::parse_enclave(&kv.value) {
                Ok(entry) => remote.put_enclave(gw, addr, entry, kv.create_revision),
                Err(why) => self.skip(&kv.key, &why),
            },
            Key::App(gw, app) => match model::parse_app(&kv.value) {
                Ok(categories) => remote.set_app(gw, app, Some(categories)),
                Err(why) => self.skip(&kv.key, &why),
            },
            Key::Owner(_) => {}
        }
    }

    fn skip(&self, key: &[u8], why: &str) {
        self.log(format_args!("skipping key {:?}: {why}", String::from_utf8_lossy(key)));
    }

    /// A watch reply: the other gateways' changes, applied to the model and then to the module
    /// (categories first, so a new enclave of a changed application is installed with them).
    fn on_watch(&mut self, reply: &WatchResponse, lease: i64) -> Result<(), String> {
        let mut addrs = BTreeSet::new();
        let mut apps = BTreeSet::new();
        for event in reply.events() {
            let Some(kv) = event.kv() else { continue };
            let key = match self.layout.parse(kv.key()) {
                Ok(key) => key,
                Err(why) => {
                    self.skip(kv.key(), &why);
                    continue;
                }
            };
            let put = event.event_type() == EventType::Put;
            if key.gateway() == self.layout.me() {
                if key == Key::Owner(*self.layout.me()) && !put {
                    self.lease = None;
                    return Err(format!("this gateway's owner key was deleted (lease {lease:x} gone)"));
                }
                // Someone else wrote or deleted one of this gateway's keys: it is written again.
                if !put || kv.lease() != lease {
                    self.publisher.overwritten(&String::from_utf8_lossy(kv.key()), put);
                }
                continue;
            }
            match key {
                Key::Enclave(gw, addr) => {
                    match put.then(|| model::parse_enclave(kv.value())) {
                        Some(Ok(entry)) => self.remote.put_enclave(gw, addr, entry, kv.create_revision()),
                        Some(Err(why)) => {
                            self.skip(kv.key(), &why);
                            self.remote.delete_enclave(gw, addr);
                        }
                        None => self.remote.delete_enclave(gw, addr),
                    }
                    addrs.insert(addr);
                }
                Key::App(gw, app) => {
                    match put.then(|| model::parse_app(kv.value())) {
                        Some(Ok(categories)) => self.remote.set_app(gw, app, Some(categories)),
                        Some(Err(why)) => {
                            self.skip(kv.key(), &why);
                            self.remote.set_app(gw, app, None);
                        }
                        None => self.remote.set_app(gw, app, None),
                    }
                    apps.insert((gw, app));
                }
                Key::Owner(_) => {}
            }
        }
        if let Some(header) = reply.header() {
            self.revision = self.revision.max(header.revision());
        }
        for (gw, app) in apps {
            self.sync_categories(&gw, &app);
        }
        if addrs.len() < BULK {
            for addr in addrs {
                self.install(addr);
            }
        } else {
            self.install_bulk(addrs);
        }
        Ok(())
    }

    /// What `addr` needs for the winning remote claim, judged by what the agent installed: the
    /// origin whose entry must go (forgotten here) and the claim to register; `None` when it
    /// holds what it should, or a local entry (which stays).
    fn needed_at(&mut self, addr: IpAddr) -> Option<(Option<GatewayName>, Option<model::Wanted>)> {
        if self.publisher.is_local(&addr) {
            return None;
        }
        let wanted = self.remote.winner(&addr);
        let current = self.installed.get(&addr).copied();
        if current == wanted.as_ref().map(|w| (w.origin, w.entry)) {
            return None;
        }
        let removal = current.map(|(origin, _)| origin).filter(|o| wanted.as_ref().is_none_or(|w| w.origin != *o));
        if removal.is_some() {
            self.installed.remove(&addr);
        }
        Some((removal, wanted))
    }

    /// [`Agent::install`] for many addresses at once (a remote gateway's restore is one watch
    /// event): removals per origin and registrations grouped by origin, each as few messages as
    /// the client can pack, instead of a request per address. Whatever the module refuses is
    /// looked at address by address, as `install` does.
    fn install_bulk(&mut self, addrs: BTreeSet<IpAddr>) {
        let mut removals: BTreeMap<GatewayName, Vec<IpAddr>> = BTreeMap::new();
        let mut registrations = Vec::new();
        for addr in addrs {
            let Some((removal, wanted)) = self.needed_at(addr) else { continue };
            if let Some(origin) = removal {
                removals.entry(origin).or_default().push(addr);
            }
            if let Some(w) = wanted {
                registrations.push(w.registration(addr));
            }
        }
        for (origin, addrs) in removals {
            if self.kernel.apply(&Operation::Unregister { origin: origin.into(), addrs: addrs.clone() }).is_err() {
                addrs.into_iter().for_each(|a| self.sync_addr(a));
            }
        }
        // Grouped by origin: a change of origin starts a new message.
        registrations.sort_unstable_by_key(|r| r.origin);
        let refused: Vec<Range<usize>> = match self.kernel.register_batch(&registrations) {
            Ok(_) => Vec::new(),
            Err(seng_nl::Error::Batch(b)) => b.failures.into_iter().map(|f| f.enclaves).collect(),
            Err(e) => {
                self.log(format_args!("cannot install {} entries at once: {e}; installing them one by one", registrations.len()));
                let everything = 0..registrations.len();
                vec![everything]
            }
        };
        for (at, r) in registrations.iter().enumerate() {
            if refused.iter().any(|f| f.contains(&at)) {
                self.sync_addr(r.addr);
            } else if let Origin::Gateway(gw) = r.origin {
                self.installed.insert(r.addr, gw, Entry { app: r.app, host: r.host });
            }
        }
    }

    /// After a watch event at `addr`: installs the winning remote claim, or removes what the
    /// agent installed there, judged by what it installed rather than by reading the module
    /// (one request per change instead of three at a thousand changes a second). Anything
    /// unexpected (the module refusing) falls back to [`Agent::sync_addr`], which reads it.
    fn install(&mut self, addr: IpAddr) {
        let Some((removal, wanted)) = self.needed_at(addr) else { return };
        if let Some(origin) = removal {
            if self.kernel.apply(&Operation::Unregister { origin: origin.into(), addrs: vec![addr] }).is_err() {
                return self.sync_addr(addr);
            }
        }
        if let Some(w) = wanted {
            match self.kernel.register(&w.registration(addr)) {
                Ok(()) => {
                    self.installed.insert(addr, w.origin, w.entry);
                }
                Err(_) => self.sync_addr(addr),
            }
        }
    }

    /// Module events: a burst of them, each naming where to look.
    fn on_events(&mut self, first: Option<seng_nl::Result<Event>>) {
        let mut next = first;
        let mut handled = 0;
        loop {
            match next {
                // The agent's own replace transaction or flush: the module holds what it made.
                Some(Ok(event)) if self.echoes.take_own(&event) => {}
                Some(Ok(Event::Change(op))) => self.on_change(op),
                Some(Ok(Event::Replaced | Event::Lost)) => self.resync_module(),
                failed => {
                    let why = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "the event stream ended".to_owned(),
                    };
                    self.log(format_args!("module events: {why}; reopening"));
                    self.echoes.forget();
                    match EventStream::connect() {
                        Ok(events) => self.events = events,
                        Err(e) => self.log(format_args!("cannot reopen the module's events: {e}")),
                    }
                    self.resync_module();
                    return;
                }
            }
            handled += 1;
            if handled >= EVENT_BURST {
                return;
            }
            next = match ready_event(&mut self.events) {
                Some(event) => Some(event),
                None => return,
            };
        }
    }

    fn on_change(&mut self, op: Operation) {
        match op {
            // The agent's own changes come back as events: only a change it did not make (by
            // hand, with --origin) needs a look.
            Operation::Register(registrations) if registrations.iter().all(|r| self.made_by_agent(r)) => {}
            Operation::Unregister { origin: Origin::Gateway(gw), addrs } if addrs.iter().all(|a| self.installed.get(a).is_none_or(|(o, _)| *o != gw)) => {}
            Operation::Register(registrations) => {
                for r in registrations {
                    self.sync_addr(r.addr);
                }
            }
            Operation::Unregister { addrs, .. } => {
                for addr in addrs {
                    self.sync_addr(addr);
                }
            }
            Operation::Attach { origin: Origin::Local, app, .. } | Operation::Detach { origin: Origin::Local, app, .. } => {
                match self.publisher.enclave_of(&app) {
                    Some(addr) => self.sync_addr(addr),
                    None => self.publisher.set_app(app, None),
                }
            }
            Operation::Attach { origin: Origin::Gateway(gw), app, .. } | Operation::Detach { origin: Origin::Gateway(gw), app, .. } => self.sync_categories(&gw, &app),
            Operation::Flush { .. } => self.resync_module(),
        }
    }

    /// Whether a registration event is the agent's own installation of a remote entry.
    fn made_by_agent(&self, r: &Registration) -> bool {
        r.origin.gateway().is_some_and(|gw| self.installed.get(&r.addr) == Some(&(*gw, Entry { app: r.app, host: r.host })))
    }

    /// Brings the module's entry at `addr` to what the model wants: a local entry stays (and is
    /// what the publisher publishes); otherwise the winning remote claim, or nothing.
    fn sync_addr(&mut self, addr: IpAddr) {
        let current = match self.kernel.get(addr) {
            Ok(current) => current,
            Err(e) => return self.log(format_args!("cannot read {addr} from the module: {e}")),
        };
        if let Some(r) = current.as_ref().filter(|r| r.origin.is_local()) {
            self.publisher.set_enclave(addr, Some(Entry { app: r.app, host: r.host }));
            self.publisher.set_app(r.app, Some(r.categories.clone()));
            self.installed.remove(&addr);
            return;
        }
        self.publisher.set_enclave(addr, None);
        let wanted = self.remote.winner(&addr);
        let same = |r: &Registration, w: &model::Wanted| r.origin == Origin::Gateway(w.origin) && r.app == w.entry.app && r.host == w.entry.host;
        match (&current, &wanted) {
            (Some(r), Some(w)) if same(r, w) => {
                self.installed.insert(addr, w.origin, w.entry);
                return;
            }
            (Some(r), w) if w.as_ref().map(|w| Origin::Gateway(w.origin)) != Some(r.origin) => {
                self.installed.remove(&addr);
                if let Err(e) = self.kernel.apply(&Operation::Unregister { origin: r.origin, addrs: vec![addr] }) {
                    if !e.is_not_found() {
                        self.log(format_args!("cannot remove {addr} of {}: {e}", r.origin));
                    }
                }
            }
            _ => {}
        }
        if let Some(w) = wanted {
            match self.kernel.register(&w.registration(addr)) {
                Ok(()) => {
                    self.installed.insert(addr, w.origin, w.entry);
                }
                // A local registration came in between: it wins, and its event is on its way.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => self.log(format_args!("cannot install {addr} of {}: {e}", w.origin)),
            }
        }
    }

    /// Brings the categories of gateway `gw`'s application `app` in the module to those the
    /// gateway publishes (the module holds them once per application and origin).
    fn sync_categories(&mut self, gw: &GatewayName, app: &seng_nl::Measurement) {
        let wanted = self.remote.categories(gw, app);
        let installed = self.remote.enclaves_of(gw, app).find(|a| self.installed.get(a).is_some_and(|(o, _)| o == gw));
        let Some(addr) = installed else { return };
        let current = match self.kernel.get(addr) {
            Ok(Some(r)) if r.origin == Origin::Gateway(*gw) && r.app == *app => model::canonical(&r.categories),
            Ok(_) => return,
            Err(e) => return self.log(format_args!("cannot read {addr} from the module: {e}")),
        };
        let attach: Vec<_> = wanted.iter().filter(|c| !current.contains(c)).copied().collect();
        let detach: Vec<_> = current.iter().filter(|c| !wanted.contains(c)).copied().collect();
        let origin = Origin::Gateway(*gw);
        for op in [Operation::Attach { origin, app: *app, categories: attach }, Operation::Detach { origin, app: *app, categories: detach }] {
            let empty = matches!(&op, Operation::Attach { categories, .. } | Operation::Detach { categories, .. } if categories.is_empty());
            if !empty {
                if let Err(e) = self.kernel.apply(&op) {
                    self.log(format_args!("cannot change the categories of {app} of {gw}: {e}"));
                }
            }
        }
    }

    /// Reads the whole module: the local part for the publisher, and the remote part compared
    /// with what the model wants; a difference is loaded as one replace transaction of every
    /// remote origin involved (entry by entry if the module refuses it).
    fn resync_module(&mut self) {
        let table = match self.startup_table.take().map_or_else(|| self.kernel.list(), Ok) {
            Ok(table) => table,
            Err(e) => return self.log(format_args!("cannot dump the module's table: {e}")),
        };
        let (local, remote): (Vec<Registration>, Vec<Registration>) = table.into_iter().partition(|r| r.origin.is_local());
        self.publisher.replace_local(Part::from_registrations(&local));
        self.publisher.drop_empty_apps();
        // Streamed, not collected: every address once (they are the claims' keys), by
        // origin, the order of the replace transaction; only the module's side is looked up.
        let (remote_model, publisher) = (&self.remote, &self.publisher);
        let wanted = || remote_model.winners().filter(|(a, _)| !publisher.is_local(a));
        let current: FxHashMap<IpAddr, &Registration> = remote.iter().map(|r| (r.addr, r)).collect();
        let mut count = 0;
        let agrees = wanted().all(|(a, w)| {
            count += 1;
            current.get(&a).is_some_and(|r| r.origin == Origin::Gateway(w.origin) && r.app == w.entry.app && r.host == w.entry.host && model::canonical(&r.categories) == *w.categories)
        }) && count == current.len();
        let mut installed = Installed::with_capacity(remote_model.claimed());
        for (a, gw, entry) in remote_model.winning_entries().filter(|(a, _, _)| !publisher.is_local(a)) {
            installed.insert(a, gw, entry);
        }
        self.installed = installed;
        if agrees {
            return;
        }
        let origins: BTreeSet<Origin> = current.values().map(|r| r.origin).chain(self.installed.counts().keys().map(|gw| Origin::Gateway(*gw))).collect();
        match replace_remote(&mut self.kernel, &origins, wanted()) {
            Ok(()) => {
                self.echoes.replaced();
                self.log(format_args!("remote part loaded: {} entries of {} gateways", self.installed.counts().values().sum::<usize>(), origins.len()));
            }
            Err(e) => {
                self.log(format_args!("cannot replace the remote part at once ({e}): entry by entry"));
                let addrs: BTreeSet<IpAddr> = current.keys().copied().chain(wanted().map(|(a, _)| a)).collect();
                let apps: BTreeSet<(GatewayName, seng_nl::Measurement)> = wanted().map(|(_, w)| (w.origin, w.entry.app)).collect();
                for addr in addrs {
                    self.sync_addr(addr);
                }
                for (gw, app) in apps {
                    self.sync_categories(&gw, &app);
                }
            }
        }
    }

    /// Removes every remote entry from the module (their connections end) and forgets the
    /// model: without etcd the agent cannot know they are still valid.
    fn fail_closed(&mut self) {
        self.reach = Reach::Unreachable;
        self.armed.set(false);
        self.remote.clear();
        self.remove_remote_part("etcd is out of reach");
    }

    fn remove_remote_part(&mut self, why: &str) {
        let origins: BTreeSet<GatewayName> = self.installed.counts().keys().copied().collect();
        for gw in &origins {
            match self.kernel.apply(&Operation::Flush { origin: Origin::Gateway(*gw) }) {
                Ok(()) => self.echoes.flushed(*gw),
                Err(e) => self.log(format_args!("cannot remove the entries of {gw}: {e}")),
            }
        }
        if !origins.is_empty() {
            let names: Vec<String> = origins.iter().map(ToString::to_string).collect();
            self.log(format_args!("{why}: removed the entries of {}", names.join(", ")));
        }
        self.installed.clear();
    }

    /// Writes what the publisher says etcd lacks, in transactions of etcd's size limit, keeping
    /// the lease alive between them.
    async fn publish(&mut self, etcd: &mut etcd_client::Client, lease: i64, keeper: &mut LeaseKeeper, beat: &mut Interval) -> Result<(), String> {
        self.publisher.drop_empty_apps();
        loop {
            let writes = self.publisher.take_writes(MAX_TXN_OPS);
            if writes.is_empty() {
                return Ok(());
            }
            let ops: Vec<TxnOp> = writes
                .iter()
                .map(|w| match w {
                    Write::Put(key, value) => TxnOp::put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease))),
                    Write::Delete(key) => TxnOp::delete(key.as_str(), None),
                })
                .collect();
            // A large part takes many transactions: the lease must not run out meanwhile.
            if beat.poll_tick(&mut Context::from_waker(Waker::noop())).is_ready() {
                keeper.keep_alive().await.map_err(|e| format!("cannot keep the lease alive: {e}"))?;
            }
            bounded(self.config.ttl, "cannot publish", etcd.txn(Txn::new().and_then(ops))).await?;
            self.touch();
            self.publisher.published(&writes);
        }
    }

    /// Rewrites the status file if what it says changed.
    fn write_status(&mut self) {
        let Some(path) = self.config.status_file.as_deref() else { return };
        let remote: BTreeMap<String, usize> = self.installed.counts().iter().map(|(gw, n)| (gw.to_string(), *n)).collect();
        let text = json!({
            "gateway": self.layout.me().to_string(),
            "etcd": self.reach.as_str(),
            "local": self.publisher.local().enclaves.len(),
            "remote": remote,
            "revision": self.revision,
        })
        .to_string();
        if text == self.status_written {
            return;
        }
        let temporary = format!("{path}.tmp");
        match fs::write(&temporary, format!("{text}\n")).and_then(|()| fs::rename(&temporary, path)) {
            Ok(()) => self.status_written = text,
            Err(e) => self.log(format_args!("cannot write the status file {path}: {e}")),
        }
    }
}

/// Loads `wanted`, by origin, in the place of `origins`' entries: the client packs a run of
/// one origin's registrations into one message, and a change of origin starts a new one.
fn replace_remote(kernel: &mut Client, origins: &BTreeSet<Origin>, wanted: impl Iterator<Item = (IpAddr, model::Wanted)>) -> seng_nl::Result<()> {
    let Some(first) = origins.first() else { return Ok(()) };
    let mut replace = kernel.begin_replace_of(first)?;
    for origin in origins {
        replace.apply(&Operation::Flush { origin: *origin })?;
    }
    // One registration refilled, not one made (its categories allocated) per entry.
    let mut r: Option<Registration> = None;
    for (addr, w) in wanted {
        let r = r.get_or_insert_with(|| w.registration(addr));
        w.refill(addr, r);
        replace.register(r)?;
    }
    replace.commit()
}

/// The end of the range of keys that start with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod test {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_of_the_prefix() {
        assert_eq!(prefix_end(b"/seng/v1/"), b"/seng/v10".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
