//! HTTP/2 connections per server, and the gRPC call over them.
//!
//! A connection is one HTTP/2 connection that multiplexes any number of concurrent calls. A
//! small, fixed number of connections per server (`maxPoolSize`, default 2) spreads the load of
//! many concurrent operations; a call takes the one with the fewest calls in flight (the first
//! of them on a tie), so one task's calls, one after another, all go to one connection. (Taken
//! round-robin, consecutive calls of one task alternated between two connection tasks, and
//! waking the second while the first sat in tokio's next-task slot woke another worker thread:
//! about one thread switch per two calls.) A connection opens on its first call
//! and opens again when it has closed or failed: a call that finds its connection gone before
//! anything reached the server is made again, once, on a new one;
//! an idle connection is checked with an HTTP/2 PING every [`KEEPALIVE_INTERVAL`] and dropped
//! when the server does not answer within [`KEEPALIVE_TIMEOUT`].
//!
//! Calls go straight onto the connection (`h2`), speaking gRPC as `cairn_proto::framing`
//! defines it: the calling task sends the request, and one task per connection drives its I/O.
//! (A tonic channel puts a buffer task between the two, a thread hand-off per call that showed
//! up in profiles as a third of a client's CPU.) Dropping a call resets its stream, which makes
//! the server kill the operation.

use crate::error::{Error, Result};
use crate::options::{ClientOptions, ServerAddress};
use bytes::Bytes;
use cairn_proto::CommandReply;
use cairn_proto::framing::{self, GRPC_CONTENT_TYPE, RUN_COMMAND_PATH};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Status;

/// How often an HTTP/2 connection is checked with a PING.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the server has to answer that PING before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 flow-control windows the driver grants the server: per call, and per connection.
const HTTP2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// One HTTP/2 connection to a server, opened on first use and again after a failure.
pub(crate) struct Connection {
    address: ServerAddress,
    uri: http::Uri,
    connect_timeout: Duration,
    /// The open connection.
    current: Mutex<Option<Open>>,
    opened: AtomicU64,
    /// Held while opening, so concurrent calls open one connection, not one each.
    opening: tokio::sync::Mutex<()>,
    /// The last failure to open, and when: calls that waited for that attempt get its failure
    /// instead of trying again one after another.
    open_failed: Mutex<Option<(Instant, Status)>>,
    /// Calls in flight on this connection (the pool picks the least busy connection).
    in_flight: AtomicUsize,
}

/// Counts a call in flight on its connection until dropped (the call ended or was dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(counter: &'a AtomicUsize) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "a call leaves the in-flight count once");
    }
}

/// An open HTTP/2 connection.
#[derive(Clone)]
struct Open {
    /// Which opening of the connection this is.
    number: u64,
    sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ends (the connection closed or failed).
    closed: Arc<AtomicBool>,
}

/// How far a failed call got.
enum Failure {
    /// Nothing reached the server: the call may be made again on another connection.
    NotSent(Status),
    Failed(Status),
}

