//! `cairn-bench server [--protocol grpc|wire|both]`: YCSB workloads A, B, C and F (see
//! [`crate::ycsb`]) against a cairn node over gRPC and over MongoDB's wire protocol and, with the
//! `peers` (or `postgres`) feature, against PostgreSQL (a jsonb table) in the same run.
//!
//! - cairn: a node started in this process (`cairn_server::EmbeddedNode`, the same serving code
//!   as `cairnd`: its accept loop on its own tokio runtime, connections on its network threads),
//!   on loopback, data in a temporary directory. The
//!   client threads are tokio tasks on a separate 2-worker runtime.
//!   - `protocol: grpc`: all tasks share one `cairn_driver::Client` (its default pool: 2 HTTP/2
//!     connections that multiplex every call). A read is `find_one({_id})`, an update
//!     `update_one({_id}, {$set: {fieldN: value}})`.
//!   - `protocol: wire`: the same operations through the official `mongodb` driver on the same
//!     port, one `mongodb::Client` with `maxPoolSize=64` (a connection per task, as a
//!     PostgreSQL client needs).
//! - postgres: a private cluster started by `bench/peers/setup-postgres.sh` (Debian's packages)
//!   on loopback, table `usertable (id text primary key, doc jsonb)`, one tokio-postgres
//!   connection per client thread (a PostgreSQL connection runs one statement at a time), with
//!   prepared statements: `SELECT doc ... WHERE id = $1` and
//!   `UPDATE ... SET doc = jsonb_set(doc, '{fieldN}', to_jsonb($2::text)) WHERE id = $1`.
//!
//! Durability is matched in pairs (the `durability` field): `relaxed` is cairn `{w: 1, j:
//! false}` against PostgreSQL `synchronous_commit=off` (both flush their log within a short
//! interval); `durable` is cairn `{w: 1, j: true}` against `synchronous_commit=on` with
//! `fsync=on` (both acknowledge after the log is on disk, and both share an fsync among
//! concurrent committers). Workload C writes nothing and runs once (`durability: read_only`).
//!
//! For each durability, workload and thread count (1, 16, 64), cairn runs (each protocol) and
//! then PostgreSQL, so that all see the same machine state; results are one JSON line each.

use crate::Settings;
use crate::report::{Record, Reporter};
use crate::roundtrip;
use crate::ycsb::{self, Measurement, Plan, Session, WORKLOADS, ZIPFIAN_CONSTANT, Zipfian};
use bson::{Document, doc};
use cairn_driver::concern::Inherited;
use cairn_driver::{Client, Collection, WriteConcern};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

const SUITE: &str = "server";
/// Client threads (tokio tasks) of each measurement.
const THREADS: [usize; 3] = [1, 16, 64];
/// Records per insert command (or SQL statement) while loading.
const LOAD_BATCH_RECORDS: usize = 500;
/// Loading tasks per system.
const LOAD_TASKS: usize = 4;
pub const DATABASE: &str = "ycsb";
pub const COLLECTION: &str = "usertable";
/// The wire driver's connection pool: one connection per client task at the most threads.
const WIRE_POOL_SIZE_MAX: usize = 64;
const _: () = assert!(WIRE_POOL_SIZE_MAX >= THREADS[THREADS.len() - 1]);

/// How big and how long a run is.
#[derive(Debug, Clone, Copy)]
struct Scale {
    records: u64,
    warmup: Duration,
    measure: Duration,
}

impl Scale {
    fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                records: 5_000,
                warmup: Duration::from_millis(300),
                measure: Duration::from_secs(1),
            }
        } else {
            Scale {
                records: 100_000,
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(10),
            }
        }
    }
}

/// The matched durability settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// cairn `j: false`, PostgreSQL `synchronous_commit=off`.
    Relaxed,
    /// cairn `j: true`, PostgreSQL `synchronous_commit=on` (fsync on).
    Durable,
    /// Workload C: no writes.
    ReadOnly,
}

impl Durability {
    fn label(self) -> &'static str {
        match self {
            Durability::Relaxed => "relaxed",
            Durability::Durable => "durable",
            Durability::ReadOnly => "read_only",
        }
    }

    fn journaled(self) -> bool {
        self == Durability::Durable
    }
}

/// How the clients reach cairn (the `protocol` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `cairn.v1.Cairn/RunCommand` through cairn-driver.
    Grpc,
    /// MongoDB's wire protocol (OP_MSG) on the same port through the official `mongodb` driver.
    Wire,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Wire => "wire",
        }
    }
}

