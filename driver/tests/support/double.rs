//! A test double of `cairnd`: an in-process tonic server that implements `RunCommand` over a
//! tiny in-memory store, records every command it receives, and can be told to answer the next
//! command of a given name with a scripted reply (errors, write concern errors, ...).
//!
//! It knows just enough of MongoDB to exercise a client: hello/ping, insert (with duplicate
//! `_id` detection), find with equality filters, sort, skip, limit and batch sizes, getMore,
//! killCursors, update with `$set`, delete, count, distinct, aggregate (`$match`, `$skip`,
//! `$limit`, a counting `$group`), findAndModify, listCollections, listDatabases, listIndexes,
//! createIndexes, dropIndexes, drop, dropDatabase, create. Anything else is CommandNotFound.
//! Shared by the driver's and the shell's tests (included with `#[path]`).

#![allow(dead_code)]

use bson::{Bson, Document, doc};
use cairn_proto::v1::cairn_server::Cairn;
use cairn_proto::{CommandReply, CommandRequest};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// Batch size of a find without one (MongoDB's first batch is 101 documents).
pub const DEFAULT_BATCH_SIZE: usize = 101;

#[derive(Default)]
struct State {
    commands: Vec<Document>,
    /// ns -> documents, in insertion order.
    collections: BTreeMap<String, Vec<Document>>,
    indexes: BTreeMap<String, Vec<Document>>,
    cursors: HashMap<i64, (String, VecDeque<Document>)>,
    next_cursor_id: i64,
    scripted: HashMap<String, VecDeque<Document>>,
    killed_cursors: Vec<i64>,
    /// The `hello` reply, when a test sets one (a replica set member, say).
    hello: Option<Document>,
}

/// The double; clones share one state.
#[derive(Clone, Default)]
pub struct Double {
    state: Arc<Mutex<State>>,
}

