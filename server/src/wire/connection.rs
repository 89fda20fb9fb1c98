//! One wire-protocol connection: read a message, decode it, run its command on a blocking
//! thread ([`Node::run_command`] may wait for locks), write the reply; one message at a time,
//! in order, as mongod serves a connection.
//!
//! - Bad input: the reason is logged with the connection's id and peer, then the connection is
//!   closed (or answered with `{ok: 0}`, see the module above). Nothing here panics on input; a
//!   panic in a command is the dispatcher's `InternalError` reply, and a failed blocking task
//!   closes only this connection.
//! - A client that goes away while its command runs gets the command killed (ClientDisconnect);
//!   a shutdown of the server interrupts it (InterruptedAtShutdown), answers it and closes.
//! - Awaitable hello (drivers' streaming monitors send `hello` with the `topologyVersion` they
//!   were last given and `maxAwaitTimeMS`): when the version is the one this connection was
//!   last told, nothing has changed, so the reply waits up to maxAwaitTimeMS (asynchronously:
//!   no blocking thread is held) as mongod's does. A standalone node's topology never changes;
//!   a replica set must also end the wait when its topology version moves.

use super::frame::{self, HEADER_SIZE_BYTES, ReadError};
use super::{Decoded, ReplyTo, decode, encode_reply, stopped};
use crate::node::{ClientInfo, ConnectionGuard, Node};
use crate::opctx::OpSlot;
use bson::{Bson, Document};
use cairn_types::ErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;

/// Messages up to this size are decoded on the network thread; larger ones on a blocking
/// thread, so that parsing tens of megabytes never stalls other connections.
const DECODE_INLINE_MAX_BYTES: usize = 256 * 1024;

/// The longest an awaitable hello waits, whatever its maxAwaitTimeMS (drivers ask for their
/// heartbeat frequency, 10 s by default).
const HELLO_AWAIT_MAX_MS: u64 = 60_000;