/// The fields every record of this suite carries besides the standard ones.
pub fn extra(
    plan: &Plan,
    durability: Durability,
    system_fields: &[(&str, Value)],
) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("durability".into(), durability.label().into());
    extra.insert("records".into(), plan.zipfian.items().into());
    extra.insert("zipf_constant".into(), plan.zipfian.theta().into());
    extra.insert("fields".into(), ycsb::FIELD_COUNT.into());
    extra.insert("field_bytes".into(), ycsb::FIELD_BYTES.into());
    for (key, value) in system_fields {
        extra.insert((*key).into(), value.clone());
    }
    extra
}

pub fn record(
    plan: &Plan,
    system: &str,
    threads: usize,
    measurement: Measurement,
    extra: Map<String, Value>,
) -> Record {
    Record {
        suite: SUITE.into(),
        workload: plan.workload.name.into(),
        system: system.into(),
        threads,
        ops: measurement.ops,
        seconds: measurement.seconds,
        latencies: Some(measurement.latencies),
        extra,
    }
}

pub fn run(settings: &Settings, reporter: &mut Reporter) -> anyhow::Result<()> {
    let scale = Scale::new(settings.quick);
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-client")
        .build()?;
    let zipfian = Arc::new(Zipfian::new(scale.records, ZIPFIAN_CONSTANT));
    let protocols: &[Protocol] = match settings.protocol.as_str() {
        "grpc" => &[Protocol::Grpc],
        "wire" => &[Protocol::Wire],
        _ => &[Protocol::Grpc, Protocol::Wire],
    };
    let mut cairn = if settings.wants_system("cairn") {
        eprintln!(
            "server: starting cairn and loading {} records",
            scale.records
        );
        Some(CairnPeer::start(
            &client_runtime,
            scale.records,
            settings.idle_poll_micros,
        )?)
    } else {
        None
    };
    #[cfg(feature = "postgres")]
    let mut postgres = if settings.wants_system("postgres") {
        eprintln!(
            "server: starting PostgreSQL and loading {} records",
            scale.records
        );
        Some(crate::postgres::PostgresPeer::start(
            &client_runtime,
            scale.records,
        )?)
    } else {
        None
    };
    #[cfg(not(feature = "postgres"))]
    if settings.wants_system("postgres") {
        eprintln!(
            "server: PostgreSQL is a peer: build with `--features peers` (or `postgres`) to measure it"
        );
    }
    let mut seed = 0x5943_5342; // "YCSB"
    for workload in roundtrip::WORKLOADS {
        if !settings.wants_workload(workload) {
            continue;
        }
        seed += 1;
        eprintln!("server: {workload} threads=1");
        let plan = Plan {
            workload: WORKLOADS[2],
            zipfian: zipfian.clone(),
            warmup: scale.warmup,
            measure: scale.measure,
            seed,
        };
        if let Some(cairn) = &cairn {
            for record in cairn.roundtrip(&client_runtime, protocols, &plan, workload)? {
                reporter.emit(&record)?;
            }
        }
        #[cfg(feature = "postgres")]
        if let Some(postgres) = &mut postgres {
            reporter.emit(&postgres.roundtrip(&client_runtime, &plan, workload)?)?;
        }
    }
    for durability in [Durability::Relaxed, Durability::Durable] {
        for workload in WORKLOADS {
            if !settings.wants_workload(workload.name) {
                continue;
            }
            let durability = match (workload.writes(), durability) {
                (true, durability) => durability,
                (false, Durability::Relaxed) => Durability::ReadOnly,
                (false, _) => continue,
            };
            for threads in THREADS {
                seed += 1;
                if !settings.wants_threads(threads) {
                    continue;
                }
                eprintln!(
                    "server: {} threads={threads} durability={}",
                    workload.name,
                    durability.label()
                );
                let plan = Plan {
                    workload,
                    zipfian: zipfian.clone(),
                    warmup: scale.warmup,
                    measure: scale.measure,
                    seed,
                };
                if let Some(cairn) = &mut cairn {
                    for &protocol in protocols {
                        let record =
                            cairn.measure(&client_runtime, protocol, &plan, threads, durability)?;
                        reporter.emit(&record)?;
                    }
                }
                #[cfg(feature = "postgres")]
                if let Some(postgres) = &mut postgres {
                    let record = postgres.measure(&client_runtime, &plan, threads, durability)?;
                    reporter.emit(&record)?;
                }
            }
        }
    }
    if let Some(cairn) = cairn {
        cairn.stop(&client_runtime)?;
    }
    #[cfg(feature = "postgres")]
    if let Some(postgres) = postgres {
        postgres.stop(&client_runtime)?;
    }
    Ok(())
}