impl Connection {
    fn new(address: ServerAddress, connect_timeout: Duration) -> Result<Connection> {
        let uri = format!("{}{RUN_COMMAND_PATH}", address.endpoint_uri())
            .parse::<http::Uri>()
            .map_err(|e| Error::invalid_argument(format!("bad server address {address}: {e}")))?;
        Ok(Connection {
            address,
            uri,
            connect_timeout,
            current: Mutex::new(None),
            opened: AtomicU64::new(0),
            opening: tokio::sync::Mutex::new(()),
            open_failed: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Runs one command: the BSON bytes of the command in (after the room that
    /// `framing::document_buffer` reserves), those of the reply out.
    pub(crate) async fn run_command(&self, command: Vec<u8>) -> Result<Bytes> {
        let _in_flight = InFlight::start(&self.in_flight);
        self.call(command)
            .await
            .map_err(|status| Error::network(Some(self.address.clone()), &status))
    }

    async fn call(&self, command: Vec<u8>) -> std::result::Result<Bytes, Status> {
        let message = framing::frame_document(command)?;
        // A connection that failed before the call reached the server (closed since its last
        // call, say) is replaced once.
        match self.call_once(message.clone()).await {
            Err(Failure::NotSent(_)) => match self.call_once(message).await {
                Ok(reply) => Ok(reply),
                Err(Failure::NotSent(status) | Failure::Failed(status)) => Err(status),
            },
            Ok(reply) => Ok(reply),
            Err(Failure::Failed(status)) => Err(status),
        }
    }

    async fn call_once(&self, message: Bytes) -> std::result::Result<Bytes, Failure> {
        let open = self.open_connection().await.map_err(Failure::Failed)?;
        // After an HTTP/2 error on the connection itself (not a reset of this one call), the
        // next call opens another.
        let connection_failed = |error: &h2::Error| {
            if !error.is_reset() || error.is_go_away() || error.is_io() {
                self.forget(open.number);
            }
            framing::h2_status(error)
        };
        let mut sender = match open.sender.clone().ready().await {
            Ok(sender) => sender,
            Err(error) => return Err(Failure::NotSent(connection_failed(&error))),
        };
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE)
            .header(http::header::TE, "trailers")
            .body(())
            .expect("a well-formed request");
        let (response, mut stream) = sender
            .send_request(request, false)
            .map_err(|error| Failure::NotSent(connection_failed(&error)))?;
        stream
            .send_data(message, true)
            .map_err(|error| Failure::Failed(connection_failed(&error)))?;
        let response = response.await.map_err(|error| {
            let status = connection_failed(&error);
            match error.reason() {
                // The server refused the stream before processing it.
                Some(h2::Reason::REFUSED_STREAM) => Failure::NotSent(status),
                _ => Failure::Failed(status),
            }
        })?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::Failed(framing::http_status(parts.status)));
        }
        if let Some(status) = framing::status_from_headers(&parts.headers) {
            // Trailers-only: a failed call.
            return Err(Failure::Failed(match status.code() {
                tonic::Code::Ok => Status::internal("the reply has no message"),
                _ => status,
            }));
        }
        let message = framing::read_message(&mut body)
            .await
            .map_err(Failure::Failed)?;
        let trailers = body
            .trailers()
            .await
            .map_err(|error| Failure::Failed(connection_failed(&error)))?;
        match trailers.as_ref().and_then(framing::status_from_headers) {
            None => {
                return Err(Failure::Failed(Status::internal(
                    "the reply has no grpc-status",
                )));
            }
            Some(status) if status.code() != tonic::Code::Ok => {
                return Err(Failure::Failed(status));
            }
            Some(_) => {}
        }
        let message =
            message.ok_or_else(|| Failure::Failed(Status::internal("the reply has no message")))?;
        let reply = CommandReply::decode(message).map_err(|error| {
            Failure::Failed(Status::internal(format!(
                "the reply is not a CommandReply: {error}"
            )))
        })?;
        Ok(reply.document)
    }

    /// The open connection, opening it if there is none (or it has closed).
    async fn open_connection(&self) -> std::result::Result<Open, Status> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let waited_from = Instant::now();
        let _opening = self.opening.lock().await;
        if let Some(open) = self.current() {
            return Ok(open);
        }
        if let Some((at, status)) = self.open_failed.lock().expect("connection lock").as_ref() {
            if *at >= waited_from {
                return Err(status.clone());
            }
        }
        let (sender, closed) = match self.open().await {
            Ok(opened) => opened,
            Err(status) => {
                *self.open_failed.lock().expect("connection lock") =
                    Some((Instant::now(), status.clone()));
                return Err(status);
            }
        };
        let open = Open {
            number: self.opened.fetch_add(1, Ordering::Relaxed) + 1,
            sender,
            closed,
        };
        *self.current.lock().expect("connection lock") = Some(open.clone());
        Ok(open)
    }

    /// The open connection, unless there is none or it has closed.
    fn current(&self) -> Option<Open> {
        let mut current = self.current.lock().expect("connection lock");
        if current
            .as_ref()
            .is_some_and(|open| open.closed.load(Ordering::Acquire))
        {
            *current = None;
        }
        current.clone()
    }

    /// Forgets connection `number` after it failed: the next call opens another.
    fn forget(&self, number: u64) {
        let mut current = self.current.lock().expect("connection lock");
        if current.as_ref().is_some_and(|open| open.number == number) {
            *current = None;
        }
    }

