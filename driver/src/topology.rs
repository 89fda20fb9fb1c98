//! The deployment as the driver sees it, and server selection.
//!
//! [`TopologyDescription`] follows MongoDB's server discovery and monitoring (SDAM) model: each
//! server has a [`ServerDescription`] built from its last `hello` reply (or its last failure), and
//! [`TopologyDescription::update`] applies one new server description, discovering members from a
//! primary's host list and dropping servers that do not belong. [`TopologyDescription::select`] is
//! server selection as a pure function: given the description, an operation kind (a write, or a
//! read with a read preference) and the current time, it returns the suitable servers inside the
//! latency window. [`Topology`] holds the live description (seeded from the connection string's
//! host list), lets operations wait in server selection until a suitable server appears or
//! `serverSelectionTimeoutMS` passes, and owns the background monitor task; the monitor itself (in
//! `execute`) is the only place with I/O: it sends `hello` and feeds the replies to
//! [`Topology::update`].
//!
//! Invariants: a description has at most one `RsPrimary`; in a replica-set topology every server
//! is either a member named by the last primary or a seed not yet disproved.

use crate::concern::{ReadPreference, ReadPreferenceMode};
use crate::error::{Error, ErrorKind, Result, bson_as_i64};
use crate::options::{ClientOptions, ServerAddress};
use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// What a server is, from its `hello` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerType {
    /// Not (yet) reached, or the last check failed.
    Unknown,
    /// A single node that is not part of a replica set.
    Standalone,
    RsPrimary,
    RsSecondary,
    RsArbiter,
    /// A member in another state (recovering, rolling back, starting up).
    RsOther,
    /// A member without a configuration yet.
    RsGhost,
}

impl ServerType {
    /// Holds data that reads may be served from.
    pub fn is_data_bearing(self) -> bool {
        matches!(
            self,
            ServerType::Standalone | ServerType::RsPrimary | ServerType::RsSecondary
        )
    }
}

/// One server, as of its last check.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerDescription {
    pub address: ServerAddress,
    pub server_type: ServerType,
    /// Smoothed round trip time of `hello` (exponentially weighted, alpha 0.2).
    pub round_trip_time: Option<Duration>,
    /// When the description was made (the client's clock).
    pub last_update_time: Option<Instant>,
    /// `lastWrite.lastWriteDate`: the wall time of the server's newest write.
    pub last_write_date: Option<DateTime>,
    pub set_name: Option<String>,
    pub set_version: Option<i64>,
    pub election_id: Option<ObjectId>,
    /// Members named in the reply (`hosts`, `passives`, `arbiters`).
    pub members: Vec<ServerAddress>,
    pub primary: Option<ServerAddress>,
    pub me: Option<ServerAddress>,
    pub tags: Document,
    pub max_bson_object_size: i64,
    pub max_message_size_bytes: i64,
    pub max_write_batch_size: i64,
    /// The error of the last failed check.
    pub error: Option<String>,
}

impl ServerDescription {
    /// A server that has not been checked yet.
    pub fn unknown(address: ServerAddress) -> ServerDescription {
        ServerDescription {
            address,
            server_type: ServerType::Unknown,
            round_trip_time: None,
            last_update_time: None,
            last_write_date: None,
            set_name: None,
            set_version: None,
            election_id: None,
            members: Vec::new(),
            primary: None,
            me: None,
            tags: Document::new(),
            max_bson_object_size: cairn_types::limits::BSON_OBJECT_SIZE_MAX_BYTES as i64,
            max_message_size_bytes: cairn_types::limits::MESSAGE_SIZE_MAX_BYTES as i64,
            max_write_batch_size: cairn_types::limits::WRITE_BATCH_SIZE_MAX as i64,
            error: None,
        }
    }

    /// A server whose check failed.
    pub fn failed(
        address: ServerAddress,
        error: impl Into<String>,
        now: Instant,
    ) -> ServerDescription {
        ServerDescription {
            last_update_time: Some(now),
            error: Some(error.into()),
            ..ServerDescription::unknown(address)
        }
    }

