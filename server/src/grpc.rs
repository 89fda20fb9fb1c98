//! The gRPC transport: `cairn.v1.Cairn/RunCommand` carrying one BSON command document each way.
//!
//! gRPC is served directly on HTTP/2 (the `h2` crate), one task per connection. That task
//! drives the connection and every call on it: a call's request is read, a short command (see
//! `Node::try_run_command_inline`) runs right there, and its reply is written, with no task
//! spawned and no thread woken per call. Commands that may wait (for locks, the disk, other
//! operations) run on blocking worker threads, so a blocked operation never stalls the other
//! calls of its connection. A generic gRPC server stack (a task per call, service routing,
//! codecs, body adapters) cost more CPU than a command itself; docs/server.md ("gRPC") has the
//! figures.
//!
//! What is served, as gRPC over HTTP/2 defines it: unary `POST /cairn.v1.Cairn/RunCommand`
//! with `content-type: application/grpc[+proto]`, one length-prefixed, uncompressed protobuf
//! message each way, the status in trailers (`grpc-status`, `grpc-message`), `grpc-timeout`
//! honoured (DEADLINE_EXCEEDED). Anything else gets the status a gRPC server gives it:
//! UNIMPLEMENTED for another method or encoding, INTERNAL for a compressed or malformed
//! message, HTTP 415 for another content type, RESOURCE_EXHAUSTED for a message over
//! [`cairn_proto::GRPC_MESSAGE_SIZE_MAX_BYTES`] (docs/server.md "gRPC" lists them).
//! A call whose client resets it (a cancelled RPC, Ctrl-C in the shell) or whose connection
//! goes away before the reply kills its operation.

use crate::node::{ConnectionGuard, Node};
use crate::wire::kill;
use bytes::{Buf, Bytes, BytesMut};
use cairn_proto::CommandRequest;
use cairn_proto::framing::{self, GRPC_CONTENT_TYPE, RUN_COMMAND_PATH};
use cairn_types::ErrorCode;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::Status;

/// Requests up to this size are parsed on the async worker (and may run there, see
/// `Node::try_run_command_inline`); larger ones are parsed on a blocking thread.
const INLINE_REQUEST_MAX_BYTES: usize = 64 * 1024;

/// HTTP/2 flow-control windows the server grants: per call, and per connection.
const HTTP2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Concurrent calls per connection; a client queues further calls until one ends.
const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// The largest request header block accepted.
const HTTP2_HEADER_LIST_MAX_BYTES: u32 = 16 * 1024;
/// At shutdown, how long a connection may take to drain (its running operations are
/// interrupted, so this bounds only a client that never finishes a request or never answers
/// the GOAWAY) before it is closed.
const SHUTDOWN_DRAIN_MAX_MS: u64 = 10_000;

/// Bytes of written frames held back before the socket write is forced.
const WRITE_COALESCE_BYTES_MAX: usize = 64 * 1024;

/// A gRPC connection's socket: counted for serverStatus.connections, replaying the bytes that
/// protocol detection took off it, and coalescing writes.
///
/// h2 writes a reply in up to three pieces: the frames it buffered, a DATA payload of 256
/// bytes or more handed over without a copy, and then (after flushing those two) the trailers.
/// Passed straight to the socket, that is two writes per reply, and the client wakes twice.
/// Here writes go into `out`, and a flush only wakes the task: the bytes go out at the next
/// read of the socket, which h2 makes on every poll of the connection (the task's next poll at
/// the latest), at shutdown, or once `out` holds [`WRITE_COALESCE_BYTES_MAX`]. So everything
/// h2 writes in one turn of the connection (several replies, under load) leaves in one write.
pub struct CountedStream {
    stream: TcpStream,
    guard: Arc<ConnectionGuard>,
    /// Bytes already taken off the stream (by protocol detection), read again first.
    prefix: Vec<u8>,
    prefix_read: usize,
    /// Written, not yet on the socket.
    out: BytesMut,
    /// A flush of `out` was deferred (and the task woken to make it).
    flush_deferred: bool,
    /// Told when bytes arrive (a call's request, most of the time).
    signal: crate::network::RequestSignal,
}

impl CountedStream {
    /// A connection already counted, whose first bytes `prefix` were already read.
    pub fn from_parts(
        stream: TcpStream,
        guard: ConnectionGuard,
        prefix: Vec<u8>,
        signal: crate::network::RequestSignal,
    ) -> CountedStream {
        CountedStream {
            stream,
            guard: Arc::new(guard),
            prefix,
            prefix_read: 0,
            out: BytesMut::new(),
            flush_deferred: false,
            signal,
        }
    }

