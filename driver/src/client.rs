//! [`Client`]: the entry point; cheap to clone, all clones share one topology and one pool.

use crate::ServerAddress;
use crate::action::{ListDatabases, RunCommand};
use crate::concern::{Inherited, ReadConcern, ReadPreference, WriteConcern};
use crate::database::Database;
use crate::error::Result;
use crate::execute::Core;
use crate::options::ClientOptions;
use crate::topology::{Selection, Topology, TopologyDescription};
use std::sync::Arc;

/// A handle to a cairn deployment.
#[derive(Clone)]
pub struct Client {
    core: Arc<Core>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hosts", &self.core.options.hosts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Parses a `cairn://` (or `mongodb://`) connection string and starts monitoring the
    /// servers in the background. Nothing is awaited on the network: an unreachable deployment
    /// shows as a server selection error on the first operation (as with MongoDB's drivers);
    /// call [`Client::ping`] to find out at once.
    pub async fn connect(uri: &str) -> Result<Client> {
        Client::with_options(ClientOptions::parse(uri)?)
    }

    /// A client from options; must be called inside a tokio runtime.
    pub fn with_options(options: ClientOptions) -> Result<Client> {
        Ok(Client {
            core: Core::start(options)?,
        })
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    pub fn options(&self) -> &ClientOptions {
        &self.core.options
    }

    pub(crate) fn inherited(&self) -> &Inherited {
        &self.core.options.inherited
    }

    pub fn read_concern(&self) -> Option<&ReadConcern> {
        self.inherited().read_concern.as_ref()
    }

    pub fn write_concern(&self) -> Option<&WriteConcern> {
        self.inherited().write_concern.as_ref()
    }

    pub fn read_preference(&self) -> Option<&ReadPreference> {
        self.inherited().read_preference.as_ref()
    }

    /// A database with the client's settings.
    pub fn database(&self, name: &str) -> Database {
        Database::new(self.clone(), name, Inherited::default())
    }

    /// A database with its own read concern, write concern and read preference; what is unset
    /// comes from the client.
    pub fn database_with_options(&self, name: &str, options: Inherited) -> Database {
        Database::new(self.clone(), name, options)
    }

    /// The database named in the connection string's path.
    pub fn default_database(&self) -> Option<Database> {
        self.core
            .options
            .default_database
            .as_deref()
            .map(|name| self.database(name))
    }

    /// `listDatabases` on `admin`.
    pub fn list_databases(&self) -> ListDatabases {
        ListDatabases::new(self.clone())
    }

    /// `{ping: 1}` on `admin`: fails when no server can be selected or reached.
    pub async fn ping(&self) -> Result<()> {
        RunCommand::new(self.database("admin"), bson::doc! {"ping": 1})
            .await
            .map(|_| ())
    }

    /// The live topology: its description and server selection.
    pub fn topology(&self) -> &Topology {
        &self.core.topology
    }

    /// The current description of the deployment (as of the last checks).
    pub fn topology_description(&self) -> TopologyDescription {
        self.core.topology.description()
    }

    /// Selects a server as an operation would (waits up to `serverSelectionTimeoutMS`).
    pub async fn select_server(&self, selection: &Selection) -> Result<ServerAddress> {
        self.core.topology.select_server(selection).await
    }

    /// The newest `$clusterTime` this client has seen.
    pub fn cluster_time(&self) -> Option<bson::Document> {
        self.core.cluster_time()
    }
}