    /// The description from a `hello` reply that took `round_trip_time`.
    pub fn from_hello(
        address: ServerAddress,
        reply: &Document,
        round_trip_time: Duration,
        now: Instant,
    ) -> ServerDescription {
        let mut description = ServerDescription::unknown(address);
        description.last_update_time = Some(now);
        description.round_trip_time = Some(round_trip_time);
        if !crate::execute::reply_ok(reply) {
            description.error = Some(format!("hello failed: {reply}"));
            return description;
        }
        let flag = |key: &str| reply.get_bool(key).unwrap_or(false);
        description.set_name = reply.get_str("setName").ok().map(str::to_string);
        description.server_type = if flag("isreplicaset") {
            ServerType::RsGhost
        } else if description.set_name.is_some() {
            if flag("isWritablePrimary") || flag("ismaster") {
                ServerType::RsPrimary
            } else if flag("secondary") {
                ServerType::RsSecondary
            } else if flag("arbiterOnly") {
                ServerType::RsArbiter
            } else {
                ServerType::RsOther
            }
        } else {
            ServerType::Standalone
        };
        for key in ["hosts", "passives", "arbiters"] {
            if let Ok(hosts) = reply.get_array(key) {
                for host in hosts.iter().filter_map(Bson::as_str) {
                    if let Ok(address) = ServerAddress::parse(host) {
                        description.members.push(address);
                    }
                }
            }
        }
        description.primary = reply
            .get_str("primary")
            .ok()
            .and_then(|p| ServerAddress::parse(p).ok());
        description.me = reply
            .get_str("me")
            .ok()
            .and_then(|me| ServerAddress::parse(me).ok());
        description.set_version = reply.get("setVersion").and_then(bson_as_i64);
        description.election_id = reply.get_object_id("electionId").ok();
        description.tags = reply.get_document("tags").cloned().unwrap_or_default();
        description.last_write_date = reply
            .get_document("lastWrite")
            .ok()
            .and_then(|last_write| last_write.get_datetime("lastWriteDate").ok().copied());
        if let Some(size) = reply.get("maxBsonObjectSize").and_then(bson_as_i64) {
            description.max_bson_object_size = size;
        }
        if let Some(size) = reply.get("maxMessageSizeBytes").and_then(bson_as_i64) {
            description.max_message_size_bytes = size;
        }
        if let Some(size) = reply.get("maxWriteBatchSize").and_then(bson_as_i64) {
            description.max_write_batch_size = size;
        }
        description
    }

    /// Whether the member has every tag of `tag_set` (the empty set matches every member).
    fn matches_tag_set(&self, tag_set: &Document) -> bool {
        tag_set
            .iter()
            .all(|(tag, value)| self.tags.get(tag) == Some(value))
    }
}

/// The kind of deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyType {
    /// One server, used whatever its type (a standalone, or `directConnection=true`).
    Single,
    ReplicaSetNoPrimary,
    ReplicaSetWithPrimary,
    /// Not known yet (several seeds and no `replicaSet`, before any reply).
    Unknown,
}

/// What an operation needs from the server it runs on.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// A write (or a command that must run on the primary).
    Write,
    /// A read with this read preference.
    Read(ReadPreference),
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::Write => write!(f, "a writable primary"),
            Selection::Read(preference) => write!(f, "read preference {preference}"),
        }
    }
}

/// MongoDB's `idleWritePeriodMS`: a primary writes a no-op at least this often.
pub const IDLE_WRITE_PERIOD: Duration = Duration::from_secs(10);

/// The smallest `maxStalenessSeconds` a client may ask for.
pub const MAX_STALENESS_MIN: Duration = Duration::from_secs(90);

/// The whole deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct TopologyDescription {
    pub topology_type: TopologyType,
    pub set_name: Option<String>,
    pub servers: BTreeMap<ServerAddress, ServerDescription>,
    pub max_set_version: Option<i64>,
    pub max_election_id: Option<ObjectId>,
    pub heartbeat_frequency: Duration,
    pub local_threshold: Duration,
}

