//! cairn-server: a cairn node (binary `cairnd`).
//!
//! [`Node`] wires the storage engine, the lock manager and the query layer together and runs
//! MongoDB's commands ([`Node::run_command`]); [`serve`] puts it on the network, gRPC
//! (`cairn.v1.Cairn/RunCommand`) and MongoDB's wire protocol on the same port. Modules:
//! - `node`: the node, its operation table and connections;
//! - `opctx`: one running operation (locker, deadline, currentOp entry);
//! - `commands`: the dispatcher and every command;
//! - `exec`: collections (documents and index maintenance), plan execution with yielding;
//! - `cursors`: server cursors for getMore;
//! - `grpc`: the gRPC transport;
//! - `wire`: the MongoDB wire protocol transport (OP_MSG, OP_QUERY handshake);
//! - `network`: the network threads connections live on;
//! - `config`: flags and the config file.

pub mod commands;
pub mod config;
pub mod cursors;
pub mod exec;
pub mod grpc;
pub mod metrics;
pub mod network;
pub mod node;
pub mod opctx;
pub mod wire;

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
        let listener = listen(&address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
        tracing::info!(address = %listener.local_addr()?, "waiting for connections");
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Connections the kernel queues for accept (capped by net.core.somaxconn). A burst of new
/// clients beyond the queue would be dropped or reset, so it is as large as the kernel allows
/// by default (mongod uses SOMAXCONN too).
const LISTEN_BACKLOG: u32 = 4096;

async fn listen(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(address).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(resolved) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to listen on")
    }))
}

/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_RETRY_DELAY_MS: u64 = 100;
/// TCP keepalive on accepted connections, so that a client that vanished without closing (its
/// host crashed, the network dropped) is noticed: its connection closes and its operations are
/// killed after about `IDLE + PROBES x INTERVAL` (4 minutes) instead of never. mongod probes
/// after at most 300 s of idle time.
const TCP_KEEPALIVE_IDLE_SECS: u64 = 120;
const TCP_KEEPALIVE_INTERVAL_SECS: u64 = 20;
const TCP_KEEPALIVE_PROBES: u32 = 6;

/// Socket options of an accepted connection: no Nagle delay, and TCP keepalive.
fn configure_accepted(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(TCP_KEEPALIVE_IDLE_SECS))
        .with_interval(std::time::Duration::from_secs(TCP_KEEPALIVE_INTERVAL_SECS))
        .with_retries(TCP_KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Serves the node on the given listeners until `shutdown` completes: gRPC and MongoDB's wire
/// protocol on the same ports. The first bytes of a connection decide
/// ([`wire::is_http2_preface`]): gRPC connections are served by [`grpc`], the others by
/// [`wire`], each on a task of its own. On shutdown, listening stops, idle connections close,
/// running wire commands are interrupted and answered, and gRPC connections drain.
pub async fn serve(
    node: Node,
    listeners: Vec<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let threads = match node.config().network_threads {
        0 => network::default_thread_count(),
        count => count,
    };
    let network = std::sync::Arc::new(network::NetworkThreads::start(
        threads,
        node.config().idle_poll_micros,
        node.inner().metrics.idle_polled_nanos.clone(),
    )?);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let mut accepters = Vec::new();
    for listener in listeners {
        accepters.push(tokio::spawn(accept_connections(
            listener,
            node.clone(),
            network.clone(),
            stop.clone(),
        )));
    }
    shutdown.await;
    let _ = stop_sender.send(true);
    for accepter in accepters {
        accepter.await?;
    }
    match std::sync::Arc::try_unwrap(network) {
        Ok(network) => network.stop().await,
        Err(_) => unreachable!("the accepters, the only other holders, have ended"),
    }
    Ok(())
}

/// Accepts connections on one listener until the stop signal, then waits for the connections
/// it started to end. Each connection is served on a network thread ([`network`]).
async fn accept_connections(
    listener: tokio::net::TcpListener,
    node: Node,
    network: std::sync::Arc<network::NetworkThreads>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = wire::stopped(&mut stopping) => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "a connection task failed");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(ACCEPT_RETRY_DELAY_MS)).await;
                        continue;
                    }
                };
                let open = node
                    .inner()
                    .connections_current
                    .load(std::sync::atomic::Ordering::Relaxed);
                if open >= u64::from(node.config().connections_max) {
                    tracing::warn!(%peer, open, "connection refused because too many open connections");
                    continue;
                }
                if let Err(error) = configure_accepted(&stream) {
                    tracing::debug!(%peer, %error, "cannot set socket options");
                }
                let guard = node.connection_opened(peer.to_string());
                // The stream moves to the network thread's runtime as a std socket: a tokio
                // socket is registered with the runtime that accepted it.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "cannot hand the connection to a network thread");
                        continue;
                    }
                };
                let (runtime, placement) = network.place();
                let node = node.clone();
                let stop = stop.clone();
                connections.spawn_on(
                    async move {
                        let signal = placement.request_signal();
                        let _placement = placement;
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => route_connection(stream, guard, node, stop, signal).await,
                            Err(error) => tracing::warn!(%peer, %error, "cannot register the connection"),
                        }
                    },
                    &runtime,
                );
            }
        }
    }
    drop(listener);
    while let Some(ended) = connections.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a connection task failed");
        }
    }
}

/// Reads a connection's first bytes and serves it as a gRPC or a wire connection.
async fn route_connection(
    mut stream: tokio::net::TcpStream,
    guard: node::ConnectionGuard,
    node: Node,
    mut stop: tokio::sync::watch::Receiver<bool>,
    signal: network::RequestSignal,
) {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; wire::PROTOCOL_DETECTION_BYTES];
    let read = tokio::select! {
        biased;
        _ = wire::stopped(&mut stop) => return,
        read = stream.read_exact(&mut first) => read,
    };
    if let Err(error) = read {
        tracing::debug!(peer = %guard.client().remote, %error, "connection closed before its first bytes");
        return;
    }
    if wire::is_http2_preface(&first) {
        let counted = grpc::CountedStream::from_parts(stream, guard, first.to_vec(), signal);
        grpc::serve_connection(counted, node, stop).await;
    } else {
        wire::serve_connection(stream, guard, first.to_vec(), node, stop, signal).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        configure_accepted(&accepted).unwrap();
        assert!(accepted.nodelay().unwrap());
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap().as_secs(),
            TCP_KEEPALIVE_IDLE_SECS
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap().as_secs(),
            TCP_KEEPALIVE_INTERVAL_SECS
        );
        assert_eq!(
            socket.tcp_keepalive_retries().unwrap(),
            TCP_KEEPALIVE_PROBES
        );
    }
}
