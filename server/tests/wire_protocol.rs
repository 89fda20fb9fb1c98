//! MongoDB's wire protocol on a cairn node, byte by byte: the OP_QUERY handshake, OP_MSG flag
//! bits (moreToCome, checksumPresent), document sequences, awaitable hello, bad input (closed
//! connections or `{ok: 0}` replies, never a crash, other clients unaffected), a client that
//! leaves mid-command, cursors shared with gRPC, hundreds of concurrent clients, and shutdown.

use bson::{Bson, Document, doc};
use cairn_server::wire::frame::{self, Message, op_code};
use cairn_server::wire::{op_msg, op_query};
use cairn_server::{EmbeddedNode, NodeConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a reply or a close.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn start() -> EmbeddedNode {
    let config = NodeConfig {
        port: 0,
        ..NodeConfig::default()
    };
    EmbeddedNode::start(config, true)
        .await
        .expect("node starts")
}

/// A raw wire-protocol connection.
struct Raw {
    stream: TcpStream,
    next_request_id: i32,
}

impl Raw {
    async fn connect(address: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(address).await.unwrap(),
            next_request_id: 100,
        }
    }

    fn request_id(&mut self) -> i32 {
        self.next_request_id += 1;
        self.next_request_id
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next message from the server (OP_MSG or OP_REPLY), or `None` when it closed the
    /// connection.
    async fn receive(&mut self) -> Option<Message> {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_message())
            .await
            .expect("the server answers or closes in time")
    }

    async fn read_message(&mut self) -> Option<Message> {
        let mut header = [0u8; frame::HEADER_SIZE_BYTES];
        self.stream.read_exact(&mut header).await.ok()?;
        let length = i32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        assert!((frame::HEADER_SIZE_BYTES..=frame::MESSAGE_SIZE_MAX_BYTES).contains(&length));
        let mut bytes = header.to_vec();
        bytes.resize(length, 0);
        self.stream
            .read_exact(&mut bytes[frame::HEADER_SIZE_BYTES..])
            .await
            .ok()?;
        let word = |at: usize| i32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        Some(Message {
            header: frame::MessageHeader {
                message_length: length,
                request_id: word(4),
                response_to: word(8),
                op_code: word(12),
            },
            bytes,
        })
    }

    /// An OP_MSG reply's document; checks that it answers `request_id`.
    async fn reply_to(&mut self, request_id: i32) -> (u32, Document) {
        let message = self.receive().await.expect("a reply");
        assert_eq!(message.header.op_code, op_code::MSG);
        assert_eq!(message.header.response_to, request_id);
        let flags = op_msg::read_flags(&message.bytes).unwrap();
        let document = op_msg::parse(&message.bytes, flags).unwrap().unwrap();
        (flags, document)
    }

    async fn command_with(
        &mut self,
        flags: u32,
        body: Document,
        sequences: &[(&str, &[Document])],
    ) -> Document {
        let id = self.request_id();
        let bytes = op_msg::encode_request(id, flags, &body, sequences).unwrap();
        self.send(&bytes).await;
        self.reply_to(id).await.1
    }

    async fn command(&mut self, body: Document) -> Document {
        self.command_with(0, body, &[]).await
    }

    /// Whether the server closes the connection (rather than answering).
    async fn is_closed(&mut self) -> bool {
        self.receive().await.is_none()
    }
}

fn ok(reply: &Document) -> bool {
    matches!(reply.get("ok"), Some(Bson::Double(v)) if *v == 1.0)
        || matches!(reply.get("ok"), Some(Bson::Int32(1)))
}