    /// Writes `out` to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let written = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(written);
        }
        self.flush_deferred = false;
        Poll::Ready(Ok(()))
    }

    /// Makes room in `out` for more bytes (drains it once it is full).
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.out.len() >= WRITE_COALESCE_BYTES_MAX {
            std::task::ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // A deferred flush goes out first; if the socket cannot take it all now, the rest goes
        // when it is writable (the task is woken then), and reading goes on meanwhile.
        if !this.out.is_empty() {
            if let Poll::Ready(Err(error)) = this.poll_drain(cx) {
                return Poll::Ready(Err(error));
            }
        }
        if this.prefix_read < this.prefix.len() {
            let rest = &this.prefix[this.prefix_read..];
            let count = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..count]);
            this.prefix_read += count;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.signal.request_arrived();
        }
        read
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        if this.out.is_empty() && buf.len() >= WRITE_COALESCE_BYTES_MAX {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_room(cx))?;
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if this.out.is_empty() && total >= WRITE_COALESCE_BYTES_MAX {
            return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            this.out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Deferred: the task is woken, and h2 reads the socket on every poll of the connection
        // (its frame reader runs until the socket has nothing more), which drains `out`.
        let this = self.get_mut();
        if !this.out.is_empty() && !this.flush_deferred {
            this.flush_deferred = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Serves one HTTP/2 connection until the client closes it, it fails, or the server stops (then
/// the connection is drained: calls already started finish, no new call starts).
pub async fn serve_connection(
    stream: CountedStream,
    node: Node,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let guard = stream.guard.clone();
    let signal = stream.signal.clone();
    let remote = guard.client().remote.clone();
    let handshake = h2::server::Builder::new()
        .initial_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(HTTP2_STREAMS_PER_CONNECTION_MAX)
        .max_header_list_size(HTTP2_HEADER_LIST_MAX_BYTES)
        .handshake::<_, Bytes>(stream);
    let mut connection = tokio::select! {
        biased;
        _ = crate::wire::stopped(&mut stop) => return,
        handshake = handshake => match handshake {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(peer = %remote, %error, "HTTP/2 handshake failed");
                return;
            }
        },
    };
    let mut calls = FuturesUnordered::new();
    let mut draining = false;
    let drain_limit = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain_limit);
    loop {
        tokio::select! {
            biased;
            _ = crate::wire::stopped(&mut stop), if !draining => {
                draining = true;
                connection.graceful_shutdown();
                drain_limit
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MAX_MS));
            }
            _ = &mut drain_limit, if draining => {
                tracing::info!(peer = %remote, "connection not drained in time at shutdown: closed");
                break;
            }
            Some(()) = calls.next(), if !calls.is_empty() => {}
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    calls.push(serve_call(node.clone(), guard.clone(), request, respond, stop.clone(), signal.clone()));
                }
                Some(Err(error)) => {
                    tracing::debug!(peer = %remote, %error, "HTTP/2 connection failed");
                    break;
                }
                None => break,
            },
        }
    }
    // Calls still running here lost their connection: dropping them kills their operations.
}

/// Serves one call: checks it, reads its message, runs the command and answers.
async fn serve_call(
    node: Node,
    guard: Arc<ConnectionGuard>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    stop: tokio::sync::watch::Receiver<bool>,
    signal: crate::network::RequestSignal,
) {
    let (parts, body) = request.into_parts();
    if !is_grpc_content_type(&parts.headers) {
        let response = http::Response::builder()
            .status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .body(())
            .expect("a static response");
        let _ = respond.send_response(response, true);
        return;
    }
    let outcome = match check_call(&parts) {
        Err(status) => Err(status),
        Ok(deadline) => {
            let slot = Arc::new(crate::opctx::OpSlot::default());
            let call = with_deadline(
                deadline,
                &node,
                &slot,
                run_call(node.clone(), guard, body, stop, slot.clone(), signal),
            );
            // A reset from the client ends the call; dropping it kills its operation.
            let cancelled = std::future::poll_fn(|cx| respond.poll_reset(cx));
            tokio::select! {
                biased;
                reason = cancelled => {
                    tracing::debug!(?reason, "call reset by the client");
                    return;
                }
                outcome = call => outcome,
            }
        }
    };
    let sent = match outcome {
        Ok(message) => send_message(&mut respond, message),
        Err(status) => send_status(&mut respond, &status),
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "cannot answer a call");
    }
}