    /// Opens a connection: its sender, and the flag its task sets when it ends.
    async fn open(
        &self,
    ) -> std::result::Result<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>), Status> {
        let target = (self.address.host.as_str(), self.address.port);
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(target),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return Err(Status::unavailable(format!("cannot connect: {error}")));
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "cannot connect: no answer within {} ms",
                    self.connect_timeout.as_millis()
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|error| framing::h2_status(&error))?;
        let mut ping_pong = connection.ping_pong().expect("taken once, here");
        let address = self.address.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let closed_by_task = closed.clone();
        tokio::spawn(async move {
            let keepalive = async move {
                loop {
                    tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                    let pong = ping_pong.ping(h2::Ping::opaque());
                    match tokio::time::timeout(KEEPALIVE_TIMEOUT, pong).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return format!("keepalive failed: {error}"),
                        Err(_) => return "no answer to a keepalive PING".to_owned(),
                    }
                }
            };
            tokio::select! {
                ended = &mut connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%address, %error, "HTTP/2 connection ended");
                    }
                }
                reason = keepalive => tracing::debug!(%address, reason, "HTTP/2 connection dropped"),
            }
            closed_by_task.store(true, Ordering::Release);
        });
        Ok((sender, closed))
    }
}

/// The connections of one server.
struct ServerConnections {
    connections: Vec<Arc<Connection>>,
}

impl ServerConnections {
    /// The connection with the fewest calls in flight, the first of them on a tie.
    fn least_busy(&self) -> &Arc<Connection> {
        self.connections
            .iter()
            .min_by_key(|connection| connection.in_flight.load(Ordering::Relaxed))
            .expect("a server has at least one connection")
    }
}

/// Connections to every server the client has talked to.
pub(crate) struct Pool {
    servers: Mutex<HashMap<ServerAddress, Arc<ServerConnections>>>,
    connections_per_server: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(options: &ClientOptions) -> Pool {
        assert!(options.channels_per_server >= 1);
        Pool {
            servers: Mutex::new(HashMap::new()),
            connections_per_server: options.channels_per_server,
            connect_timeout: options.connect_timeout,
        }
    }

    /// A connection to `address`: the least busy of the server's connections.
    pub(crate) fn connection(&self, address: &ServerAddress) -> Result<Arc<Connection>> {
        let server = {
            let mut servers = self.servers.lock().expect("pool lock");
            match servers.get(address) {
                Some(server) => server.clone(),
                None => {
                    let connections = (0..self.connections_per_server)
                        .map(|_| {
                            Connection::new(address.clone(), self.connect_timeout).map(Arc::new)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let server = Arc::new(ServerConnections { connections });
                    servers.insert(address.clone(), server.clone());
                    server
                }
            }
        };
        Ok(server.least_busy().clone())
    }

    /// Forgets the connections of servers that left the topology.
    pub(crate) fn retain(&self, keep: impl Fn(&ServerAddress) -> bool) {
        self.servers
            .lock()
            .expect("pool lock")
            .retain(|address, _| keep(address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(count: usize) -> ServerConnections {
        let address = ServerAddress::parse("localhost:27027").unwrap();
        ServerConnections {
            connections: (0..count)
                .map(|_| {
                    Arc::new(Connection::new(address.clone(), Duration::from_secs(1)).unwrap())
                })
                .collect(),
        }
    }

    fn index_of(server: &ServerConnections, chosen: &Arc<Connection>) -> usize {
        server
            .connections
            .iter()
            .position(|connection| Arc::ptr_eq(connection, chosen))
            .unwrap()
    }

    #[test]
    fn calls_one_after_another_stay_on_one_connection() {
        let server = connections(2);
        for _ in 0..10 {
            let chosen = server.least_busy().clone();
            assert_eq!(index_of(&server, &chosen), 0);
            let _call = InFlight::start(&chosen.in_flight);
        }
    }

    #[test]
    fn concurrent_calls_spread_over_the_least_busy_connections() {
        let server = connections(3);
        let mut calls = Vec::new();
        for _ in 0..6 {
            let chosen = server.least_busy();
            calls.push((
                index_of(&server, chosen),
                InFlight::start(&chosen.in_flight),
            ));
        }
        let chosen_order: Vec<usize> = calls.iter().map(|(index, _)| *index).collect();
        assert_eq!(chosen_order, vec![0, 1, 2, 0, 1, 2]);
        // The calls on connection 1 end: it is the least busy.
        calls.retain(|(index, _)| *index != 1);
        assert_eq!(index_of(&server, server.least_busy()), 1);
    }
}