fn code(reply: &Document) -> i32 {
    reply
        .get_i32("code")
        .unwrap_or_else(|_| panic!("no code in {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_query_handshake_then_op_msg() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let id = raw.request_id();
    let handshake = doc! {
        "isMaster": 1,
        "helloOk": true,
        "client": {"application": {"name": "raw-test"}, "driver": {"name": "raw", "version": "0"}},
        "compression": ["zstd", "snappy"],
    };
    raw.send(&op_query::encode_request(id, 0, "admin.$cmd", &handshake).unwrap())
        .await;
    let message = raw.receive().await.unwrap();
    assert_eq!(message.header.op_code, op_code::REPLY);
    assert_eq!(message.header.response_to, id);
    let (flags, reply) = op_query::decode_reply(&message.bytes).unwrap();
    assert_eq!(flags, 0);
    assert_eq!(reply.get_bool("ismaster").ok(), Some(true), "{reply}");
    assert_eq!(reply.get_bool("helloOk").ok(), Some(true));
    assert!(
        !reply.contains_key("compression"),
        "no compressor is agreed: {reply}"
    );
    for field in [
        "maxBsonObjectSize",
        "maxMessageSizeBytes",
        "maxWriteBatchSize",
        "localTime",
        "minWireVersion",
        "maxWireVersion",
        "logicalSessionTimeoutMinutes",
        "connectionId",
        "readOnly",
        "topologyVersion",
    ] {
        assert!(reply.contains_key(field), "hello lacks {field}: {reply}");
    }

    // Then OP_MSG on the same connection; the metadata of the handshake is the connection's.
    let reply = raw
        .command(doc! {"currentOp": 1, "$all": true, "$db": "admin", "lsid": {"id": bson::Uuid::new()}, "$readPreference": {"mode": "primaryPreferred"}, "apiVersion": "1"})
        .await;
    assert!(ok(&reply), "{reply}");
    let entries = reply.get_array("inprog").unwrap();
    let ours = entries
        .iter()
        .filter_map(Bson::as_document)
        .find(|entry| {
            entry
                .get_document("command")
                .is_ok_and(|c| c.contains_key("currentOp"))
        })
        .unwrap();
    assert_eq!(
        ours.get_document("clientMetadata")
            .unwrap()
            .get_document("application")
            .unwrap()
            .get_str("name")
            .ok(),
        Some("raw-test")
    );

    // A legacy query that is not a command is refused with QueryFailure; the connection goes on.
    let id = raw.request_id();
    raw.send(&op_query::encode_request(id, 0, "app.users", &doc! {"name": "x"}).unwrap())
        .await;
    let message = raw.receive().await.unwrap();
    let (flags, reply) = op_query::decode_reply(&message.bytes).unwrap();
    assert_eq!(flags, op_query::REPLY_FLAG_QUERY_FAILURE);
    assert!(reply.contains_key("$err"), "{reply}");
    assert!(ok(&raw.command(doc! {"ping": 1, "$db": "admin"}).await));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_to_come_writes_get_no_reply_and_a_read_sees_them() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let documents: Vec<Document> = (0..50).map(|i| doc! {"_id": i, "w": 0}).collect();
    for chunk in documents.chunks(10) {
        let id = raw.request_id();
        let bytes = op_msg::encode_request(
            id,
            op_msg::FLAG_MORE_TO_COME,
            &doc! {"insert": "events", "$db": "app", "writeConcern": {"w": 0}},
            &[("documents", chunk)],
        )
        .unwrap();
        raw.send(&bytes).await;
    }
    // A failing write under moreToCome is dropped silently, and so is endSessions.
    let id = raw.request_id();
    let bytes = op_msg::encode_request(
        id,
        op_msg::FLAG_MORE_TO_COME,
        &doc! {"insert": "events", "$db": "app", "writeConcern": {"w": 0}},
        &[("documents", &[doc! {"_id": 1}])],
    )
    .unwrap();
    raw.send(&bytes).await;
    let id = raw.request_id();
    let bytes = op_msg::encode_request(
        id,
        op_msg::FLAG_MORE_TO_COME,
        &doc! {"endSessions": [{"id": bson::Uuid::new()}], "$db": "admin"},
        &[],
    )
    .unwrap();
    raw.send(&bytes).await;
    // The next reply is the count's: nothing answered the moreToCome messages.
    let reply = raw.command(doc! {"count": "events", "$db": "app"}).await;
    assert_eq!(reply.get_i32("n").ok(), Some(50), "{reply}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_sequences_and_checksums() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let documents = [doc! {"_id": 1, "a": 1}, doc! {"_id": 2, "a": 2}];
    let id = raw.request_id();
    let bytes = op_msg::encode_request(
        id,
        op_msg::FLAG_CHECKSUM_PRESENT,
        &doc! {"insert": "c", "$db": "app"},
        &[("documents", &documents)],
    )
    .unwrap();
    raw.send(&bytes).await;
    let (flags, reply) = raw.reply_to(id).await;
    assert_eq!(
        flags,
        op_msg::FLAG_CHECKSUM_PRESENT,
        "a checksummed request gets a checksummed reply"
    );
    assert_eq!(reply.get_i32("n").ok(), Some(2), "{reply}");
    let updates = [
        doc! {"q": {"_id": 1}, "u": {"$set": {"a": 10}}},
        doc! {"q": {"_id": 2}, "u": {"$set": {"a": 20}}},
    ];
    let reply = raw
        .command_with(
            0,
            doc! {"update": "c", "$db": "app"},
            &[("updates", &updates)],
        )
        .await;
    assert_eq!(reply.get_i32("nModified").ok(), Some(2), "{reply}");
    let deletes = [doc! {"q": {"a": 10}, "limit": 1}];
    let reply = raw
        .command_with(
            0,
            doc! {"delete": "c", "$db": "app"},
            &[("deletes", &deletes)],
        )
        .await;
    assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaitable_hello_waits_for_a_change_that_does_not_come() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let hello = raw.command(doc! {"hello": 1, "$db": "admin"}).await;
    let version = hello.get("topologyVersion").unwrap().clone();
    let started = Instant::now();
    let reply = raw
        .command(doc! {"hello": 1, "$db": "admin", "topologyVersion": version.clone(), "maxAwaitTimeMS": 300})
        .await;
    let waited = started.elapsed();
    assert!(ok(&reply));
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // A version this connection was not told is answered at once.
    let other = doc! {"processId": bson::oid::ObjectId::new(), "counter": 0i64};
    let started = Instant::now();
    raw.command(
        doc! {"hello": 1, "$db": "admin", "topologyVersion": other, "maxAwaitTimeMS": 5000},
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(2000));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_framed_bad_requests_get_ok_0_and_the_connection_goes_on() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let ping = doc! {"ping": 1, "$db": "admin"};
    let good = op_msg::encode_request(1, 0, &ping, &[]).unwrap();

    // An unknown section kind.
    let mut bytes = good.clone();
    bytes[20] = 9;
    raw.send(&bytes).await;
    let (_, reply) = raw.reply_to(1).await;
    assert_eq!(code(&reply), 40432, "{reply}");
    // A body that is not BSON.
    let mut bytes = good.clone();
    let length = bytes.len();
    bytes[length - 1] = 0x7f;
    raw.send(&bytes).await;
    let (_, reply) = raw.reply_to(1).await;
    assert_eq!(code(&reply), 22, "{reply}");
    // An unknown required flag bit.
    raw.send(&op_msg::encode_request(2, 1 << 4, &ping, &[]).unwrap())
        .await;
    let (_, reply) = raw.reply_to(2).await;
    assert_eq!(code(&reply), 223, "{reply}");
    // No $db.
    let reply = raw.command(doc! {"ping": 1}).await;
    assert_eq!(code(&reply), 40571, "{reply}");
    // Nested past the depth limit (a recursive parser would overflow its stack here).
    let mut nested = Bson::Document(doc! {});
    for _ in 0..300 {
        nested = Bson::Document(doc! {"a": nested});
    }
    let reply = raw
        .command(doc! {"ping": 1, "$db": "admin", "deep": nested})
        .await;
    assert_eq!(code(&reply), 15, "{reply}");
    // A body over the document limit.
    let large = "x".repeat(16 * 1024 * 1024 + 20 * 1024);
    let reply = raw
        .command(doc! {"ping": 1, "$db": "admin", "large": large})
        .await;
    assert_eq!(code(&reply), 10334, "{reply}");
    assert!(ok(&raw.command(ping).await));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_closes_only_that_connection() {
    let node = start().await;
    let mut bystander = Raw::connect(node.address).await;
    let ping = doc! {"ping": 1, "$db": "admin"};
    let good = op_msg::encode_request(1, 0, &ping, &[]).unwrap();
    let with_length = |length: i32| {
        let mut bytes = good.clone();
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        bytes
    };
    let with_op_code = |code: i32| {
        let mut bytes = good.clone();
        bytes[12..16].copy_from_slice(&code.to_le_bytes());
        bytes
    };
    let mut bad_checksum =
        op_msg::encode_request(1, op_msg::FLAG_CHECKSUM_PRESENT, &ping, &[]).unwrap();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    let mut more_to_come_garbage =
        op_msg::encode_request(1, op_msg::FLAG_MORE_TO_COME, &ping, &[]).unwrap();
    more_to_come_garbage[20] = 5;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below 16", with_length(12)),
        ("negative length", with_length(-5)),
        ("length over 48 MB", with_length(48_000_001)),
        ("unknown opcode", with_op_code(777)),
        ("OP_COMPRESSED", with_op_code(op_code::COMPRESSED)),
        ("legacy OP_INSERT", with_op_code(op_code::INSERT)),
        ("bad checksum", bad_checksum),
        ("malformed moreToCome", more_to_come_garbage),
        (
            "random bytes",
            (0..64u8).map(|b| b.wrapping_mul(37)).collect(),
        ),
    ];
    for (name, bytes) in cases {
        let mut raw = Raw::connect(node.address).await;
        raw.send(&bytes).await;
        assert!(raw.is_closed().await, "{name}: the connection is closed");
        assert!(
            ok(&bystander.command(ping.clone()).await),
            "{name}: others are served"
        );
    }
    // A message cut short by the peer closing its side.
    let mut raw = Raw::connect(node.address).await;
    raw.send(&good[..good.len() - 3]).await;
    raw.stream.shutdown().await.unwrap();
    assert!(raw.is_closed().await);
    // A header cut short.
    let mut raw = Raw::connect(node.address).await;
    raw.send(&good[..7]).await;
    raw.stream.shutdown().await.unwrap();
    assert!(raw.is_closed().await);
    assert!(ok(&bystander.command(ping).await));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_many_clients_while_others_work() {
    let node = start().await;
    let address = node.address;
    let mut tasks = Vec::new();
    for client in 0..40u32 {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            // Deterministic garbage per client: sometimes a plausible header first.
            let mut bytes: Vec<u8> = (0..200u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(client * 97) >> 13) as u8)
                .collect();
            if client % 2 == 0 {
                bytes[..4].copy_from_slice(&200i32.to_le_bytes());
                bytes[12..16].copy_from_slice(&op_code::MSG.to_le_bytes());
            }
            let _ = stream.write_all(&bytes).await;
            // Done sending: the server answers (ok: 0) or closes, then sees the end.
            let _ = stream.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(REPLY_TIMEOUT, stream.read_to_end(&mut sink)).await;
        }));
    }
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(address).await;
            for _ in 0..20 {
                assert!(ok(&raw.command(doc! {"ping": 1, "$db": "admin"}).await));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut raw = Raw::connect(address).await;
    assert!(ok(&raw.command(doc! {"ping": 1, "$db": "admin"}).await));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_command_has_it_killed() {
    let node = start().await;
    let mut admin = Raw::connect(node.address).await;
    let reply = admin
        .command(doc! {"fsync": 1, "lock": true, "$db": "admin"})
        .await;
    assert!(ok(&reply), "{reply}");
    // An insert that waits behind the fsync lock; then its client goes away.
    let mut leaving = Raw::connect(node.address).await;
    let id = leaving.request_id();
    let bytes = op_msg::encode_request(
        id,
        0,
        &doc! {"insert": "c", "$db": "app", "documents": [{"_id": 1}]},
        &[],
    )
    .unwrap();
    leaving.send(&bytes).await;
    let inserts = |reply: &Document| {
        reply
            .get_array("inprog")
            .unwrap()
            .iter()
            .filter_map(Bson::as_document)
            .filter(|entry| entry.get_str("op").ok() == Some("insert"))
            .count()
    };
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while inserts(&admin.command(doc! {"currentOp": 1, "$db": "admin"}).await) == 0 {
        assert!(Instant::now() < deadline, "the insert shows in currentOp");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(leaving);
    while inserts(&admin.command(doc! {"currentOp": 1, "$db": "admin"}).await) != 0 {
        assert!(Instant::now() < deadline, "the insert is killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = admin.command(doc! {"fsyncUnlock": 1, "$db": "admin"}).await;
    assert!(ok(&reply), "{reply}");
    let reply = admin.command(doc! {"count": "c", "$db": "app"}).await;
    assert_eq!(
        reply.get_i32("n").ok(),
        Some(0),
        "the killed insert did not happen: {reply}"
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_wire_connections() {
    let node = start().await;
    let mut idle = Raw::connect(node.address).await;
    assert!(ok(&idle.command(doc! {"ping": 1, "$db": "admin"}).await));
    // A connection that sent nothing yet (its protocol is still undecided).
    let mut silent = TcpStream::connect(node.address).await.unwrap();
    let started = Instant::now();
    node.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(idle.is_closed().await);
    let mut sink = Vec::new();
    let read = tokio::time::timeout(REPLY_TIMEOUT, silent.read_to_end(&mut sink)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_shared_by_both_transports() {
    let node = start().await;
    let mut raw = Raw::connect(node.address).await;
    let documents: Vec<Document> = (0..10).map(|i| doc! {"_id": i}).collect();
    let reply = raw
        .command_with(
            0,
            doc! {"insert": "c", "$db": "app"},
            &[("documents", &documents)],
        )
        .await;
    assert_eq!(reply.get_i32("n").ok(), Some(10), "{reply}");
    // Opened over gRPC ...
    let grpc = cairn_driver::Client::connect(&format!("cairn://{}", node.address))
        .await
        .unwrap();
    let reply = grpc
        .database("app")
        .run_command(doc! {"find": "c", "sort": {"_id": 1}, "batchSize": 4})
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0);
    // ... continued over the wire protocol, with the same int64 id.
    let reply = raw
        .command(doc! {"getMore": id, "collection": "c", "$db": "app"})
        .await;
    let next = reply
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(
        next.first(),
        Some(&Bson::Document(doc! {"_id": 4})),
        "{reply}"
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_wire_clients() {
    /// Connections open at once.
    const CLIENTS: usize = 400;
    let node = start().await;
    let address = node.address;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(address).await;
            let reply = raw
                .command(doc! {"insert": "c", "$db": "app", "documents": [{"_id": client as i64}]})
                .await;
            assert_eq!(reply.get_i32("n").ok(), Some(1), "{reply}");
            assert!(ok(&raw.command(doc! {"ping": 1, "$db": "admin"}).await));
            raw
        }));
    }
    let mut open = Vec::new();
    for task in tasks {
        open.push(task.await.unwrap());
    }
    let reply = open[0]
        .command(doc! {"serverStatus": 1, "$db": "admin"})
        .await;
    let current = reply
        .get_document("connections")
        .unwrap()
        .get("current")
        .cloned();
    assert!(
        matches!(current, Some(Bson::Int64(n)) if n >= CLIENTS as i64)
            || matches!(current, Some(Bson::Int32(n)) if n >= CLIENTS as i32),
        "{current:?}"
    );
    let reply = open[1].command(doc! {"count": "c", "$db": "app"}).await;
    assert_eq!(reply.get_i32("n").ok(), Some(CLIENTS as i32), "{reply}");
    drop(open);
    node.stop().await.unwrap();
}