/// The call's deadline (`grpc-timeout`), or the status that refuses the call.
fn check_call(parts: &http::request::Parts) -> Result<Option<Duration>, Status> {
    if parts.method != http::Method::POST || parts.uri.path() != RUN_COMMAND_PATH {
        return Err(Status::unimplemented(format!(
            "unknown method {} {}: cairn serves POST {RUN_COMMAND_PATH}",
            parts.method,
            parts.uri.path()
        )));
    }
    if let Some(encoding) = parts.headers.get("grpc-encoding") {
        if encoding.as_bytes() != b"identity" {
            return Err(Status::unimplemented(format!(
                "message encoding {} is not supported: cairn's encoding is identity",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
    }
    match parts.headers.get("grpc-timeout") {
        None => Ok(None),
        Some(value) => framing::parse_timeout(value.as_bytes())
            .map(Some)
            .ok_or_else(|| {
                Status::internal(format!(
                    "malformed grpc-timeout {:?}",
                    String::from_utf8_lossy(value.as_bytes())
                ))
            }),
    }
}

fn is_grpc_content_type(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| {
            let value = value.as_bytes();
            value == b"application/grpc"
                || value.starts_with(b"application/grpc+")
                || value.starts_with(b"application/grpc;")
        })
}

/// Runs `call` until its deadline, if it has one; at the deadline its operation is killed
/// (MaxTimeMSExpired, as for maxTimeMS) and the call ends with DEADLINE_EXCEEDED.
async fn with_deadline(
    deadline: Option<Duration>,
    node: &Node,
    slot: &crate::opctx::OpSlot,
    call: impl std::future::Future<Output = Result<Bytes, Status>>,
) -> Result<Bytes, Status> {
    match deadline {
        None => call.await,
        Some(deadline) => match tokio::time::timeout(deadline, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                kill(node, slot, ErrorCode::MaxTimeMSExpired);
                Err(Status::deadline_exceeded(
                    "the call's deadline (grpc-timeout) passed",
                ))
            }
        },
    }
}

/// Kills the operation of a call that is dropped before it completes.
struct CancelOnDrop {
    slot: Arc<crate::opctx::OpSlot>,
    node: Node,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done {
            tracing::info!(
                opid = self.slot.opid(),
                "client went away: killing its operation"
            );
            kill(&self.node, &self.slot, ErrorCode::ClientDisconnect);
        }
    }
}

/// Reads the request, runs its command and returns the reply message (with its prefix).
async fn run_call(
    node: Node,
    guard: Arc<ConnectionGuard>,
    mut body: h2::RecvStream,
    mut stop: tokio::sync::watch::Receiver<bool>,
    slot: Arc<crate::opctx::OpSlot>,
    signal: crate::network::RequestSignal,
) -> Result<Bytes, Status> {
    let message = framing::read_message(&mut body)
        .await?
        .ok_or_else(|| Status::internal("missing request message"))?;
    let request = CommandRequest::decode(message)
        .map_err(|error| Status::internal(format!("request is not a CommandRequest: {error}")))?;
    let bytes = request.document;
    let mut client = guard.client().clone();
    client.op_slot = Some(slot.clone());
    let mut cancel = CancelOnDrop {
        slot,
        node: node.clone(),
        done: false,
    };
    // A small request is parsed here and, if it cannot wait, run here too; anything else runs
    // on a blocking thread.
    let inline_attempt = if bytes.len() <= INLINE_REQUEST_MAX_BYTES {
        match node.parse_command_bytes(&bytes) {
            Err(reply) => Ok(reply),
            Ok(command) => node.try_run_command_inline(&client, command).map_err(Some),
        }
    } else {
        Err(None)
    };
    let reply = match inline_attempt {
        Ok(reply) => reply,
        Err(parsed) => {
            let (node, slot) = (node.clone(), cancel.slot.clone());
            let _running = signal.command_running();
            let mut task = tokio::task::spawn_blocking(move || match parsed {
                Some(command) => node.run_command(&client, command),
                None => node.run_command_bytes(&client, &bytes),
            });
            // A shutdown interrupts the command, which then answers (InterruptedAtShutdown).
            let joined = tokio::select! {
                joined = &mut task => joined,
                _ = crate::wire::stopped(&mut stop) => {
                    kill(&cancel.node, &slot, ErrorCode::InterruptedAtShutdown);
                    task.await
                }
            };
            joined.map_err(|error| Status::internal(format!("command task failed: {error}")))?
        }
    };
    cancel.done = true;
    encode_reply(&reply)
}

/// A reply document as a gRPC message holding a `CommandReply` (see [`framing::frame_document`]).
fn encode_reply(reply: &bson::Document) -> Result<Bytes, Status> {
    let mut buffer = framing::document_buffer();
    reply
        .to_writer(&mut buffer)
        .map_err(|error| Status::internal(format!("reply does not serialize: {error}")))?;
    framing::frame_document(buffer)
}

fn grpc_response() -> http::Response<()> {
    http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE)
        .body(())
        .expect("a static response")
}

fn send_message(
    respond: &mut h2::server::SendResponse<Bytes>,
    message: Bytes,
) -> Result<(), h2::Error> {
    let mut stream = respond.send_response(grpc_response(), false)?;
    stream.send_data(message, false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers)
}

/// A trailers-only response: the status in the response headers, and no message.
fn send_status(
    respond: &mut h2::server::SendResponse<Bytes>,
    status: &Status,
) -> Result<(), h2::Error> {
    debug_assert!(status.code() != tonic::Code::Ok);
    let mut response = grpc_response();
    framing::put_status(status, response.headers_mut());
    if status.code() == tonic::Code::Unimplemented {
        // What a client may send instead (it matters when its encoding was refused).
        response.headers_mut().insert(
            "grpc-accept-encoding",
            http::HeaderValue::from_static("identity"),
        );
    }
    respond.send_response(response, true).map(|_| ())
}