impl TopologyDescription {
    /// The description before any check: the seeds, all unknown.
    pub fn new(options: &ClientOptions) -> TopologyDescription {
        let topology_type = if options.direct_connection == Some(true) {
            TopologyType::Single
        } else if options.replica_set.is_some() {
            TopologyType::ReplicaSetNoPrimary
        } else {
            TopologyType::Unknown
        };
        TopologyDescription {
            topology_type,
            set_name: options.replica_set.clone(),
            servers: options
                .hosts
                .iter()
                .map(|address| (address.clone(), ServerDescription::unknown(address.clone())))
                .collect(),
            max_set_version: None,
            max_election_id: None,
            heartbeat_frequency: options.heartbeat_frequency,
            local_threshold: options.local_threshold,
        }
    }

    /// Applies a new description of one server (SDAM's state machine). Descriptions of servers
    /// that are no longer part of the topology are ignored.
    pub fn update(&mut self, mut description: ServerDescription) {
        let Some(previous) = self.servers.get(&description.address) else {
            return;
        };
        // Round trip times are smoothed (alpha 0.2); a failure forgets them.
        if let (Some(old), Some(new)) = (previous.round_trip_time, description.round_trip_time) {
            description.round_trip_time = Some(old.mul_f64(0.8) + new.mul_f64(0.2));
        }
        let address = description.address.clone();
        let server_type = description.server_type;
        self.servers.insert(address.clone(), description);
        match self.topology_type {
            TopologyType::Single => {
                let server = &self.servers[&address];
                if let (Some(expected), Some(actual)) = (&self.set_name, &server.set_name)
                    && expected != actual
                {
                    let message = format!(
                        "replica set name mismatch: expected {expected}, {address} is in {actual}"
                    );
                    self.servers.insert(
                        address.clone(),
                        ServerDescription::failed(address, message, Instant::now()),
                    );
                }
            }
            TopologyType::Unknown => match server_type {
                ServerType::Standalone => {
                    if self.servers.len() == 1 {
                        self.topology_type = TopologyType::Single;
                    } else {
                        self.servers.remove(&address);
                    }
                }
                ServerType::RsPrimary => self.update_from_primary(&address),
                ServerType::RsSecondary | ServerType::RsArbiter | ServerType::RsOther => {
                    self.topology_type = TopologyType::ReplicaSetNoPrimary;
                    self.update_without_primary(&address);
                }
                ServerType::Unknown | ServerType::RsGhost => {}
            },
            TopologyType::ReplicaSetNoPrimary | TopologyType::ReplicaSetWithPrimary => {
                match server_type {
                    ServerType::Standalone => {
                        self.servers.remove(&address);
                    }
                    ServerType::RsPrimary => self.update_from_primary(&address),
                    ServerType::RsSecondary | ServerType::RsArbiter | ServerType::RsOther => {
                        self.update_without_primary(&address)
                    }
                    ServerType::Unknown | ServerType::RsGhost => {}
                }
                self.check_if_has_primary();
            }
        }
        let primaries = self
            .servers
            .values()
            .filter(|s| s.server_type == ServerType::RsPrimary)
            .count();
        assert!(
            primaries <= 1,
            "a topology description has at most one primary"
        );
    }

    fn update_from_primary(&mut self, address: &ServerAddress) {
        let server = self.servers[address].clone();
        match (&self.set_name, &server.set_name) {
            (None, name) => self.set_name = name.clone(),
            (Some(expected), Some(actual)) if expected != actual => {
                self.servers.remove(address);
                self.check_if_has_primary();
                return;
            }
            _ => {}
        }
        // A primary from an older term or configuration than one already seen is stale.
        if let (Some(version), Some(election_id)) = (server.set_version, server.election_id) {
            let stale = match (self.max_set_version, self.max_election_id) {
                (Some(max_version), Some(max_election_id)) => {
                    (max_version, max_election_id.bytes()) > (version, election_id.bytes())
                }
                _ => false,
            };
            if stale {
                let message = "stale primary: an older election id or set version".to_string();
                self.servers.insert(
                    address.clone(),
                    ServerDescription::failed(address.clone(), message, Instant::now()),
                );
                self.check_if_has_primary();
                return;
            }
            self.max_election_id = Some(election_id);
        }
        if let Some(version) = server.set_version
            && self.max_set_version.is_none_or(|max| version > max)
        {
            self.max_set_version = Some(version);
        }
        for other in self.servers.values_mut() {
            if other.address != *address && other.server_type == ServerType::RsPrimary {
                *other = ServerDescription::unknown(other.address.clone());
            }
        }
        for member in &server.members {
            self.servers
                .entry(member.clone())
                .or_insert_with(|| ServerDescription::unknown(member.clone()));
        }
        self.servers
            .retain(|candidate, _| server.members.contains(candidate) || candidate == address);
        self.topology_type = TopologyType::ReplicaSetWithPrimary;
    }

