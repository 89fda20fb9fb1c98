//! The `roundtrip_ping`, `roundtrip_read` and `roundtrip_update` workloads of the `server`
//! suite: one client, one request at a time, so that each layer's share of a request's latency
//! shows (issue 9's "per-request overhead of each transport"). `roundtrip_ping` is the command
//! `{ping: 1}` (for PostgreSQL, a prepared `SELECT 1`); `roundtrip_read` is a YCSB read of one
//! record (zipfian key), as in workload C; `roundtrip_update` a YCSB update of one field with
//! relaxed durability (cairn `{w: 1, j: false}`, PostgreSQL `synchronous_commit=off`), as in
//! workload A. The `protocol` field of cairn's records says which path:
//! - `in_process`: `Node::run_command_bytes` called directly on this thread: the command
//!   dispatcher, locks, planner, storage and reply, with no transport and no thread switch;
//! - `wire_raw`: MongoDB's wire protocol from a hand-written OP_MSG client (one TCP
//!   connection, no driver): the server's wire transport with its blocking-thread hand-off;
//! - `wire`: the same through the official `mongodb` driver;
//! - `grpc`: `cairn.v1.Cairn/RunCommand` through cairn-driver.
//!
//! Every request's reply is checked (`ok: 1`, the record found), as in the YCSB workloads.

use crate::report::{Latencies, Record};
use crate::ycsb::{self, Measurement, Plan};
use bson::{Document, doc};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::future::Future;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The round-trip workloads.
pub const WORKLOADS: [&str; 3] = ["roundtrip_ping", "roundtrip_read", "roundtrip_update"];

/// The field and value a `roundtrip_update` sets: as in workload A, a random field gets a new
/// random value, so every update changes its record and commits. (A fixed value made every
/// update after a record's first a no-op that committed nothing, which measured a read.)
pub fn update_value() -> (usize, String) {
    use rand::Rng;
    let mut random = rand::rng();
    (
        random.random_range(0..ycsb::FIELD_COUNT),
        ycsb::field_value(&mut random),
    )
}

/// OP_MSG (MongoDB's wire protocol).
const OP_MSG: i32 = 2013;
/// A wire protocol message header: length, requestID, responseTo, opCode.
const HEADER_BYTES: usize = 16;

/// The command of one request of `workload`, with `$db`.
pub fn command(workload: &str, key: &str) -> Document {
    match workload {
        "roundtrip_ping" => doc! {"ping": 1, "$db": "admin"},
        "roundtrip_update" => {
            let (field, value) = update_value();
            doc! {
                "update": crate::server::COLLECTION,
                "updates": [{"q": {"_id": key}, "u": {"$set": {ycsb::field_name(field): value}}}],
                "writeConcern": {"w": 1, "j": false},
                "$db": crate::server::DATABASE,
            }
        }
        _ => doc! {
            "find": crate::server::COLLECTION,
            "filter": {"_id": key},
            "limit": 1,
            "singleBatch": true,
            "$db": crate::server::DATABASE,
        },
    }
}

/// Checks a command reply: `ok: 1` and, for a read, one record of YCSB's shape.
pub fn check_reply(workload: &str, key: &str, reply: &Document) -> anyhow::Result<()> {
    let ok = match reply.get("ok") {
        Some(bson::Bson::Double(ok)) => *ok == 1.0,
        Some(bson::Bson::Int32(ok)) => *ok == 1,
        _ => false,
    };
    anyhow::ensure!(ok, "command failed: {reply}");
    if workload == "roundtrip_update" {
        let matched = match reply.get("n") {
            Some(bson::Bson::Int32(n)) => i64::from(*n),
            Some(bson::Bson::Int64(n)) => *n,
            _ => 0,
        };
        anyhow::ensure!(
            matched == 1 && !reply.contains_key("writeErrors"),
            "record {key} not updated: {reply}"
        );
    }
    if workload == "roundtrip_read" {
        let batch = reply.get_document("cursor")?.get_array("firstBatch")?;
        let fields = match batch.first() {
            Some(bson::Bson::Document(record)) => record.len(),
            _ => 0,
        };
        anyhow::ensure!(
            batch.len() == 1 && fields == ycsb::FIELD_COUNT + 1,
            "record {key} not read whole: {reply}"
        );
    }
    Ok(())
}

/// The durability a round-trip workload writes with (and its records are labelled with).
pub fn durability(workload: &str) -> crate::server::Durability {
    if workload == "roundtrip_update" {
        crate::server::Durability::Relaxed
    } else {
        crate::server::Durability::ReadOnly
    }
}

/// One request of `workload` through a driver session (the `wire`, `grpc` and PostgreSQL
/// paths).
pub async fn session_request<S: ycsb::Session>(
    session: &mut S,
    workload: &str,
    key: &str,
) -> anyhow::Result<()> {
    match workload {
        "roundtrip_ping" => session.ping().await,
        "roundtrip_update" => {
            let (field, value) = update_value();
            session.update(key, field, &value).await
        }
        _ => session.read(key).await,
    }
}

/// Times `operation` (given each request's key) one at a time for the plan's warm-up and
/// measured window, in a task of the current runtime (as the YCSB client tasks run, so that a
/// driver's connection task may share the client's worker thread).
pub async fn time_requests<F, Fut>(plan: &Plan, operation: F) -> anyhow::Result<Measurement>
where
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let plan = plan.clone();
    tokio::spawn(async move { time_in_task(&plan, operation).await }).await?
}