/// Resolves when the peer closes its side (or the connection fails). Pending forever once the
/// peer has sent more bytes: they are the next message, and a close behind them shows then.
async fn peer_closed(reader: &mut OwnedReadHalf) {
    let mut byte = [0u8; 1];
    loop {
        match reader.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

/// Kills the command that `slot` names: now if it is running, else as soon as it starts.
pub(crate) fn kill(node: &Node, slot: &OpSlot, code: ErrorCode) {
    slot.kill(&node.inner().locks, code);
}

/// Whether the command is a hello (under any of its names).
fn is_hello(command: &Document) -> bool {
    matches!(
        command.keys().next().map(String::as_str),
        Some("hello" | "isMaster" | "ismaster")
    )
}

/// How long an awaitable hello should wait before it is answered (see the module docs).
fn hello_await(command: &Document, last_topology_version: Option<&Bson>) -> Option<Duration> {
    if !is_hello(command) {
        return None;
    }
    let asked = command.get("topologyVersion")?;
    if Some(asked) != last_topology_version {
        return None;
    }
    let millis = match command.get("maxAwaitTimeMS")? {
        Bson::Int32(value) => i64::from(*value),
        Bson::Int64(value) => *value,
        Bson::Double(value) => *value as i64,
        _ => return None,
    };
    (millis > 0).then(|| Duration::from_millis((millis as u64).min(HELLO_AWAIT_MAX_MS)))
}

/// What running one command produced.
struct Ran {
    reply: Option<Vec<u8>>,
    /// The topologyVersion a hello reply told the client.
    topology_version: Option<Bson>,
}

/// Runs a command and encodes its reply (on a blocking thread).
fn run(
    node: &Node,
    client: &ClientInfo,
    command: Document,
    hello: bool,
    reply_to: ReplyTo,
    request_id: i32,
) -> Ran {
    let reply = node.run_command(client, command);
    finish(client, hello, reply, reply_to, request_id)
}

/// Encodes a command's reply, and remembers what a hello told the client.
fn finish(
    client: &ClientInfo,
    hello: bool,
    reply: Document,
    reply_to: ReplyTo,
    request_id: i32,
) -> Ran {
    if reply_to == ReplyTo::Nothing {
        if let Ok(0.0) = reply.get_f64("ok") {
            tracing::debug!(connection = client.connection_id, %reply, "a moreToCome command failed; no reply is sent");
        }
    }
    Ran {
        topology_version: hello
            .then(|| reply.get("topologyVersion").cloned())
            .flatten(),
        reply: encode_reply(reply_to, request_id, &reply),
    }
}

/// Serves one connection whose first bytes (`prefix`, already read) were not the HTTP/2
/// preface, until the peer closes it, it misbehaves, or the server stops.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    guard: ConnectionGuard,
    prefix: Vec<u8>,
    node: Node,
    mut stop: watch::Receiver<bool>,
    signal: crate::network::RequestSignal,
) {
    assert!(
        prefix.len() <= HEADER_SIZE_BYTES,
        "the prefix is part of a header"
    );
    let connection = guard.client().connection_id;
    let remote = guard.client().remote.clone();
    tracing::debug!(connection, %remote, "MongoDB wire protocol connection");
    let (mut reader, mut writer) = stream.into_split();
    let mut prefix = prefix;
    let mut last_topology_version: Option<Bson> = None;
    loop {
        let read = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            read = frame::read_message(&mut reader, &prefix) => read,
        };
        prefix.clear();
        let message = match read {
            Ok(Some(message)) => {
                signal.request_arrived();
                message
            }
            Ok(None) => break,
            Err(ReadError::Io(error)) => {
                tracing::debug!(connection, %remote, %error, "connection failed");
                break;
            }
            Err(ReadError::Bad(reason)) => {
                tracing::warn!(connection, %remote, %reason, "closing the connection: bad wire protocol message");
                break;
            }
        };
        let request_id = message.header.request_id;
        let decoded = if message.bytes.len() <= DECODE_INLINE_MAX_BYTES {
            decode(&message)
        } else {
            match tokio::task::spawn_blocking(move || decode(&message)).await {
                Ok(decoded) => decoded,
                Err(error) => Err(format!("decoding failed: {error}")),
            }
        };
        let reply = match decoded {
            Err(reason) => {
                tracing::warn!(connection, %remote, request_id, %reason, "closing the connection: bad wire protocol message");
                break;
            }
            Ok(Decoded::Refused { error, reply_to }) => {
                tracing::info!(connection, %remote, request_id, %error, "refused a malformed wire protocol request");
                encode_reply(reply_to, request_id, &error.to_reply())
            }
            Ok(Decoded::Command { command, reply_to }) => {
                if let Some(wait) = hello_await(&command, last_topology_version.as_ref()) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(&mut stop) => {}
                        _ = peer_closed(&mut reader) => break,
                    }
                }
                let slot = Arc::new(OpSlot::default());
                let mut client = guard.client().clone();
                client.op_slot = Some(slot.clone());
                // A command that cannot wait runs here, saving two thread hand-offs; anything
                // else on a blocking thread, watched for the peer leaving and for shutdown.
                let hello = is_hello(&command);
                let ran = match node.try_run_command_inline(&client, command) {
                    Ok(reply) => finish(&client, hello, reply, reply_to, request_id),
                    Err(command) => {
                        let running_node = node.clone();
                        let _running = signal.command_running();
                        let mut task = tokio::task::spawn_blocking(move || {
                            run(&running_node, &client, command, hello, reply_to, request_id)
                        });
                        let mut watching_peer = true;
                        let mut watching_stop = true;
                        let ran = loop {
                            tokio::select! {
                                ran = &mut task => break ran,
                                _ = peer_closed(&mut reader), if watching_peer => {
                                    tracing::info!(connection, %remote, "client went away: killing its operation");
                                    kill(&node, &slot, ErrorCode::ClientDisconnect);
                                    watching_peer = false;
                                }
                                _ = stopped(&mut stop), if watching_stop => {
                                    kill(&node, &slot, ErrorCode::InterruptedAtShutdown);
                                    watching_stop = false;
                                }
                            }
                        };
                        let ran = match ran {
                            Ok(ran) => ran,
                            Err(error) => {
                                tracing::error!(connection, %remote, %error, "command task failed: closing the connection");
                                break;
                            }
                        };
                        if !watching_peer {
                            break;
                        }
                        ran
                    }
                };
                if ran.topology_version.is_some() {
                    last_topology_version = ran.topology_version;
                }
                ran.reply
            }
        };
        if let Some(reply) = reply {
            if let Err(error) = writer.write_all(&reply).await {
                tracing::debug!(connection, %remote, %error, "cannot send a reply");
                break;
            }
        }
    }
    tracing::debug!(connection, %remote, "connection closed");
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn awaitable_hello_waits_only_on_the_version_it_was_told() {
        let version =
            Bson::Document(doc! {"processId": bson::oid::ObjectId::new(), "counter": 0i64});
        let awaitable =
            doc! {"hello": 1, "topologyVersion": version.clone(), "maxAwaitTimeMS": 250};
        assert_eq!(
            hello_await(&awaitable, Some(&version)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(hello_await(&awaitable, None), None);
        let other = Bson::Document(doc! {"processId": bson::oid::ObjectId::new(), "counter": 0i64});
        assert_eq!(hello_await(&awaitable, Some(&other)), None);
        let plain = doc! {"hello": 1, "maxAwaitTimeMS": 250};
        assert_eq!(hello_await(&plain, Some(&version)), None);
        let ping = doc! {"ping": 1, "topologyVersion": version.clone(), "maxAwaitTimeMS": 250};
        assert_eq!(hello_await(&ping, Some(&version)), None);
        let long =
            doc! {"isMaster": 1, "topologyVersion": version.clone(), "maxAwaitTimeMS": i64::MAX};
        assert_eq!(
            hello_await(&long, Some(&version)),
            Some(Duration::from_millis(HELLO_AWAIT_MAX_MS))
        );
    }
}
