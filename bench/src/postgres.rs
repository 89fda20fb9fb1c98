//! The PostgreSQL peer of the `server` suite, built only with `--features peers` (or `postgres`): a private
//! cluster started by `bench/peers/setup-postgres.sh` (PostgreSQL from Debian's packages, in a
//! temporary directory, on a loopback port) and driven by tokio-postgres.
//!
//! Table `usertable (id text primary key, doc jsonb not null)`; one connection per client
//! thread with prepared statements; durability per connection through `synchronous_commit`.

use crate::report::Record;
use crate::server::{Durability, extra, load, record};
use crate::ycsb::{self, Plan, Session};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use tokio_postgres::{Client, NoTls, Statement};

/// The setup script, next to this crate's sources.
const SETUP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/setup-postgres.sh");
/// How long the cluster may take to start.
const START_TIMEOUT_SECS: u32 = 60;

pub struct PostgresPeer {
    /// The cluster's data, socket and log; removed when the peer is dropped.
    dir: tempfile::TempDir,
    conninfo: String,
    /// Connections kept from one measurement to the next (as many as the most threads so far).
    sessions: Vec<PostgresSession>,
    /// Whether the cluster still runs (stopped by `stop`, or else when dropped).
    running: bool,
}

fn setup(arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("bash")
        .arg(SETUP_SCRIPT)
        .args(arguments)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{SETUP_SCRIPT} {} failed ({}):\n{}{}",
        arguments.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl PostgresPeer {
    pub fn start(
        client_runtime: &tokio::runtime::Runtime,
        records: u64,
    ) -> anyhow::Result<PostgresPeer> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-pg-")
            .tempdir()?;
        let port = free_loopback_port()?;
        let dir_text = dir
            .path()
            .to_str()
            .expect("temporary paths are UTF-8")
            .to_owned();
        setup(&[
            "start",
            &dir_text,
            &port.to_string(),
            &START_TIMEOUT_SECS.to_string(),
        ])?;
        let mut peer = PostgresPeer {
            dir,
            conninfo: format!("host=127.0.0.1 port={port} user=bench dbname=postgres"),
            sessions: Vec::new(),
            running: true,
        };
        client_runtime.block_on(peer.create_and_load(records))?;
        Ok(peer)
    }

    async fn create_and_load(&mut self, records: u64) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.conninfo, NoTls).await?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(
                "DROP TABLE IF EXISTS usertable;
                 CREATE TABLE usertable (id text PRIMARY KEY, doc jsonb NOT NULL);",
            )
            .await?;
        let conninfo = self.conninfo.clone();
        load(records, move |batch| {
            let conninfo = conninfo.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
                let connection = tokio::spawn(connection);
                let mut ids = Vec::with_capacity(batch.len());
                let mut docs = Vec::with_capacity(batch.len());
                for (key, fields) in batch {
                    ids.push(key);
                    let object = fields
                        .into_iter()
                        .map(|(name, value)| (name, Value::String(value)))
                        .collect::<serde_json::Map<_, _>>();
                    docs.push(Value::Object(object));
                }
                client.batch_execute("SET synchronous_commit TO off").await?;
                let inserted = client
                    .execute(
                        "INSERT INTO usertable (id, doc) SELECT * FROM unnest($1::text[], $2::jsonb[])",
                        &[&ids, &docs],
                    )
                    .await?;
                anyhow::ensure!(inserted as usize == ids.len(), "short insert");
                drop(client);
                connection.await??;
                Ok(())
            }
        })
        .await?;
        // A table in steady state for the reads: statistics, visibility map, and the load's
        // dirty pages written out before the first measurement.
        // (Two statements: VACUUM cannot run in the implicit transaction of a multi-statement
        // query.)
        client.batch_execute("VACUUM ANALYZE usertable").await?;
        client.batch_execute("CHECKPOINT").await?;
        drop(client);
        connection.await??;
        Ok(())
    }

    pub fn measure(
        &mut self,
        client_runtime: &tokio::runtime::Runtime,
        plan: &Plan,
        threads: usize,
        durability: Durability,
    ) -> anyhow::Result<Record> {
        let synchronous_commit = match durability {
            Durability::Relaxed => "off",
            Durability::Durable => "on",
            Durability::ReadOnly => "off",
        };
        let measurement = client_runtime.block_on(async {
            while self.sessions.len() < threads {
                self.sessions
                    .push(PostgresSession::connect(&self.conninfo).await?);
            }
            let mut sessions = std::mem::take(&mut self.sessions);
            let idle = sessions.split_off(threads);
            for session in &sessions {
                session
                    .client
                    .batch_execute(&format!("SET synchronous_commit TO {synchronous_commit}"))
                    .await?;
            }
            let (measurement, mut sessions) = ycsb::drive(sessions, plan).await?;
            sessions.extend(idle);
            self.sessions = sessions;
            anyhow::Ok(measurement)
        })?;
        let extra = extra(
            plan,
            durability,
            &[
                ("synchronous_commit", synchronous_commit.into()),
                ("fsync", "on".into()),
                (
                    "clients",
                    format!("{threads} tokio tasks, one tokio-postgres connection each").into(),
                ),
            ],
        );
        Ok(record(plan, "postgres", threads, measurement, extra))
    }

    /// The round-trip workload `workload` (see [`crate::roundtrip`]): a prepared `SELECT 1`,
    /// one YCSB read, or one YCSB update (`synchronous_commit=off`), one at a time on one
    /// connection.
    pub fn roundtrip(
        &mut self,
        client_runtime: &tokio::runtime::Runtime,
        plan: &Plan,
        workload: &'static str,
    ) -> anyhow::Result<Record> {
        let measurement = client_runtime.block_on(async {
            let session = match self.sessions.pop() {
                Some(session) => session,
                None => PostgresSession::connect(&self.conninfo).await?,
            };
            if workload == "roundtrip_update" {
                session
                    .client
                    .batch_execute("SET synchronous_commit TO off")
                    .await?;
            }
            let session = Arc::new(tokio::sync::Mutex::new(session));
            let timed = session.clone();
            let measurement = crate::roundtrip::time_requests(plan, move |key| {
                let session = timed.clone();
                async move {
                    let mut session = session.lock().await;
                    crate::roundtrip::session_request(&mut *session, workload, &key).await
                }
            })
            .await?;
            let session = Arc::try_unwrap(session)
                .map_err(|_| anyhow::anyhow!("the round-trip task still holds its session"))?;
            self.sessions.push(session.into_inner());
            anyhow::Ok(measurement)
        })?;
        Ok(crate::roundtrip::roundtrip_record(
            plan,
            workload,
            "postgres",
            "postgres",
            measurement,
        ))
    }

    pub fn stop(mut self, client_runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        client_runtime.block_on(async { self.sessions.clear() });
        self.stop_cluster()
    }

    fn stop_cluster(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.running = false;
            let dir = self.dir.path().to_str().expect("temporary paths are UTF-8");
            setup(&["stop", dir])?;
        }
        Ok(())
    }
}

