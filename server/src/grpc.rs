//! The gRPC transport: `cairn.v1.Cairn/RunCommand` carrying one BSON command document each way.
//!
//! Commands run on blocking worker threads (they may wait for locks); the network side stays
//! async, so a blocked operation never stalls others. Connections are counted for serverStatus,
//! and a request whose client goes away before the reply (a cancelled RPC, Ctrl-C in the shell)
//! kills its operation.

use crate::node::{ClientInfo, ConnectionGuard, Node};
use cairn_proto::v1::cairn_server::Cairn;
use cairn_proto::{CommandReply, CommandRequest};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};

/// Requests up to this size are parsed on the async worker (and may run there, see
/// `Node::try_run_command_inline`); larger ones are parsed on a blocking thread.
const INLINE_REQUEST_MAX_BYTES: usize = 64 * 1024;

/// The RunCommand service of one node.
pub struct CairnService {
    node: Node,
}

impl CairnService {
    pub fn new(node: Node) -> CairnService {
        CairnService { node }
    }
}

/// A TCP connection counted for serverStatus.connections.
pub struct CountedStream {
    stream: TcpStream,
    guard: Arc<ConnectionGuard>,
    /// Bytes already taken off the stream (by protocol detection), read again first.
    prefix: Vec<u8>,
    prefix_read: usize,
}

impl CountedStream {
    pub fn new(stream: TcpStream, node: &Node) -> CountedStream {
        let remote = stream
            .peer_addr()
            .map(|address| address.to_string())
            .unwrap_or_default();
        CountedStream::from_parts(stream, node.connection_opened(remote), Vec::new())
    }

    /// A connection already counted, whose first bytes `prefix` were already read.
    pub fn from_parts(stream: TcpStream, guard: ConnectionGuard, prefix: Vec<u8>) -> CountedStream {
        CountedStream {
            stream,
            guard: Arc::new(guard),
            prefix,
            prefix_read: 0,
        }
    }
}

/// What a request knows of its connection.
#[derive(Clone)]
pub struct ConnectionInfo {
    pub guard: Arc<ConnectionGuard>,
    pub tcp: TcpConnectInfo,
}

impl Connected for CountedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            guard: self.guard.clone(),
            tcp: self.stream.connect_info(),
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix_read < this.prefix.len() {
            let rest = &this.prefix[this.prefix_read..];
            let count = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..count]);
            this.prefix_read += count;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Kills the operation of a request whose future is dropped before it completes.
struct CancelOnDrop {
    slot: Arc<crate::opctx::OpSlot>,
    node: Node,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done {
            if let Some(opid) = self.slot.opid() {
                tracing::info!(opid, "client went away: killing its operation");
                self.node
                    .inner()
                    .locks
                    .kill_op(opid, cairn_types::ErrorCode::ClientDisconnect);
            }
        }
    }
}

#[tonic::async_trait]
impl Cairn for CairnService {
    async fn run_command(
        &self,
        request: Request<CommandRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        let mut client = match request.extensions().get::<ConnectionInfo>() {
            Some(info) => info.guard.client().clone(),
            None => ClientInfo {
                remote: request
                    .remote_addr()
                    .map(|address| address.to_string())
                    .unwrap_or_default(),
                ..ClientInfo::default()
            },
        };
        let slot = Arc::new(crate::opctx::OpSlot::default());
        client.op_slot = Some(slot.clone());
        let bytes = request.into_inner().document;
        let node = self.node.clone();
        let mut cancel = CancelOnDrop {
            slot,
            node: node.clone(),
            done: false,
        };
        // A small request is parsed here and, if it cannot wait, run here too; anything else
        // runs on a blocking thread.
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
            Err(parsed) => tokio::task::spawn_blocking(move || match parsed {
                Some(command) => node.run_command(&client, command),
                None => node.run_command_bytes(&client, &bytes),
            })
            .await
            .map_err(|error| Status::internal(format!("command task failed: {error}")))?,
        };
        cancel.done = true;
        let mut document = Vec::new();
        reply
            .to_writer(&mut document)
            .map_err(|error| Status::internal(format!("reply does not serialize: {error}")))?;
        Ok(Response::new(CommandReply {
            document: document.into(),
        }))
    }
}
