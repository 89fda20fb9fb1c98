//! cairn-server: a cairn node (binary `cairnd`).
//!
//! [`Node`] wires the storage engine, the lock manager and the query layer together and runs
//! MongoDB's commands ([`Node::run_command`]); [`serve`] puts it on the network over gRPC
//! (`cairn.v1.Cairn/RunCommand`). Modules:
//! - `node`: the node, its operation table and connections;
//! - `opctx`: one running operation (locker, deadline, currentOp entry);
//! - `commands`: the dispatcher and every command;
//! - `exec`: collections (documents and index maintenance), plan execution with yielding;
//! - `cursors`: server cursors for getMore;
//! - `grpc`: the transport;
//! - `config`: flags and the config file.

pub mod commands;
pub mod config;
pub mod cursors;
pub mod exec;
pub mod grpc;
pub mod metrics;
pub mod node;
pub mod opctx;

pub use config::{Arguments, LogFormat, NodeConfig};
pub use node::{ClientInfo, Node};

use std::net::SocketAddr;

/// Binds every configured address (`bind_ip` x `port`).
pub async fn bind(config: &NodeConfig) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    for ip in &config.bind_ip {
        let address = if ip.contains(':') {
            format!("[{ip}]:{}", config.port)
        } else {
            format!("{ip}:{}", config.port)
        };
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
        tracing::info!(address = %listener.local_addr()?, "waiting for connections");
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves the node on the given listeners until `shutdown` completes.
pub async fn serve(
    node: Node,
    listeners: Vec<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_sender, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut servers = Vec::new();
    for listener in listeners {
        let node = node.clone();
        let mut stop = stop_sender.subscribe();
        servers.push(tokio::spawn(async move {
            let counting_node = node.clone();
            let incoming = async_stream_incoming(listener, counting_node);
            tonic::transport::Server::builder()
                .add_service(cairn_proto::server(grpc::CairnService::new(node)))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.recv().await;
                })
                .await
        }));
    }
    shutdown.await;
    let _ = stop_sender.send(());
    for server in servers {
        server.await??;
    }
    Ok(())
}

/// Accepted TCP connections, counted.
fn async_stream_incoming(
    listener: tokio::net::TcpListener,
    node: Node,
) -> impl tokio_stream::Stream<Item = std::io::Result<grpc::CountedStream>> {
    let accepted = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio_stream::StreamExt::map(accepted, move |stream| {
        let stream = stream?;
        let _ = stream.set_nodelay(true);
        Ok(grpc::CountedStream::new(stream, &node))
    })
}

/// A node serving on loopback in this process (the shell's embedded default, tests).
pub struct EmbeddedNode {
    pub node: Node,
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl EmbeddedNode {
    /// Starts a node on `127.0.0.1` (port 0 picks a free one) on the current tokio runtime. With
    /// no dbpath, a temporary directory that lives as long as the node.
    pub async fn start(mut config: NodeConfig, temporary: bool) -> anyhow::Result<EmbeddedNode> {
        let temporary_dir = if temporary {
            let dir = tempfile::Builder::new().prefix("cairn-").tempdir()?;
            config.dbpath = dir.path().to_path_buf();
            Some(dir)
        } else {
            None
        };
        let node = tokio::task::spawn_blocking(move || Node::open(config)).await??;
        if let Some(dir) = temporary_dir {
            node.hold_temporary_dbpath(dir);
        }
        let listeners = bind(node.config()).await?;
        let address = listeners[0].local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(node.clone(), listeners, async move {
            let _ = stopped.await;
        }));
        Ok(EmbeddedNode {
            node,
            address,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Stops serving and shuts the node down cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_serving().await?;
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.shutdown()).await??;
        Ok(())
    }

    async fn stop_serving(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await??;
        }
        Ok(())
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
