//! Running one command: server selection, the topology monitor, and the RPC.
//!
//! [`Core`] is what every [`Client`](crate::Client) clone shares: the options, the [`Topology`],
//! the channel pool, and the newest `$clusterTime` seen (gossiped on every command, as MongoDB's
//! drivers do). The monitor task here checks every server with `hello` each
//! `heartbeatFrequencyMS`, and at once when an operation asks (no server suitable, a network
//! error, a "not primary" error); it holds only a weak reference and ends with the last client.
//!
//! Reads are retried once on another selection after a network error or a state-change error
//! (MongoDB's retryable reads). Writes are not retried: retryable writes need sessions
//! (`lsid` + `txnNumber`), which arrive with the replica set.

use crate::concern::{Inherited, ReadPreference, ReadPreferenceMode};
use crate::error::{Error, Result, bson_as_i64};
use crate::options::{ClientOptions, ServerAddress};
use crate::pool::Pool;
use crate::topology::Selection;
use crate::topology::{ServerDescription, Topology};
use bson::{Bson, Document, doc};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// State shared by every clone of a client.
pub(crate) struct Core {
    pub(crate) options: ClientOptions,
    pub(crate) topology: Topology,
    pool: Pool,
    cluster_time: Mutex<Option<Document>>,
    /// The runtime the client was made on: cursors dropped anywhere send killCursors on it.
    pub(crate) runtime: tokio::runtime::Handle,
}

/// A reply and the server that sent it (cursors must send getMore to the same server).
pub(crate) struct Reply {
    pub(crate) document: Document,
    pub(crate) address: ServerAddress,
}