/// A running double.
pub struct Server {
    pub double: Double,
    pub address: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Starts a double on 127.0.0.1 with an ephemeral port, on the current runtime.
    pub async fn start() -> Server {
        let double = Double::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = cairn_proto::server(double.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Server {
            double,
            address,
            shutdown: Some(shutdown),
        }
    }

    pub fn uri(&self) -> String {
        format!("cairn://{}/?serverSelectionTimeoutMS=2000", self.address)
    }

    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Double {
    /// Every command received so far, with `$db` (hello checks of the monitor left out).
    pub fn commands(&self) -> Vec<Document> {
        self.state
            .lock()
            .unwrap()
            .commands
            .iter()
            .filter(|c| !c.contains_key("hello") && !c.contains_key("isMaster"))
            .cloned()
            .collect()
    }

    /// Commands whose first key is `name`.
    pub fn commands_named(&self, name: &str) -> Vec<Document> {
        self.commands()
            .into_iter()
            .filter(|c| c.keys().next().map(String::as_str) == Some(name))
            .collect()
    }

    pub fn clear_commands(&self) {
        self.state.lock().unwrap().commands.clear();
    }

    /// The next command named `name` gets `reply` instead of its normal answer.
    pub fn script(&self, name: &str, reply: Document) {
        self.state
            .lock()
            .unwrap()
            .scripted
            .entry(name.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Every `hello` gets `reply` from now on.
    pub fn set_hello(&self, reply: Document) {
        self.state.lock().unwrap().hello = Some(reply);
    }

    /// Cursor ids that killCursors removed.
    pub fn killed_cursors(&self) -> Vec<i64> {
        self.state.lock().unwrap().killed_cursors.clone()
    }

    pub fn open_cursors(&self) -> usize {
        self.state.lock().unwrap().cursors.len()
    }

    /// Puts documents straight into a collection.
    pub fn seed(&self, ns: &str, documents: Vec<Document>) {
        self.state
            .lock()
            .unwrap()
            .collections
            .entry(ns.to_string())
            .or_default()
            .extend(documents);
    }

    pub fn documents(&self, ns: &str) -> Vec<Document> {
        self.state
            .lock()
            .unwrap()
            .collections
            .get(ns)
            .cloned()
            .unwrap_or_default()
    }

    /// Answers one command document.
    pub fn answer(&self, command: Document) -> Document {
        let mut state = self.state.lock().unwrap();
        state.commands.push(command.clone());
        let Some(name) = command.keys().next().cloned() else {
            return error(9, "FailedToParse", "empty command");
        };
        if let Some(reply) = state.scripted.get_mut(&name).and_then(VecDeque::pop_front) {
            return reply;
        }
        let Ok(db) = command.get_str("$db").map(str::to_string) else {
            return error(
                40414,
                "Location40414",
                "BSON field '$db' is missing but a required field",
            );
        };
        let collection = command.get_str(&name).unwrap_or_default().to_string();
        let ns = format!("{db}.{collection}");
        match name.as_str() {
            "hello" | "isMaster" if state.hello.is_some() => state.hello.clone().unwrap(),
            "hello" | "isMaster" => doc! {
                "isWritablePrimary": true, "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000, "ok": 1.0,
            },
            "ping" | "fsyncUnlock" => doc! {"ok": 1.0},
            "buildInfo" => doc! {"version": "0.1.0", "ok": 1.0},
            "serverStatus" => doc! {"host": "double", "uptime": 1.0, "ok": 1.0},
            "currentOp" => doc! {"inprog": [], "ok": 1.0},
            "killOp" => doc! {"info": "attempting to kill op", "ok": 1.0},
            "fsync" => doc! {"info": "now locked against writes", "lockCount": 1_i64, "ok": 1.0},
            "insert" => {
                let documents = command.get_array("documents").cloned().unwrap_or_default();
                let ordered = command.get_bool("ordered").unwrap_or(true);
                let stored = state.collections.entry(ns.clone()).or_default();
                let mut n = 0;
                let mut write_errors = Vec::new();
                for (index, document) in documents.into_iter().enumerate() {
                    let document = document.as_document().unwrap().clone();
                    let id = document.get("_id").cloned();
                    if stored
                        .iter()
                        .any(|existing| existing.get("_id") == id.as_ref())
                    {
                        write_errors.push(Bson::Document(doc! {
                            "index": index as i32, "code": 11000, "codeName": "DuplicateKey",
                            "errmsg": format!("E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {} }}", id.unwrap()),
                        }));
                        if ordered {
                            break;
                        }
                        continue;
                    }
                    stored.push(document);
                    n += 1;
                }
                let mut reply = doc! {"n": n};
                if !write_errors.is_empty() {
                    reply.insert("writeErrors", write_errors);
                }
                reply.insert("ok", 1.0);
                reply
            }
            "find" => {
                let filter = command.get_document("filter").cloned().unwrap_or_default();
                let mut found = matching(state.collections.get(&ns), &filter);
                if let Ok(sort) = command.get_document("sort") {
                    sort_documents(&mut found, sort);
                }
                let skip = command.get("skip").and_then(number).unwrap_or(0) as usize;
                let limit = command.get("limit").and_then(number).unwrap_or(0) as usize;
                let mut found: VecDeque<Document> = found.into_iter().skip(skip).collect();
                if limit > 0 {
                    found.truncate(limit);
                }
                let batch_size = command
                    .get("batchSize")
                    .and_then(number)
                    .map(|n| n as usize)
                    .unwrap_or(DEFAULT_BATCH_SIZE);
                let single_batch = command.get_bool("singleBatch").unwrap_or(false);
                open_cursor(
                    &mut state,
                    &ns,
                    found,
                    batch_size,
                    single_batch,
                    "firstBatch",
                )
            }
            "aggregate" => {
                let pipeline = command.get_array("pipeline").cloned().unwrap_or_default();
                let mut documents: Vec<Document> =
                    state.collections.get(&ns).cloned().unwrap_or_default();
                for stage in pipeline.iter().filter_map(Bson::as_document) {
                    if let Ok(filter) = stage.get_document("$match") {
                        documents = matching(Some(&documents), filter);
                    } else if let Some(skip) = stage.get("$skip").and_then(number) {
                        documents = documents.into_iter().skip(skip as usize).collect();
                    } else if let Some(limit) = stage.get("$limit").and_then(number) {
                        documents.truncate(limit as usize);
                    } else if stage.contains_key("$group") {
                        documents = if documents.is_empty() {
                            vec![]
                        } else {
                            vec![doc! {"_id": 1, "n": documents.len() as i32}]
                        };
                    }
                }
                let batch_size = command
                    .get_document("cursor")
                    .ok()
                    .and_then(|c| c.get("batchSize").and_then(number))
                    .map(|n| n as usize)
                    .unwrap_or(DEFAULT_BATCH_SIZE);
                open_cursor(
                    &mut state,
                    &ns,
                    documents.into(),
                    batch_size,
                    false,
                    "firstBatch",
                )
            }
            "getMore" => {
                let id = command.get("getMore").and_then(number).unwrap_or(0);
                let Some((cursor_ns, mut remaining)) = state.cursors.remove(&id) else {
                    return error(43, "CursorNotFound", &format!("cursor id {id} not found"));
                };
                let batch_size = command
                    .get("batchSize")
                    .and_then(number)
                    .map(|n| n as usize)
                    .unwrap_or(usize::MAX);
                let batch: Vec<Document> = (0..batch_size)
                    .map_while(|_| remaining.pop_front())
                    .collect();
                let id = if remaining.is_empty() {
                    0
                } else {
                    state.cursors.insert(id, (cursor_ns.clone(), remaining));
                    id
                };
                doc! {"cursor": {"nextBatch": batch, "id": id, "ns": cursor_ns}, "ok": 1.0}
            }
            "killCursors" => {
                let ids: Vec<i64> = command
                    .get_array("cursors")
                    .unwrap()
                    .iter()
                    .filter_map(number)
                    .collect();
                let mut killed = Vec::new();
                for id in ids {
                    if state.cursors.remove(&id).is_some() {
                        killed.push(id);
                        state.killed_cursors.push(id);
                    }
                }
                doc! {"cursorsKilled": killed, "cursorsNotFound": [], "ok": 1.0}
            }
            "update" => {
                let mut n = 0;
                let mut modified = 0;
                for statement in command
                    .get_array("updates")
                    .unwrap()
                    .iter()
                    .filter_map(Bson::as_document)
                {
                    let filter = statement.get_document("q").cloned().unwrap_or_default();
                    let update = statement.get_document("u").cloned().unwrap_or_default();
                    let multi = statement.get_bool("multi").unwrap_or(false);
                    let stored = state.collections.entry(ns.clone()).or_default();
                    for document in stored.iter_mut().filter(|d| matches(d, &filter)) {
                        n += 1;
                        apply(document, &update);
                        modified += 1;
                        if !multi {
                            break;
                        }
                    }
                }
                doc! {"n": n, "nModified": modified, "ok": 1.0}
            }
            "delete" => {
                let mut n = 0;
                for statement in command
                    .get_array("deletes")
                    .unwrap()
                    .iter()
                    .filter_map(Bson::as_document)
                {
                    let filter = statement.get_document("q").cloned().unwrap_or_default();
                    let limit = statement.get("limit").and_then(number).unwrap_or(0);
                    let stored = state.collections.entry(ns.clone()).or_default();
                    let mut removed = 0;
                    stored.retain(|d| {
                        if matches(d, &filter) && (limit == 0 || removed < limit) {
                            removed += 1;
                            false
                        } else {
                            true
                        }
                    });
                    n += removed;
                }
                doc! {"n": n as i32, "ok": 1.0}
            }
            "findAndModify" => {
                let filter = command.get_document("query").cloned().unwrap_or_default();
                let stored = state.collections.entry(ns.clone()).or_default();
                let Some(position) = stored.iter().position(|d| matches(d, &filter)) else {
                    return doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null, "ok": 1.0};
                };
                let before = stored[position].clone();
                if command.get_bool("remove").unwrap_or(false) {
                    stored.remove(position);
                    return doc! {"lastErrorObject": {"n": 1}, "value": before, "ok": 1.0};
                }
                let update = command.get_document("update").cloned().unwrap_or_default();
                apply(&mut stored[position], &update);
                let value = if command.get_bool("new").unwrap_or(false) {
                    stored[position].clone()
                } else {
                    before
                };
                doc! {"lastErrorObject": {"n": 1, "updatedExisting": true}, "value": value, "ok": 1.0}
            }
            "count" => doc! {"n": state.collections.get(&ns).map_or(0, Vec::len) as i32, "ok": 1.0},
            "distinct" => {
                let key = command.get_str("key").unwrap_or_default();
                let filter = command.get_document("query").cloned().unwrap_or_default();
                let mut values: Vec<Bson> = Vec::new();
                for document in matching(state.collections.get(&ns), &filter) {
                    if let Some(value) = document.get(key)
                        && !values.contains(value)
                    {
                        values.push(value.clone());
                    }
                }
                doc! {"values": values, "ok": 1.0}
            }
            "create" => {
                if state.collections.contains_key(&ns) {
                    return error(
                        48,
                        "NamespaceExists",
                        &format!("Collection {ns} already exists."),
                    );
                }
                state.collections.insert(ns, Vec::new());
                doc! {"ok": 1.0}
            }
            "drop" => {
                if state.collections.remove(&ns).is_none() {
                    return error(26, "NamespaceNotFound", "ns not found");
                }
                doc! {"ns": ns, "ok": 1.0}
            }
            "dropDatabase" => {
                state
                    .collections
                    .retain(|name, _| !name.starts_with(&format!("{db}.")));
                doc! {"dropped": db, "ok": 1.0}
            }
            "createIndexes" => {
                let indexes = command.get_array("indexes").cloned().unwrap_or_default();
                let list = state.indexes.entry(ns.clone()).or_default();
                let before = list.len() as i32 + 1;
                list.extend(indexes.iter().filter_map(|i| i.as_document().cloned()));
                state.collections.entry(ns).or_default();
                doc! {"numIndexesBefore": before, "numIndexesAfter": before + indexes.len() as i32, "ok": 1.0}
            }
            "dropIndexes" => {
                let index = command.get("index").cloned().unwrap_or(Bson::Null);
                let list = state.indexes.entry(ns).or_default();
                let before = list.len();
                list.retain(|i| index.as_str() != Some("*") && i.get("name") != Some(&index));
                if before == list.len() && index.as_str() != Some("*") {
                    return error(
                        27,
                        "IndexNotFound",
                        &format!("index not found with name [{index}]"),
                    );
                }
                doc! {"nIndexesWas": before as i32 + 1, "ok": 1.0}
            }
            "listIndexes" => {
                let mut indexes: VecDeque<Document> =
                    VecDeque::from([doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}]);
                indexes.extend(state.indexes.get(&ns).cloned().unwrap_or_default());
                open_cursor(
                    &mut state,
                    &ns,
                    indexes,
                    DEFAULT_BATCH_SIZE,
                    false,
                    "firstBatch",
                )
            }
            "listCollections" => {
                let prefix = format!("{db}.");
                let collections: VecDeque<Document> = state
                    .collections
                    .keys()
                    .filter_map(|name| name.strip_prefix(&prefix))
                    .map(|name| doc! {"name": name, "type": "collection"})
                    .collect();
                open_cursor(
                    &mut state,
                    &format!("{db}.$cmd.listCollections"),
                    collections,
                    DEFAULT_BATCH_SIZE,
                    false,
                    "firstBatch",
                )
            }
            "listDatabases" => {
                let mut names: Vec<String> = state
                    .collections
                    .keys()
                    .map(|ns| ns.split('.').next().unwrap().to_string())
                    .collect();
                names.dedup();
                let databases: Vec<Document> = names
                    .into_iter()
                    .map(|name| doc! {"name": name, "sizeOnDisk": 8192_i64, "empty": false})
                    .collect();
                doc! {"databases": databases, "totalSize": 8192_i64, "ok": 1.0}
            }
            "explain" => {
                doc! {"queryPlanner": {"namespace": ns, "winningPlan": {"stage": "COLLSCAN"}}, "ok": 1.0}
            }
            other => error(
                59,
                "CommandNotFound",
                &format!("no such command: '{other}'"),
            ),
        }
    }
}

fn error(code: i32, code_name: &str, message: &str) -> Document {
    doc! {"ok": 0.0, "errmsg": message, "code": code, "codeName": code_name}
}

fn number(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

/// Equality on top-level fields (and `$gt`/`$gte`/`$lt`/`$lte` on numbers).
fn matches(document: &Document, filter: &Document) -> bool {
    filter.iter().all(|(key, expected)| {
        let actual = document.get(key);
        match expected {
            Bson::Document(operators)
                if operators.keys().all(|k| k.starts_with('$')) && !operators.is_empty() =>
            {
                operators.iter().all(|(operator, operand)| {
                    let Some(actual) = actual else { return false };
                    let order = cairn_types::order::compare_values(actual, operand);
                    match operator.as_str() {
                        "$gt" => order.is_gt(),
                        "$gte" => order.is_ge(),
                        "$lt" => order.is_lt(),
                        "$lte" => order.is_le(),
                        "$eq" => order.is_eq(),
                        _ => false,
                    }
                })
            }
            _ => actual
                .is_some_and(|actual| cairn_types::order::compare_values(actual, expected).is_eq()),
        }
    })
}

fn matching(documents: Option<&Vec<Document>>, filter: &Document) -> Vec<Document> {
    documents
        .map(|all| all.iter().filter(|d| matches(d, filter)).cloned().collect())
        .unwrap_or_default()
}

fn sort_documents(documents: &mut [Document], sort: &Document) {
    documents.sort_by(|a, b| {
        for (key, direction) in sort {
            let order = cairn_types::order::compare_values(
                a.get(key).unwrap_or(&Bson::Null),
                b.get(key).unwrap_or(&Bson::Null),
            );
            let order = if number(direction) == Some(-1) {
                order.reverse()
            } else {
                order
            };
            if order.is_ne() {
                return order;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// `$set` updates; anything else replaces the document (keeping `_id`).
fn apply(document: &mut Document, update: &Document) {
    if let Ok(set) = update.get_document("$set") {
        for (key, value) in set {
            document.insert(key.clone(), value.clone());
        }
    } else if !update.keys().any(|k| k.starts_with('$')) {
        let id = document.get("_id").cloned();
        *document = update.clone();
        if let Some(id) = id {
            document.insert("_id", id);
        }
    }
}

fn open_cursor(
    state: &mut State,
    ns: &str,
    mut documents: VecDeque<Document>,
    batch_size: usize,
    single_batch: bool,
    field: &str,
) -> Document {
    let batch: Vec<Document> = (0..batch_size)
        .map_while(|_| documents.pop_front())
        .collect();
    let id = if documents.is_empty() || single_batch {
        0
    } else {
        state.next_cursor_id += 1;
        let id = state.next_cursor_id + 1_000;
        state.cursors.insert(id, (ns.to_string(), documents));
        id
    };
    doc! {"cursor": {field: batch, "id": id, "ns": ns}, "ok": 1.0}
}

#[tonic::async_trait]
impl Cairn for Double {
    async fn run_command(
        &self,
        request: Request<CommandRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        let bytes = request.into_inner().document;
        let reply = match Document::from_reader(bytes.as_ref()) {
            Ok(command) => self.answer(command),
            Err(e) => error(22, "InvalidBSON", &e.to_string()),
        };
        let mut out = Vec::new();
        reply.to_writer(&mut out).unwrap();
        Ok(Response::new(CommandReply {
            document: out.into(),
        }))
    }
}
