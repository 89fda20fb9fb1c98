//! gRPC channels per server.
//!
//! A tonic `Channel` is one HTTP/2 connection that multiplexes any number of concurrent calls,
//! and reconnects by itself after a failure. A small, fixed number of channels per server
//! (`maxPoolSize`, default 2) spreads the load of many concurrent operations over a few
//! connections; calls take them round-robin. Channels connect lazily, on their first call.

use crate::error::{Error, Result};
use crate::options::{ClientOptions, ServerAddress};
use cairn_proto::v1::cairn_client::CairnClient;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::transport::{Channel, Endpoint};

/// The channels of one server.
struct ServerChannels {
    clients: Vec<CairnClient<Channel>>,
    next: AtomicUsize,
}

/// Channels for every server the client has talked to.
pub(crate) struct Pool {
    servers: Mutex<HashMap<ServerAddress, std::sync::Arc<ServerChannels>>>,
    channels_per_server: usize,
    connect_timeout: std::time::Duration,
}

impl Pool {
    pub(crate) fn new(options: &ClientOptions) -> Pool {
        assert!(options.channels_per_server >= 1);
        Pool {
            servers: Mutex::new(HashMap::new()),
            channels_per_server: options.channels_per_server,
            connect_timeout: options.connect_timeout,
        }
    }

    /// A client for `address` (cheap to clone: it shares the channel).
    pub(crate) fn client(&self, address: &ServerAddress) -> Result<CairnClient<Channel>> {
        let server = {
            let mut servers = self.servers.lock().expect("pool lock");
            match servers.get(address) {
                Some(server) => server.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(address.endpoint_uri())
                        .map_err(|e| {
                            Error::invalid_argument(format!("bad server address {address}: {e}"))
                        })?
                        .connect_timeout(self.connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
                        .keep_alive_while_idle(true);
                    let clients = (0..self.channels_per_server)
                        .map(|_| cairn_proto::client(endpoint.connect_lazy()))
                        .collect();
                    let server = std::sync::Arc::new(ServerChannels {
                        clients,
                        next: AtomicUsize::new(0),
                    });
                    servers.insert(address.clone(), server.clone());
                    server
                }
            }
        };
        let index = server.next.fetch_add(1, Ordering::Relaxed) % server.clients.len();
        Ok(server.clients[index].clone())
    }

    /// Forgets the channels of servers that left the topology.
    pub(crate) fn retain(&self, keep: impl Fn(&ServerAddress) -> bool) {
        self.servers
            .lock()
            .expect("pool lock")
            .retain(|address, _| keep(address));
    }
}