    fn update_without_primary(&mut self, address: &ServerAddress) {
        let server = self.servers[address].clone();
        match (&self.set_name, &server.set_name) {
            (None, name) => self.set_name = name.clone(),
            (Some(expected), Some(actual)) if expected != actual => {
                self.servers.remove(address);
                return;
            }
            _ => {}
        }
        for member in &server.members {
            self.servers
                .entry(member.clone())
                .or_insert_with(|| ServerDescription::unknown(member.clone()));
        }
        // A member that calls itself by another name was reached through an alias.
        if let Some(me) = &server.me
            && me != address
        {
            self.servers.remove(address);
            return;
        }
        // A member names the primary: check it soon (it stays unknown until its own reply).
        if let Some(primary) = &server.primary {
            self.servers
                .entry(primary.clone())
                .or_insert_with(|| ServerDescription::unknown(primary.clone()));
        }
    }

    fn check_if_has_primary(&mut self) {
        self.topology_type = if self
            .servers
            .values()
            .any(|s| s.server_type == ServerType::RsPrimary)
        {
            TopologyType::ReplicaSetWithPrimary
        } else {
            TopologyType::ReplicaSetNoPrimary
        };
    }

    /// The primary, if one is known.
    pub fn primary(&self) -> Option<&ServerDescription> {
        self.servers
            .values()
            .find(|s| s.server_type == ServerType::RsPrimary)
    }

    /// The servers suitable for `selection` inside the latency window (the fastest suitable
    /// server's round trip time plus `local_threshold`); the caller picks one of them at random.
    /// Empty when none is suitable now (the caller waits for the monitor and tries again); an
    /// error when the selection can never succeed (an invalid `maxStalenessSeconds`).
    pub fn select(&self, selection: &Selection, now: Instant) -> Result<Vec<&ServerDescription>> {
        let suitable: Vec<&ServerDescription> = match self.topology_type {
            TopologyType::Unknown => Vec::new(),
            TopologyType::Single => self
                .servers
                .values()
                .filter(|s| s.server_type != ServerType::Unknown && s.error.is_none())
                .collect(),
            TopologyType::ReplicaSetNoPrimary | TopologyType::ReplicaSetWithPrimary => {
                match selection {
                    Selection::Write => self.primary().into_iter().collect(),
                    Selection::Read(preference) => self.select_replica_set_read(preference, now)?,
                }
            }
        };
        let fastest = suitable.iter().filter_map(|s| s.round_trip_time).min();
        Ok(match fastest {
            None => suitable,
            Some(fastest) => suitable
                .into_iter()
                .filter(|s| {
                    s.round_trip_time
                        .is_none_or(|rtt| rtt <= fastest + self.local_threshold)
                })
                .collect(),
        })
    }