async fn time_in_task<F, Fut>(plan: &Plan, mut operation: F) -> anyhow::Result<Measurement>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut random = SmallRng::seed_from_u64(plan.seed);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let measure_until = measure_from + plan.measure;
    let mut latencies = Latencies::new();
    let mut ops = 0;
    let mut last_end = measure_from;
    loop {
        let key = ycsb::key(plan.zipfian.sample(&mut random));
        let began = Instant::now();
        if began >= measure_until {
            break;
        }
        operation(key).await?;
        let ended = Instant::now();
        if began >= measure_from {
            ops += 1;
            latencies.record(ended - began);
            last_end = ended;
        }
    }
    Ok(Measurement {
        ops,
        seconds: last_end.duration_since(measure_from).as_secs_f64(),
        latencies,
    })
}

/// The record of one round-trip measurement.
pub fn roundtrip_record(
    plan: &Plan,
    workload: &str,
    system: &str,
    protocol: &str,
    measurement: Measurement,
) -> Record {
    let mut extra =
        crate::server::extra(plan, durability(workload), &[("protocol", protocol.into())]);
    extra.insert("clients".into(), "1 client, one request at a time".into());
    let mut record = crate::server::record(plan, system, 1, measurement, extra);
    record.workload = workload.into();
    record
}

/// A hand-written MongoDB wire protocol client: OP_MSG with one body section, no driver.
pub struct RawWireClient {
    stream: tokio::net::TcpStream,
    request_id: i32,
    buffer: Vec<u8>,
}

impl RawWireClient {
    pub async fn connect(address: std::net::SocketAddr) -> anyhow::Result<RawWireClient> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(RawWireClient {
            stream,
            request_id: 0,
            buffer: Vec::new(),
        })
    }

    /// Sends `command` as an OP_MSG and returns the reply's body document.
    pub async fn run_command(&mut self, command: &Document) -> anyhow::Result<Document> {
        self.request_id += 1;
        let body = bson::serialize_to_vec(command)?;
        let length = HEADER_BYTES + 4 + 1 + body.len();
        self.buffer.clear();
        self.buffer
            .extend_from_slice(&i32::try_from(length)?.to_le_bytes());
        self.buffer
            .extend_from_slice(&self.request_id.to_le_bytes());
        self.buffer.extend_from_slice(&0i32.to_le_bytes());
        self.buffer.extend_from_slice(&OP_MSG.to_le_bytes());
        self.buffer.extend_from_slice(&0u32.to_le_bytes()); // flag bits
        self.buffer.push(0); // section kind 0: the body
        self.buffer.extend_from_slice(&body);
        self.stream.write_all(&self.buffer).await?;
        let mut header = [0u8; HEADER_BYTES];
        self.stream.read_exact(&mut header).await?;
        let length = i32::from_le_bytes(header[0..4].try_into()?);
        let response_to = i32::from_le_bytes(header[8..12].try_into()?);
        let op_code = i32::from_le_bytes(header[12..16].try_into()?);
        anyhow::ensure!(
            op_code == OP_MSG && response_to == self.request_id,
            "unexpected reply header: opCode {op_code}, responseTo {response_to}"
        );
        let rest = usize::try_from(length)?
            .checked_sub(HEADER_BYTES)
            .ok_or_else(|| anyhow::anyhow!("reply length {length} below the header"))?;
        self.buffer.resize(rest, 0);
        self.stream.read_exact(&mut self.buffer).await?;
        anyhow::ensure!(
            rest > 5 && self.buffer[4] == 0,
            "a reply must have flag bits and a body section"
        );
        Ok(bson::deserialize_from_slice(&self.buffer[5..])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Document {
        let mut record = doc! {"_id": "user1"};
        for index in 0..ycsb::FIELD_COUNT {
            record.insert(ycsb::field_name(index), "x".repeat(ycsb::FIELD_BYTES));
        }
        record
    }

    #[test]
    fn replies_are_checked() {
        let ping = doc! {"ok": 1.0};
        assert!(check_reply("roundtrip_ping", "", &ping).is_ok());
        let failed = doc! {"ok": 0.0, "errmsg": "no", "code": 59};
        assert!(check_reply("roundtrip_ping", "", &failed).is_err());
        let found = doc! {"ok": 1.0, "cursor": {"firstBatch": [record()], "id": 0i64}};
        assert!(check_reply("roundtrip_read", "user1", &found).is_ok());
        let empty = doc! {"ok": 1.0, "cursor": {"firstBatch": [], "id": 0i64}};
        assert!(check_reply("roundtrip_read", "user1", &empty).is_err());
        let mut short = record();
        short.remove("field9");
        let partial = doc! {"ok": 1.0, "cursor": {"firstBatch": [short], "id": 0i64}};
        assert!(check_reply("roundtrip_read", "user1", &partial).is_err());
    }

    #[test]
    fn commands_name_their_database() {
        assert_eq!(
            command("roundtrip_ping", "k").get_str("$db").ok(),
            Some("admin")
        );
        let read = command("roundtrip_read", "user7");
        assert_eq!(read.get_str("find").ok(), Some(crate::server::COLLECTION));
        assert_eq!(read.get_document("filter").unwrap(), &doc! {"_id": "user7"});
        assert_eq!(read.get_str("$db").ok(), Some(crate::server::DATABASE));
    }
}