/// Loads `records` records through `insert_batch` (called from `LOAD_TASKS` concurrent tasks),
/// with the same field values for every system.
pub async fn load<F, Fut>(records: u64, insert_batch: F) -> anyhow::Result<()>
where
    F: Fn(Vec<(String, Vec<(String, String)>)>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..LOAD_TASKS as u64 {
        let insert_batch = insert_batch.clone();
        tasks.spawn(async move {
            let mut random = SmallRng::seed_from_u64(task);
            let mut batch = Vec::with_capacity(LOAD_BATCH_RECORDS);
            for rank in (task..records).step_by(LOAD_TASKS) {
                batch.push((ycsb::key(rank), ycsb::record_fields(&mut random)));
                if batch.len() == LOAD_BATCH_RECORDS {
                    insert_batch(std::mem::take(&mut batch)).await?;
                }
            }
            if !batch.is_empty() {
                insert_batch(batch).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

// ---- cairn ----

/// Counters of serverStatus that a measurement reports the change of.
struct NodeCounters {
    /// `metrics.operation.writeConflicts`: conflicts the node retried internally.
    write_conflicts: i64,
    /// `cairn.execution.inline`: commands answered on a network thread.
    inline: i64,
    /// `cairn.execution.handedBack`: inline attempts that ran on a blocking thread instead.
    handed_back: i64,
    /// `cairn.network.idlePollMicros`: the network threads' idle poll (a setting).
    idle_poll_micros: i64,
    /// `cairn.network.idlePolledMicros`: CPU time they spent polling with nothing to do.
    idle_polled_micros: i64,
}

struct CairnPeer {
    /// The node's own runtime, as `cairnd` has one.
    server_runtime: tokio::runtime::Runtime,
    node: cairn_server::EmbeddedNode,
    /// gRPC: cairn-driver.
    client: Client,
    /// MongoDB's wire protocol on the same port: the official driver.
    wire_client: mongodb::Client,
}

impl CairnPeer {
    fn start(
        client_runtime: &tokio::runtime::Runtime,
        records: u64,
        idle_poll_micros: Option<u64>,
    ) -> anyhow::Result<CairnPeer> {
        let server_runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("cairnd-main")
            .build()?;
        let mut config = cairn_server::NodeConfig {
            port: 0,
            ..Default::default()
        };
        if let Some(micros) = idle_poll_micros {
            config.idle_poll_micros = micros;
        }
        let node = server_runtime.block_on(cairn_server::EmbeddedNode::start(config, true))?;
        let address = node.address;
        let (client, wire_client) = client_runtime.block_on(async move {
            let client = Client::connect(&format!("cairn://{address}/")).await?;
            let wire_uri = format!(
                "mongodb://{address}/?directConnection=true&maxPoolSize={WIRE_POOL_SIZE_MAX}"
            );
            let options = mongodb::options::ClientOptions::parse(&wire_uri).await?;
            let wire_client = mongodb::Client::with_options(options)?;
            anyhow::Ok((client, wire_client))
        })?;
        let peer = CairnPeer {
            server_runtime,
            node,
            client,
            wire_client,
        };
        let collection = peer.collection(Durability::Relaxed);
        client_runtime.block_on(load(records, move |batch| {
            let collection = collection.clone();
            async move {
                let documents: Vec<Document> = batch
                    .into_iter()
                    .map(|(key, fields)| {
                        let mut document = doc! {"_id": key};
                        for (name, value) in fields {
                            document.insert(name, value);
                        }
                        document
                    })
                    .collect();
                let count = documents.len();
                let inserted = collection.insert_many(documents).await?;
                anyhow::ensure!(inserted.inserted_ids.len() == count, "short insert");
                Ok(())
            }
        }))?;
        Ok(peer)
    }

    fn collection(&self, durability: Durability) -> Collection<Document> {
        let write_concern = WriteConcern::nodes(1).with_journal(durability.journaled());
        self.client
            .database(DATABASE)
            .collection::<Document>(COLLECTION)
            .with_options(Inherited {
                write_concern: Some(write_concern),
                ..Inherited::default()
            })
    }

    fn wire_collection(&self, durability: Durability) -> mongodb::Collection<Document> {
        let write_concern = mongodb::options::WriteConcern::builder()
            .w(mongodb::options::Acknowledgment::Nodes(1))
            .journal(durability.journaled())
            .build();
        let options = mongodb::options::CollectionOptions::builder()
            .write_concern(write_concern)
            .build();
        self.wire_client
            .database(DATABASE)
            .collection_with_options::<Document>(COLLECTION, options)
    }

    fn measure(
        &mut self,
        client_runtime: &tokio::runtime::Runtime,
        protocol: Protocol,
        plan: &Plan,
        threads: usize,
        durability: Durability,
    ) -> anyhow::Result<Record> {
        let before = client_runtime.block_on(self.counters())?;
        let (measurement, clients) = match protocol {
            Protocol::Grpc => {
                let collection = self.collection(durability);
                let sessions = (0..threads)
                    .map(|_| CairnSession {
                        collection: collection.clone(),
                    })
                    .collect();
                let (measurement, _) = client_runtime.block_on(ycsb::drive(sessions, plan))?;
                let clients = format!(
                    "{threads} tokio tasks sharing one cairn-driver Client ({} HTTP/2 connections)",
                    self.client.options().channels_per_server
                );
                (measurement, clients)
            }
            Protocol::Wire => {
                let collection = self.wire_collection(durability);
                let sessions = (0..threads)
                    .map(|_| WireSession {
                        collection: collection.clone(),
                    })
                    .collect();
                let (measurement, _) = client_runtime.block_on(ycsb::drive(sessions, plan))?;
                let clients = format!(
                    "{threads} tokio tasks sharing one mongodb::Client (maxPoolSize \
                     {WIRE_POOL_SIZE_MAX}: a connection per task)"
                );
                (measurement, clients)
            }
        };
        let after = client_runtime.block_on(self.counters())?;
        let write_concern = match durability {
            Durability::Relaxed => "{w: 1, j: false}",
            Durability::Durable => "{w: 1, j: true}",
            Durability::ReadOnly => "none",
        };
        let extra = extra(
            plan,
            durability,
            &[
                ("write_concern", write_concern.into()),
                ("protocol", protocol.label().into()),
                ("clients", clients.into()),
                (
                    "write_conflicts",
                    (after.write_conflicts - before.write_conflicts).into(),
                ),
                ("inline", (after.inline - before.inline).into()),
                (
                    "handed_back",
                    (after.handed_back - before.handed_back).into(),
                ),
                ("idle_poll_micros", after.idle_poll_micros.into()),
                (
                    "idle_polled_ms",
                    ((after.idle_polled_micros - before.idle_polled_micros) / 1000).into(),
                ),
            ],
        );
        Ok(record(plan, "cairn", threads, measurement, extra))
    }

    /// The round-trip workload `workload` on every path to the node (see [`roundtrip`]).
    fn roundtrip(
        &self,
        client_runtime: &tokio::runtime::Runtime,
        protocols: &[Protocol],
        plan: &Plan,
        workload: &'static str,
    ) -> anyhow::Result<Vec<Record>> {
        let mut records = Vec::new();
        let node = self.node.node.clone();
        let measurement = client_runtime.block_on(roundtrip::time_requests(plan, move |key| {
            let node = node.clone();
            async move {
                let command = roundtrip::command(workload, &key);
                let reply = node.run_command_bytes(
                    &cairn_server::ClientInfo::default(),
                    &bson::serialize_to_vec(&command)?,
                );
                roundtrip::check_reply(workload, &key, &reply)
            }
        }))?;
        records.push(roundtrip::roundtrip_record(
            plan,
            workload,
            "cairn",
            "in_process",
            measurement,
        ));
        if protocols.contains(&Protocol::Wire) {
            let address = self.node.address;
            let raw = client_runtime.block_on(roundtrip::RawWireClient::connect(address))?;
            let raw = Arc::new(tokio::sync::Mutex::new(raw));
            let measurement =
                client_runtime.block_on(roundtrip::time_requests(plan, move |key| {
                    let raw = raw.clone();
                    async move {
                        let command = roundtrip::command(workload, &key);
                        let reply = raw.lock().await.run_command(&command).await?;
                        roundtrip::check_reply(workload, &key, &reply)
                    }
                }))?;
            records.push(roundtrip::roundtrip_record(
                plan,
                workload,
                "cairn",
                "wire_raw",
                measurement,
            ));
            let collection = self.wire_collection(roundtrip::durability(workload));
            let measurement =
                client_runtime.block_on(roundtrip::time_requests(plan, move |key| {
                    let mut session = WireSession {
                        collection: collection.clone(),
                    };
                    async move { roundtrip::session_request(&mut session, workload, &key).await }
                }))?;
            records.push(roundtrip::roundtrip_record(
                plan,
                workload,
                "cairn",
                "wire",
                measurement,
            ));
        }
        if protocols.contains(&Protocol::Grpc) {
            let collection = self.collection(roundtrip::durability(workload));
            let measurement =
                client_runtime.block_on(roundtrip::time_requests(plan, move |key| {
                    let mut session = CairnSession {
                        collection: collection.clone(),
                    };
                    async move { roundtrip::session_request(&mut session, workload, &key).await }
                }))?;
            records.push(roundtrip::roundtrip_record(
                plan,
                workload,
                "cairn",
                "grpc",
                measurement,
            ));
        }
        Ok(records)
    }

    /// `serverStatus.metrics.operation.writeConflicts`: conflicts the node retried internally.
    async fn counters(&self) -> anyhow::Result<NodeCounters> {
        let status = self
            .client
            .database("admin")
            .run_command(doc! {"serverStatus": 1})
            .await?;
        let write_conflicts = status
            .get_document("metrics")
            .and_then(|metrics| metrics.get_document("operation"))
            .and_then(|operation| operation.get_i64("writeConflicts"))?;
        let cairn = status.get_document("cairn")?;
        let execution = cairn.get_document("execution")?;
        let network = cairn.get_document("network")?;
        Ok(NodeCounters {
            write_conflicts,
            inline: execution.get_i64("inline")?,
            handed_back: execution.get_i64("handedBack")?,
            idle_poll_micros: network.get_i64("idlePollMicros")?,
            idle_polled_micros: network.get_i64("idlePolledMicros")?,
        })
    }

    fn stop(self, client_runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        let CairnPeer {
            server_runtime,
            node,
            client,
            wire_client,
        } = self;
        client_runtime.block_on(async move {
            wire_client.shutdown().await;
            drop(client);
        });
        server_runtime.block_on(node.stop())?;
        Ok(())
    }
}

struct CairnSession {
    collection: Collection<Document>,
}

impl Session for CairnSession {
    async fn ping(&mut self) -> anyhow::Result<()> {
        let reply = self
            .collection
            .database()
            .run_command(doc! {"ping": 1})
            .await?;
        roundtrip::check_reply("roundtrip_ping", "", &reply)
    }

    async fn read(&mut self, key: &str) -> anyhow::Result<()> {
        let found = self.collection.find_one(doc! {"_id": key}).await?;
        match found {
            Some(document) if document.len() == ycsb::FIELD_COUNT + 1 => Ok(()),
            Some(document) => anyhow::bail!("record {key} has {} fields", document.len()),
            None => anyhow::bail!("record {key} not found"),
        }
    }

    async fn update(&mut self, key: &str, field: usize, value: &str) -> anyhow::Result<()> {
        let updated = self
            .collection
            .update_one(
                doc! {"_id": key},
                doc! {"$set": {ycsb::field_name(field): value}},
            )
            .await?;
        anyhow::ensure!(
            updated.matched_count == 1,
            "record {key} not found for update"
        );
        Ok(())
    }
}

/// A client thread over MongoDB's wire protocol (the official driver).
struct WireSession {
    collection: mongodb::Collection<Document>,
}

impl Session for WireSession {
    async fn ping(&mut self) -> anyhow::Result<()> {
        let reply = self
            .collection
            .client()
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        roundtrip::check_reply("roundtrip_ping", "", &reply)
    }

    async fn read(&mut self, key: &str) -> anyhow::Result<()> {
        let found = self.collection.find_one(doc! {"_id": key}).await?;
        match found {
            Some(document) if document.len() == ycsb::FIELD_COUNT + 1 => Ok(()),
            Some(document) => anyhow::bail!("record {key} has {} fields", document.len()),
            None => anyhow::bail!("record {key} not found"),
        }
    }

    async fn update(&mut self, key: &str, field: usize, value: &str) -> anyhow::Result<()> {
        let updated = self
            .collection
            .update_one(
                doc! {"_id": key},
                doc! {"$set": {ycsb::field_name(field): value}},
            )
            .await?;
        anyhow::ensure!(
            updated.matched_count == 1,
            "record {key} not found for update"
        );
        Ok(())
    }
}