    fn select_replica_set_read(
        &self,
        preference: &ReadPreference,
        now: Instant,
    ) -> Result<Vec<&ServerDescription>> {
        if let Some(max_staleness) = preference.max_staleness {
            let floor = MAX_STALENESS_MIN.max(self.heartbeat_frequency + IDLE_WRITE_PERIOD);
            if max_staleness < floor {
                return Err(Error::new(ErrorKind::ServerSelection {
                    message: format!(
                        "maxStalenessSeconds must be at least {} seconds, got {}",
                        floor.as_secs(),
                        max_staleness.as_secs()
                    ),
                }));
            }
        }
        let primary = self.primary();
        let eligible = |types: &[ServerType]| -> Vec<&ServerDescription> {
            let candidates: Vec<&ServerDescription> = self
                .servers
                .values()
                .filter(|s| types.contains(&s.server_type))
                .filter(|s| match (preference.max_staleness, s.server_type) {
                    (Some(max_staleness), ServerType::RsSecondary) => self
                        .staleness(s, primary, now)
                        .is_none_or(|staleness| staleness <= max_staleness),
                    _ => true,
                })
                .collect();
            if preference.tag_sets.is_empty() {
                return candidates;
            }
            for tag_set in &preference.tag_sets {
                let matching: Vec<&ServerDescription> = candidates
                    .iter()
                    .copied()
                    .filter(|s| s.matches_tag_set(tag_set))
                    .collect();
                if !matching.is_empty() {
                    return matching;
                }
            }
            Vec::new()
        };
        let secondaries = || eligible(&[ServerType::RsSecondary]);
        Ok(match preference.mode {
            ReadPreferenceMode::Primary => primary.into_iter().collect(),
            ReadPreferenceMode::PrimaryPreferred => match primary {
                Some(primary) => vec![primary],
                None => secondaries(),
            },
            ReadPreferenceMode::Secondary => secondaries(),
            ReadPreferenceMode::SecondaryPreferred => {
                let found = secondaries();
                if found.is_empty() {
                    primary.into_iter().collect()
                } else {
                    found
                }
            }
            ReadPreferenceMode::Nearest => {
                eligible(&[ServerType::RsPrimary, ServerType::RsSecondary])
            }
        })
    }

    /// Estimated staleness of a secondary (the max-staleness spec): relative to the primary when
    /// there is one, else to the secondary with the newest write.
    fn staleness(
        &self,
        secondary: &ServerDescription,
        primary: Option<&ServerDescription>,
        now: Instant,
    ) -> Option<Duration> {
        let write_ms = |s: &ServerDescription| s.last_write_date.map(|d| d.timestamp_millis());
        let heartbeat_ms = self.heartbeat_frequency.as_millis() as i64;
        let staleness_ms = match primary {
            Some(primary) => {
                let update_ms = |s: &ServerDescription| {
                    s.last_update_time
                        .map(|t| -(now.saturating_duration_since(t).as_millis() as i64))
                };
                (update_ms(secondary)? - write_ms(secondary)?)
                    - (update_ms(primary)? - write_ms(primary)?)
                    + heartbeat_ms
            }
            None => {
                let newest = self
                    .servers
                    .values()
                    .filter(|s| s.server_type == ServerType::RsSecondary)
                    .filter_map(write_ms)
                    .max()?;
                newest - write_ms(secondary)? + heartbeat_ms
            }
        };
        Some(Duration::from_millis(staleness_ms.max(0) as u64))
    }

    /// Whether the read preference must be sent as `primaryPreferred` because this is a direct
    /// connection to a member that may not be the primary (the server selection spec's rule for
    /// topology type Single).
    pub fn is_direct_to_replica_set_member(&self, address: &ServerAddress) -> bool {
        self.topology_type == TopologyType::Single
            && self.servers.get(address).is_some_and(|s| {
                matches!(
                    s.server_type,
                    ServerType::RsSecondary | ServerType::RsOther | ServerType::RsArbiter
                )
            })
    }
}

impl fmt::Display for TopologyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.topology_type)?;
        if let Some(name) = &self.set_name {
            write!(f, " '{name}'")?;
        }
        write!(f, ": [")?;
        for (i, server) in self.servers.values().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{} {:?}", server.address, server.server_type)?;
            if let Some(error) = &server.error {
                write!(f, " ({error})")?;
            }
        }
        write!(f, "]")
    }
}

