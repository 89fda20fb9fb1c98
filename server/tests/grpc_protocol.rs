//! gRPC as the node serves it, from a raw HTTP/2 client: what a well-formed call gets, and what
//! every malformed one gets (the status a gRPC server gives it, with the node serving on), the
//! deadline of `grpc-timeout`, a reset call killing its operation, a message larger than the
//! flow-control windows, and more concurrent calls on one connection than it admits at once.

mod common;

use bson::{Document, doc};
use bytes::Bytes;
use cairn_proto::CommandReply;
use cairn_proto::framing::{self, RUN_COMMAND_PATH};
use prost::Message;
use std::time::Duration;

/// What came back for one call.
struct Answer {
    http: http::StatusCode,
    headers: http::HeaderMap,
    /// `grpc-status` and `grpc-message`, from the trailers or a trailers-only response.
    status: Option<(tonic::Code, String)>,
    reply: Option<Document>,
}

async fn connect(address: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    connect_with_task(address).await.0
}

/// A raw HTTP/2 connection and the task that drives it (aborting it closes the socket).
async fn connect_with_task(
    address: std::net::SocketAddr,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // Windows as gRPC clients set them (cairn-driver: 1 MiB and 4 MiB; tonic: larger). With
    // h2's default 64 KiB, a 12 MB reply arrives in frames as small as each window update,
    // and h2's client may take that for abuse (ENHANCE_YOUR_CALM, "too_many_data_frames").
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

fn request(path: &str, content_type: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://cairn{path}"))
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::TE, "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

/// Sends `chunks` as the call's DATA frames (the last one ends the stream) and reads the answer.
async fn call(
    sender: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    chunks: Vec<Bytes>,
) -> Answer {
    let mut sender = sender.clone().ready().await.unwrap();
    let (response, mut stream) = sender.send_request(request, chunks.is_empty()).unwrap();
    let count = chunks.len();
    for (index, chunk) in chunks.into_iter().enumerate() {
        // The server may answer before reading everything; the rest is then refused.
        if stream.send_data(chunk, index + 1 == count).is_err() {
            break;
        }
    }
    let response = response.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut status =
        framing::status_from_headers(&parts.headers).map(|s| (s.code(), s.message().to_owned()));
    let mut reply = None;
    if status.is_none() && parts.status == http::StatusCode::OK {
        let message = framing::read_message(&mut body).await.unwrap();
        let trailers = body.trailers().await.unwrap().unwrap();
        status =
            framing::status_from_headers(&trailers).map(|s| (s.code(), s.message().to_owned()));
        reply = message.map(|message| {
            let reply = CommandReply::decode(message).unwrap();
            bson::deserialize_from_slice(&reply.document).unwrap()
        });
    }
    Answer {
        http: parts.status,
        headers: parts.headers,
        status,
        reply,
    }
}

fn command_message(command: &Document) -> Bytes {
    let mut buffer = framing::document_buffer();
    command.to_writer(&mut buffer).unwrap();
    framing::frame_document(buffer).unwrap()
}

async fn ping_works(sender: &h2::client::SendRequest<Bytes>) {
    let answer = call(
        sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![command_message(&doc! {"ping": 1, "$db": "admin"})],
    )
    .await;
    assert_eq!(answer.status, Some((tonic::Code::Ok, String::new())));
    assert_eq!(answer.reply.unwrap().get_f64("ok").unwrap(), 1.0);
}

fn code(answer: &Answer) -> tonic::Code {
    answer.status.as_ref().expect("a grpc-status").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_get_grpc_statuses_and_the_node_serves_on() {
    let (node, _client) = common::start().await;
    let sender = connect(node.address).await;
    ping_works(&sender).await;
    let ping = command_message(&doc! {"ping": 1, "$db": "admin"});

    // A method cairn does not serve.
    let answer = call(
        &sender,
        request("/cairn.v1.Cairn/Other", "application/grpc", &[]),
        vec![ping.clone()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Unimplemented);
    assert!(answer.status.unwrap().1.contains("/cairn.v1.Cairn/Other"));

    // Not gRPC at all.
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "text/plain", &[]),
        vec![ping.clone()],
    )
    .await;
    assert_eq!(answer.http, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // application/grpc+proto is gRPC too.
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc+proto", &[]),
        vec![ping.clone()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Ok);

    // A compression cairn does not take, announced or only flagged.
    let answer = call(
        &sender,
        request(
            RUN_COMMAND_PATH,
            "application/grpc",
            &[("grpc-encoding", "gzip")],
        ),
        vec![ping.clone()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Unimplemented);
    assert_eq!(
        answer.headers.get("grpc-accept-encoding").unwrap(),
        "identity"
    );
    let mut flagged = ping.to_vec();
    flagged[0] = 1;
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![flagged.into()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Internal);

    // A message announced over the limit is refused from its prefix alone.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![Bytes::from(huge)],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::ResourceExhausted);

    // No message, a message cut short, two messages, a cut prefix.
    let mut two = ping.to_vec();
    two.extend_from_slice(&ping);
    for body in [
        vec![],
        vec![ping.slice(..ping.len() - 1)],
        vec![Bytes::from(two)],
        vec![ping.slice(..3)],
    ] {
        let answer = call(
            &sender,
            request(RUN_COMMAND_PATH, "application/grpc", &[]),
            body,
        )
        .await;
        assert_eq!(code(&answer), tonic::Code::Internal);
    }

    // A message that is not a CommandRequest.
    let mut garbage = vec![0u8, 0, 0, 0, 3];
    garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![Bytes::from(garbage)],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Internal);

    // A malformed deadline.
    let answer = call(
        &sender,
        request(
            RUN_COMMAND_PATH,
            "application/grpc",
            &[("grpc-timeout", "soon")],
        ),
        vec![ping.clone()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Internal);

    // The message split over many small DATA frames is whole again.
    let chunks = ping.chunks(3).map(Bytes::copy_from_slice).collect();
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        chunks,
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Ok);

    // The same connection still serves.
    ping_works(&sender).await;
    node.stop().await.unwrap();
}

/// The opids of inserts into `test.c` that are waiting.
async fn waiting_inserts(client: &cairn_driver::Client) -> Vec<i64> {
    let ops = client
        .database("admin")
        .run_command(doc! {"currentOp": 1, "waitingForLock": true})
        .await
        .unwrap();
    ops.get_array("inprog")
        .unwrap()
        .iter()
        .filter_map(|op| op.as_document())
        .filter(|op| op.get_str("ns").ok() == Some("test.c"))
        .map(|op| op.get_i64("opid").unwrap())
        .collect()
}

async fn wait_until_no_waiting_inserts(client: &cairn_driver::Client) {
    for _ in 0..500 {
        if waiting_inserts(client).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the call's operation was not killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_or_a_reset_ends_the_call_and_kills_its_operation() {
    let (node, client) = common::start().await;
    let admin = client.database("admin");
    admin
        .run_command(doc! {"fsync": 1, "lock": true})
        .await
        .unwrap();
    let sender = connect(node.address).await;
    let insert = command_message(&doc! {"insert": "c", "documents": [{"_id": 1}], "$db": "test"});

    // grpc-timeout: the insert waits behind the fsync lock until its deadline.
    let started = std::time::Instant::now();
    let answer = call(
        &sender,
        request(
            RUN_COMMAND_PATH,
            "application/grpc",
            &[("grpc-timeout", "200m")],
        ),
        vec![insert.clone()],
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_millis(200));
    wait_until_no_waiting_inserts(&client).await;

    // A reset: the client gives up on a waiting insert.
    let mut ready = sender.clone().ready().await.unwrap();
    let (response, mut stream) = ready
        .send_request(request(RUN_COMMAND_PATH, "application/grpc", &[]), false)
        .unwrap();
    stream.send_data(insert.clone(), true).unwrap();
    let opid = loop {
        if let Some(&opid) = waiting_inserts(&client).await.first() {
            break opid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(opid > 0);
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    wait_until_no_waiting_inserts(&client).await;

    // A closed connection kills its calls' operations too: the call stays open on this side,
    // and the socket under it closes.
    let (lost, connection_task) = connect_with_task(node.address).await;
    let pending = tokio::spawn(async move {
        let mut ready = lost.ready().await.unwrap();
        let (response, mut stream) = ready
            .send_request(request(RUN_COMMAND_PATH, "application/grpc", &[]), false)
            .unwrap();
        stream.send_data(insert, true).unwrap();
        response.await
    });
    while waiting_inserts(&client).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    connection_task.abort();
    wait_until_no_waiting_inserts(&client).await;
    assert!(
        pending.await.unwrap().is_err(),
        "the call failed with its connection"
    );

    admin.run_command(doc! {"fsyncUnlock": 1}).await.unwrap();
    // None of the three inserts happened.
    let count = client
        .database("test")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(count, 0);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_and_many_calls_on_one_connection() {
    let (node, _client) = common::start().await;
    let sender = connect(node.address).await;

    // A 12 MB document, more than every flow-control window, both ways.
    let blob = bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![0xab; 12 * 1024 * 1024],
    };
    let insert = command_message(
        &doc! {"insert": "big", "documents": [{"_id": 1, "blob": blob.clone()}], "$db": "test"},
    );
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        insert
            .chunks(64 * 1024)
            .map(Bytes::copy_from_slice)
            .collect(),
    )
    .await;
    assert_eq!(code(&answer), tonic::Code::Ok);
    assert_eq!(answer.reply.unwrap().get_i32("n").unwrap(), 1);
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![command_message(&doc! {"find": "big", "$db": "test"})],
    )
    .await;
    let reply = answer.reply.unwrap();
    let batch = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    let found = batch[0].as_document().unwrap();
    assert_eq!(found.get_binary_generic("blob").unwrap(), &blob.bytes);

    // More concurrent calls than one connection admits at once: the rest queue, all finish.
    let calls = (0..600).map(|i| {
        let sender = sender.clone();
        async move {
            let answer = call(
                &sender,
                request(RUN_COMMAND_PATH, "application/grpc", &[]),
                vec![command_message(
                    &doc! {"insert": "many", "documents": [{"_id": i}], "$db": "test"},
                )],
            )
            .await;
            assert_eq!(code(&answer), tonic::Code::Ok);
        }
    });
    futures::future::join_all(calls).await;
    let answer = call(
        &sender,
        request(RUN_COMMAND_PATH, "application/grpc", &[]),
        vec![command_message(&doc! {"count": "many", "$db": "test"})],
    )
    .await;
    assert_eq!(answer.reply.unwrap().get_i32("n").unwrap(), 600);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_waiting_call_and_answers_it() {
    let (node, client) = common::start().await;
    client
        .database("admin")
        .run_command(doc! {"fsync": 1, "lock": true})
        .await
        .unwrap();
    let waiting = {
        let coll = client.database("test").collection::<Document>("c");
        tokio::spawn(async move { coll.insert_one(doc! {"_id": 1}).await })
    };
    while waiting_inserts(&client).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(node.stop());
    let error = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting call is answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code(), Some(11600), "{error}");
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the node stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_replaces_a_connection_the_server_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = cairn_server::NodeConfig {
        port: 0,
        dbpath: dir.path().to_path_buf(),
        ..cairn_server::NodeConfig::default()
    };
    let node = cairn_server::EmbeddedNode::start(config.clone(), false)
        .await
        .unwrap();
    let port = node.address.port();
    let client = cairn_driver::Client::connect(&format!("cairn://{}", node.address))
        .await
        .unwrap();
    let coll = client.database("test").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    node.stop().await.unwrap();
    let node =
        cairn_server::EmbeddedNode::start(cairn_server::NodeConfig { port, ..config }, false)
            .await
            .unwrap();
    // Writes are not retried: this one goes through only if the driver opens a new connection
    // instead of failing on the closed one.
    coll.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_driver_operation_kills_it_on_the_server() {
    // What Ctrl-C in the shell does: the operation's future is dropped mid-call.
    let (node, client) = common::start().await;
    client
        .database("admin")
        .run_command(doc! {"fsync": 1, "lock": true})
        .await
        .unwrap();
    let coll = client.database("test").collection::<Document>("c");
    let waiting = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.insert_one(doc! {"_id": 1}).await })
    };
    while waiting_inserts(&client).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waiting.abort();
    wait_until_no_waiting_inserts(&client).await;
    client
        .database("admin")
        .run_command(doc! {"fsyncUnlock": 1})
        .await
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    node.stop().await.unwrap();
}