impl Drop for PostgresPeer {
    fn drop(&mut self) {
        if let Err(error) = self.stop_cluster() {
            eprintln!("server: cannot stop PostgreSQL: {error}");
        }
    }
}

struct PostgresSession {
    client: Client,
    /// `SELECT 1`, the round trips' ping.
    ping: Statement,
    read: Statement,
    /// One statement per field: the jsonb path is part of the statement.
    updates: Vec<Statement>,
}

impl PostgresSession {
    async fn connect(conninfo: &str) -> anyhow::Result<PostgresSession> {
        let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("server: a PostgreSQL connection failed: {error}");
            }
        });
        let ping = client.prepare("SELECT 1").await?;
        let read = client
            .prepare("SELECT doc FROM usertable WHERE id = $1")
            .await?;
        let mut updates = Vec::with_capacity(ycsb::FIELD_COUNT);
        for field in 0..ycsb::FIELD_COUNT {
            let name = ycsb::field_name(field);
            let statement = format!(
                "UPDATE usertable SET doc = jsonb_set(doc, '{{{name}}}', to_jsonb($2::text)) WHERE id = $1"
            );
            updates.push(client.prepare(&statement).await?);
        }
        Ok(PostgresSession {
            client,
            ping,
            read,
            updates,
        })
    }
}

impl Session for PostgresSession {
    async fn ping(&mut self) -> anyhow::Result<()> {
        let row = self.client.query_one(&self.ping, &[]).await?;
        let one: i32 = row.try_get(0)?;
        anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
        Ok(())
    }

    async fn read(&mut self, key: &str) -> anyhow::Result<()> {
        let row = self.client.query_opt(&self.read, &[&key]).await?;
        let Some(row) = row else {
            anyhow::bail!("record {key} not found");
        };
        let document: Value = row.try_get(0)?;
        let fields = document.as_object().map_or(0, |object| object.len());
        anyhow::ensure!(
            fields == ycsb::FIELD_COUNT,
            "record {key} has {fields} fields"
        );
        Ok(())
    }

    async fn update(&mut self, key: &str, field: usize, value: &str) -> anyhow::Result<()> {
        let updated = self
            .client
            .execute(&self.updates[field], &[&key, &value])
            .await?;
        anyhow::ensure!(updated == 1, "record {key} not found for update");
        Ok(())
    }
}