/// The live topology: the description, waiters in server selection, and the monitor task.
pub struct Topology {
    description: watch::Sender<TopologyDescription>,
    check_requested: Arc<Notify>,
    next_candidate: AtomicUsize,
    server_selection_timeout: Duration,
    monitor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Topology {
    /// The topology of the seed list in `options`, every server unknown.
    pub(crate) fn new(options: &ClientOptions) -> Topology {
        let (description, _) = watch::channel(TopologyDescription::new(options));
        Topology {
            description,
            check_requested: Arc::new(Notify::new()),
            next_candidate: AtomicUsize::new(0),
            server_selection_timeout: options.server_selection_timeout,
            monitor: Mutex::new(None),
        }
    }

    /// The monitor task; it is aborted when the topology is dropped.
    pub(crate) fn set_monitor(&self, monitor: tokio::task::JoinHandle<()>) {
        let previous = self.monitor.lock().expect("monitor lock").replace(monitor);
        assert!(previous.is_none(), "a topology has one monitor");
    }

    /// Notified when an operation wants the servers checked now.
    pub(crate) fn check_requested(&self) -> Arc<Notify> {
        self.check_requested.clone()
    }

    /// A copy of the current description.
    pub fn description(&self) -> TopologyDescription {
        self.description.borrow().clone()
    }

    pub(crate) fn with_description<R>(&self, read: impl FnOnce(&TopologyDescription) -> R) -> R {
        read(&self.description.borrow())
    }

    /// Applies new server descriptions (from the monitor, or a failure seen by an operation)
    /// and wakes the operations waiting in server selection.
    pub(crate) fn update(&self, servers: Vec<ServerDescription>) {
        self.description.send_modify(|description| {
            for server in servers {
                description.update(server);
            }
        });
    }

    /// Asks the monitor to check every server now (at most every 500 ms).
    pub(crate) fn request_check(&self) {
        self.check_requested.notify_one();
    }

    /// Waits until a server suits `selection` (or `serverSelectionTimeoutMS` passes) and picks
    /// one of the suitable servers, round-robin.
    pub async fn select_server(&self, selection: &Selection) -> Result<ServerAddress> {
        let started = Instant::now();
        let deadline = started + self.server_selection_timeout;
        let mut receiver = self.description.subscribe();
        loop {
            let candidates: Vec<ServerAddress> = {
                let description = receiver.borrow_and_update();
                description
                    .select(selection, Instant::now())?
                    .into_iter()
                    .map(|s| s.address.clone())
                    .collect()
            };
            if !candidates.is_empty() {
                let index = self.next_candidate.fetch_add(1, Ordering::Relaxed) % candidates.len();
                return Ok(candidates[index].clone());
            }
            self.request_check();
            match tokio::time::timeout_at(deadline.into(), receiver.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => {
                    return Err(Error::new(ErrorKind::ServerSelection {
                        message: format!(
                            "no server available for {selection} after {} ms; topology: {}",
                            started.elapsed().as_millis(),
                            *self.description.borrow()
                        ),
                    }));
                }
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(monitor) = self.monitor.lock().expect("monitor lock").take() {
            monitor.abort();
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topology({})", *self.description.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn address(port: u16) -> ServerAddress {
        ServerAddress::new("h", port)
    }

    fn options(seeds: &[u16], replica_set: Option<&str>) -> ClientOptions {
        ClientOptions {
            hosts: seeds.iter().map(|p| address(*p)).collect(),
            replica_set: replica_set.map(str::to_string),
            ..ClientOptions::default()
        }
    }

    fn member(port: u16, kind: &str, rtt_ms: u64, now: Instant) -> ServerDescription {
        let members = ["h:1", "h:2", "h:3"];
        let mut reply = doc! {"ok": 1, "setName": "rs0", "hosts": members.to_vec(), "me": format!("h:{port}"), "setVersion": 1};
        match kind {
            "primary" => {
                reply.insert("isWritablePrimary", true);
                reply.insert(
                    "electionId",
                    ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                );
            }
            "secondary" => {
                reply.insert("secondary", true);
            }
            _ => {}
        }
        reply.insert("primary", "h:1");
        ServerDescription::from_hello(address(port), &reply, Duration::from_millis(rtt_ms), now)
    }

    fn addresses(selected: Vec<&ServerDescription>) -> Vec<u16> {
        selected.into_iter().map(|s| s.address.port).collect()
    }

    fn replica_set(now: Instant, rtts: [u64; 3]) -> TopologyDescription {
        let mut topology = TopologyDescription::new(&options(&[1], Some("rs0")));
        topology.update(member(1, "primary", rtts[0], now));
        topology.update(member(2, "secondary", rtts[1], now));
        topology.update(member(3, "secondary", rtts[2], now));
        topology
    }

    #[test]
    fn one_standalone_seed_becomes_single_and_is_selected_for_everything() {
        let now = Instant::now();
        let mut topology = TopologyDescription::new(&options(&[1], None));
        assert_eq!(topology.topology_type, TopologyType::Unknown);
        assert!(topology.select(&Selection::Write, now).unwrap().is_empty());
        topology.update(ServerDescription::from_hello(
            address(1),
            &doc! {"ok": 1, "isWritablePrimary": true},
            Duration::from_millis(1),
            now,
        ));
        assert_eq!(topology.topology_type, TopologyType::Single);
        assert_eq!(
            addresses(topology.select(&Selection::Write, now).unwrap()),
            vec![1]
        );
        for preference in [
            ReadPreference::secondary(),
            ReadPreference::nearest(),
            ReadPreference::primary(),
        ] {
            assert_eq!(
                addresses(topology.select(&Selection::Read(preference), now).unwrap()),
                vec![1]
            );
        }
        // A failed check makes it unselectable until it answers again.
        topology.update(ServerDescription::failed(address(1), "refused", now));
        assert!(topology.select(&Selection::Write, now).unwrap().is_empty());
    }

    #[test]
    fn a_primary_names_the_members_and_removes_strangers() {
        let now = Instant::now();
        let mut topology = TopologyDescription::new(&options(&[1, 9], Some("rs0")));
        topology.update(member(1, "primary", 1, now));
        assert_eq!(topology.topology_type, TopologyType::ReplicaSetWithPrimary);
        assert_eq!(
            topology.servers.keys().map(|a| a.port).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            topology.servers[&address(2)].server_type,
            ServerType::Unknown
        );
        // The primary fails: no primary any more.
        topology.update(ServerDescription::failed(address(1), "gone", now));
        assert_eq!(topology.topology_type, TopologyType::ReplicaSetNoPrimary);
        assert!(topology.select(&Selection::Write, now).unwrap().is_empty());
    }

    #[test]
    fn set_name_mismatch_and_standalones_are_dropped_from_a_replica_set() {
        let now = Instant::now();
        let mut topology = TopologyDescription::new(&options(&[1, 2], Some("rs0")));
        let foreign =
            doc! {"ok": 1, "setName": "other", "isWritablePrimary": true, "hosts": ["h:1"]};
        topology.update(ServerDescription::from_hello(
            address(1),
            &foreign,
            Duration::ZERO,
            now,
        ));
        topology.update(ServerDescription::from_hello(
            address(2),
            &doc! {"ok": 1},
            Duration::ZERO,
            now,
        ));
        assert!(topology.servers.is_empty());
        assert_eq!(topology.topology_type, TopologyType::ReplicaSetNoPrimary);
    }

    #[test]
    fn a_stale_primary_is_ignored() {
        let now = Instant::now();
        let mut topology = replica_set(now, [1, 1, 1]);
        let old = doc! {"ok": 1, "setName": "rs0", "isWritablePrimary": true, "hosts": ["h:1", "h:2", "h:3"],
        "setVersion": 1, "electionId": ObjectId::from_bytes([0; 12])};
        topology.update(ServerDescription::from_hello(
            address(2),
            &old,
            Duration::ZERO,
            now,
        ));
        assert_eq!(topology.primary().unwrap().address, address(1));
        assert_eq!(
            topology.servers[&address(2)].server_type,
            ServerType::Unknown
        );
        // A newer primary replaces the old one.
        let new = doc! {"ok": 1, "setName": "rs0", "isWritablePrimary": true, "hosts": ["h:1", "h:2", "h:3"],
        "setVersion": 1, "electionId": ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])};
        topology.update(ServerDescription::from_hello(
            address(3),
            &new,
            Duration::ZERO,
            now,
        ));
        assert_eq!(topology.primary().unwrap().address, address(3));
        assert_eq!(
            topology.servers[&address(1)].server_type,
            ServerType::Unknown
        );
    }

    #[test]
    fn selection_by_mode() {
        let now = Instant::now();
        let topology = replica_set(now, [1, 1, 1]);
        let select = |preference: ReadPreference| {
            addresses(topology.select(&Selection::Read(preference), now).unwrap())
        };
        assert_eq!(
            addresses(topology.select(&Selection::Write, now).unwrap()),
            vec![1]
        );
        assert_eq!(select(ReadPreference::primary()), vec![1]);
        assert_eq!(select(ReadPreference::primary_preferred()), vec![1]);
        assert_eq!(select(ReadPreference::secondary()), vec![2, 3]);
        assert_eq!(select(ReadPreference::secondary_preferred()), vec![2, 3]);
        assert_eq!(select(ReadPreference::nearest()), vec![1, 2, 3]);

        let mut no_primary = topology.clone();
        no_primary.update(ServerDescription::failed(address(1), "down", now));
        let select = |preference: ReadPreference| {
            addresses(
                no_primary
                    .select(&Selection::Read(preference), now)
                    .unwrap(),
            )
        };
        assert_eq!(select(ReadPreference::primary()), Vec::<u16>::new());
        assert_eq!(select(ReadPreference::primary_preferred()), vec![2, 3]);

        let mut only_primary = topology.clone();
        only_primary.update(ServerDescription::failed(address(2), "down", now));
        only_primary.update(ServerDescription::failed(address(3), "down", now));
        let select = |preference: ReadPreference| {
            addresses(
                only_primary
                    .select(&Selection::Read(preference), now)
                    .unwrap(),
            )
        };
        assert_eq!(select(ReadPreference::secondary()), Vec::<u16>::new());
        assert_eq!(select(ReadPreference::secondary_preferred()), vec![1]);
    }

    #[test]
    fn latency_window_keeps_the_fast_servers() {
        let now = Instant::now();
        let topology = replica_set(now, [50, 5, 19]);
        let selected = topology
            .select(&Selection::Read(ReadPreference::nearest()), now)
            .unwrap();
        assert_eq!(
            addresses(selected),
            vec![2, 3],
            "5 ms + 15 ms window excludes 50 ms"
        );
    }

    #[test]
    fn tag_sets_are_tried_in_order() {
        let now = Instant::now();
        let mut topology = replica_set(now, [1, 1, 1]);
        let mut tagged = topology.servers[&address(3)].clone();
        tagged.tags = doc! {"dc": "ny", "rack": "2"};
        topology.servers.insert(address(3), tagged);
        let select = |tags: Vec<Document>| {
            addresses(
                topology
                    .select(
                        &Selection::Read(ReadPreference::secondary().with_tag_sets(tags)),
                        now,
                    )
                    .unwrap(),
            )
        };
        assert_eq!(select(vec![doc! {"dc": "ny"}]), vec![3]);
        assert_eq!(select(vec![doc! {"dc": "sf"}, doc! {"rack": "2"}]), vec![3]);
        assert_eq!(select(vec![doc! {"dc": "sf"}]), Vec::<u16>::new());
        assert_eq!(select(vec![doc! {"dc": "sf"}, doc! {}]), vec![2, 3]);
    }

    #[test]
    fn max_staleness_filters_lagging_secondaries() {
        let now = Instant::now();
        let mut topology = replica_set(now, [1, 1, 1]);
        let write_at = |ms: i64| Some(DateTime::from_millis(1_000_000 + ms));
        topology
            .servers
            .get_mut(&address(1))
            .unwrap()
            .last_write_date = write_at(0);
        topology
            .servers
            .get_mut(&address(2))
            .unwrap()
            .last_write_date = write_at(-5_000);
        topology
            .servers
            .get_mut(&address(3))
            .unwrap()
            .last_write_date = write_at(-200_000);
        let preference = ReadPreference::secondary().with_max_staleness(Duration::from_secs(90));
        assert_eq!(
            addresses(topology.select(&Selection::Read(preference), now).unwrap()),
            vec![2]
        );
        let too_small = ReadPreference::secondary().with_max_staleness(Duration::from_secs(10));
        let error = topology
            .select(&Selection::Read(too_small), now)
            .unwrap_err();
        assert!(error.is_server_selection_error());
    }

    #[test]
    fn direct_connection_to_a_secondary() {
        let now = Instant::now();
        let mut options = options(&[2], Some("rs0"));
        options.direct_connection = Some(true);
        let mut topology = TopologyDescription::new(&options);
        topology.update(member(2, "secondary", 1, now));
        assert_eq!(topology.topology_type, TopologyType::Single);
        assert_eq!(
            addresses(topology.select(&Selection::Write, now).unwrap()),
            vec![2]
        );
        assert!(topology.is_direct_to_replica_set_member(&address(2)));
    }
}