impl Core {
    /// Must be called inside a tokio runtime: it spawns the monitor.
    pub(crate) fn start(options: ClientOptions) -> Result<Arc<Core>> {
        if options.hosts.is_empty() {
            return Err(Error::invalid_argument("no hosts to connect to"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument("a client must be created inside a tokio runtime")
        })?;
        let core = Arc::new(Core {
            pool: Pool::new(&options),
            topology: Topology::new(&options),
            options,
            cluster_time: Mutex::new(None),
            runtime: runtime.clone(),
        });
        let monitor = runtime.spawn(monitor(
            Arc::downgrade(&core),
            core.topology.check_requested(),
        ));
        core.topology.set_monitor(monitor);
        Ok(core)
    }

    /// The newest `$clusterTime` seen in a reply.
    pub(crate) fn cluster_time(&self) -> Option<Document> {
        self.cluster_time.lock().expect("cluster time lock").clone()
    }

    /// A read: selects by `read_preference` (primary when unset) and retries once after a
    /// network or state-change error.
    pub(crate) async fn read(
        &self,
        db: &str,
        command: Document,
        read_preference: Option<&ReadPreference>,
    ) -> Result<Reply> {
        let selection = Selection::Read(read_preference.cloned().unwrap_or_default());
        let address = self.topology.select_server(&selection).await?;
        match self
            .run_on(&address, db, command.clone(), read_preference)
            .await
        {
            Err(error) if error.is_network_error() || error.is_state_change_error() => {
                tracing::debug!(%address, %error, "retrying a read once");
                let address = self.topology.select_server(&selection).await?;
                let document = self.run_on(&address, db, command, read_preference).await?;
                Ok(Reply { document, address })
            }
            result => Ok(Reply {
                document: result?,
                address,
            }),
        }
    }

    /// A write (or any command that must go to the primary).
    pub(crate) async fn write(&self, db: &str, command: Document) -> Result<Reply> {
        let address = self.topology.select_server(&Selection::Write).await?;
        let document = self.run_on(&address, db, command, None).await?;
        Ok(Reply { document, address })
    }

    /// Sends `command` to `address` as is, plus `$db`, `$readPreference` (modes other than
    /// primary) and `$clusterTime`. An `{ok: 0}` reply is an error; write errors are left in the
    /// reply for the caller.
    pub(crate) async fn run_on(
        &self,
        address: &ServerAddress,
        db: &str,
        mut command: Document,
        read_preference: Option<&ReadPreference>,
    ) -> Result<Document> {
        let direct_to_member = self
            .topology
            .with_description(|d| d.is_direct_to_replica_set_member(address));
        match read_preference {
            Some(preference) if preference.mode != ReadPreferenceMode::Primary => {
                command.insert("$readPreference", preference.to_document());
            }
            _ if direct_to_member && !command.contains_key("$readPreference") => {
                command.insert(
                    "$readPreference",
                    ReadPreference::primary_preferred().to_document(),
                );
            }
            _ => {}
        }
        if let Some(cluster_time) = self.cluster_time()
            && !command.contains_key("$clusterTime")
        {
            command.insert("$clusterTime", cluster_time);
        }
        command.insert("$db", db);
        let reply = match self.call(address, &command).await {
            Ok(reply) => reply,
            Err(error) => {
                if error.is_network_error() {
                    self.mark_failed(address, &error);
                }
                return Err(error);
            }
        };
        if let Ok(cluster_time) = reply.get_document("$clusterTime") {
            self.advance_cluster_time(cluster_time);
        }
        if reply_ok(&reply) {
            return Ok(reply);
        }
        let error = Error::from_command_reply(reply);
        if error.is_state_change_error() {
            self.mark_failed(address, &error);
        }
        Err(error)
    }

    /// One RPC, nothing added.
    async fn call(&self, address: &ServerAddress, command: &Document) -> Result<Document> {
        // Written after room for the gRPC head, so the message is framed without a copy.
        let mut buffer = cairn_proto::framing::document_buffer();
        command
            .to_writer(&mut buffer)
            .map_err(Error::serialization)?;
        let size = buffer.len() - cairn_proto::framing::FRAME_HEAD_BYTES_MAX;
        let limit = cairn_types::limits::MESSAGE_SIZE_MAX_BYTES;
        if size > limit {
            let name = command.keys().next().cloned().unwrap_or_default();
            return Err(Error::invalid_argument(format!(
                "the {name} command is {size} bytes, over the {limit} byte message limit"
            )));
        }
        let reply = self.pool.connection(address)?.run_command(buffer).await?;
        Document::from_reader(reply.as_ref()).map_err(|e| {
            Error::invalid_reply(format!(
                "the reply from {address} is not a BSON document: {e}"
            ))
        })
    }

    fn mark_failed(&self, address: &ServerAddress, error: &Error) {
        let failed = ServerDescription::failed(address.clone(), error.to_string(), Instant::now());
        self.topology.update(vec![failed]);
        self.topology.request_check();
    }

    fn advance_cluster_time(&self, candidate: &Document) {
        let Ok(time) = candidate.get_timestamp("clusterTime") else {
            return;
        };
        let mut current = self.cluster_time.lock().expect("cluster time lock");
        let newer = match current
            .as_ref()
            .and_then(|c| c.get_timestamp("clusterTime").ok())
        {
            Some(known) => (time.time, time.increment) > (known.time, known.increment),
            None => true,
        };
        if newer {
            *current = Some(candidate.clone());
        }
    }

    /// Checks one server with `hello`.
    async fn check(&self, address: ServerAddress) -> ServerDescription {
        let mut hello = doc! {"hello": 1, "$db": "admin"};
        if let Some(app_name) = &self.options.app_name {
            hello.insert("client", doc! {"application": {"name": app_name}});
        }
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(self.options.connect_timeout, self.call(&address, &hello)).await;
        let now = Instant::now();
        match outcome {
            Ok(Ok(reply)) => ServerDescription::from_hello(address, &reply, now - started, now),
            Ok(Err(error)) => ServerDescription::failed(address, error.to_string(), now),
            Err(_) => ServerDescription::failed(address, "hello timed out", now),
        }
    }
}

/// Whether a reply says `ok: 1`.
pub(crate) fn reply_ok(reply: &Document) -> bool {
    match reply.get("ok") {
        Some(Bson::Boolean(ok)) => *ok,
        Some(value) => bson_as_i64(value) == Some(1),
        None => false,
    }
}

/// The background monitor: checks every server, then sleeps for the heartbeat interval or until
/// an operation asks for a check (but never checks more often than every 500 ms).
async fn monitor(core: Weak<Core>, check_requested: Arc<Notify>) {
    loop {
        let started = Instant::now();
        let heartbeat_frequency = {
            let Some(core) = core.upgrade() else { return };
            let addresses: Vec<ServerAddress> = core
                .topology
                .with_description(|d| d.servers.keys().cloned().collect());
            let checks = addresses.into_iter().map(|address| core.check(address));
            let descriptions = futures::future::join_all(checks).await;
            core.topology.update(descriptions);
            let known: Vec<ServerAddress> = core
                .topology
                .with_description(|d| d.servers.keys().cloned().collect());
            core.pool.retain(|address| known.contains(address));
            core.options.heartbeat_frequency
        };
        let earliest = started + crate::options::HEARTBEAT_FREQUENCY_MIN;
        let _ = tokio::time::timeout(heartbeat_frequency, check_requested.notified()).await;
        tokio::time::sleep_until(earliest.into()).await;
    }
}

/// Adds `readConcern` / `writeConcern` to a command from the effective settings.
pub(crate) fn with_read_concern(mut command: Document, settings: &Inherited) -> Document {
    if let Some(read_concern) = &settings.read_concern {
        command.insert("readConcern", read_concern.to_document());
    }
    command
}

pub(crate) fn with_write_concern(mut command: Document, settings: &Inherited) -> Document {
    if let Some(write_concern) = &settings.write_concern {
        command.insert("writeConcern", write_concern.to_document());
    }
    command
}

/// A duration as whole milliseconds for `maxTimeMS`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
