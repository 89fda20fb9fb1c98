//! [`Database`]: a database name plus the settings it passes to its collections.

use crate::action::{
    Aggregate, AggregateTarget, CreateCollection, DropDatabase, ListCollections, RunCommand,
    RunCursorCommand,
};
use crate::client::Client;
use crate::collection::Collection;
use crate::concern::{Inherited, ReadConcern, ReadPreference, WriteConcern};
use bson::Document;

/// A database of a deployment.
#[derive(Clone, Debug)]
pub struct Database {
    client: Client,
    name: String,
    /// Settings of this database only (unset fields come from the client).
    own: Inherited,
}

impl Database {
    pub(crate) fn new(client: Client, name: &str, own: Inherited) -> Database {
        Database {
            client,
            name: name.to_string(),
            own,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The effective settings: this database's, else the client's.
    pub(crate) fn inherited(&self) -> Inherited {
        self.own.over(self.client.inherited())
    }

    pub fn read_concern(&self) -> Option<ReadConcern> {
        self.inherited().read_concern
    }

    pub fn write_concern(&self) -> Option<WriteConcern> {
        self.inherited().write_concern
    }

    pub fn read_preference(&self) -> Option<ReadPreference> {
        self.inherited().read_preference
    }

    /// A collection of `T` (use `Collection<Document>` for untyped documents).
    pub fn collection<T>(&self, name: &str) -> Collection<T> {
        Collection::new(self.clone(), name, Inherited::default())
    }

    /// A collection with its own settings; what is unset comes from this database.
    pub fn collection_with_options<T>(&self, name: &str, options: Inherited) -> Collection<T> {
        Collection::new(self.clone(), name, options)
    }

    /// Runs a command document as is (plus `$db`); `{ok: 0}` is an error. Runs on the primary
    /// unless a read preference is given with `.read_preference(...)`.
    pub fn run_command(&self, command: Document) -> RunCommand {
        RunCommand::new(self.clone(), command)
    }

    /// Runs a command that replies with a cursor (`find`, `aggregate`, `listCollections`, ...)
    /// and returns the cursor.
    pub fn run_cursor_command(&self, command: Document) -> RunCursorCommand {
        RunCursorCommand::new(self.clone(), command)
    }

    /// `listCollections`.
    pub fn list_collections(&self) -> ListCollections {
        ListCollections::new(self.clone())
    }

    /// `create`: an explicit collection (with options such as `capped`).
    pub fn create_collection(&self, name: &str) -> CreateCollection {
        CreateCollection::new(self.clone(), name)
    }

    /// `dropDatabase`.
    pub fn drop(&self) -> DropDatabase {
        DropDatabase::new(self.clone())
    }

    /// `{aggregate: 1, pipeline}`: a database-level pipeline (`$currentOp`, `$documents`, ...).
    pub fn aggregate(&self, pipeline: impl IntoIterator<Item = Document>) -> Aggregate {
        Aggregate::new(
            self.clone(),
            AggregateTarget::Database,
            self.inherited(),
            pipeline.into_iter().collect(),
        )
    }
}
