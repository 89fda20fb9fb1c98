//! cairn-driver: the async Rust client for cairn.
//!
//! ```no_run
//! use cairn_driver::{Client, bson::doc};
//! use futures::TryStreamExt;
//! # async fn example() -> cairn_driver::Result<()> {
//! let client = Client::connect("cairn://localhost:27027/?w=majority").await?;
//! let people = client.database("app").collection::<cairn_driver::bson::Document>("people");
//! people.insert_one(doc! {"name": "Ada", "born": 1815}).await?;
//! let mut cursor = people.find(doc! {"born": {"$lt": 1900}}).sort(doc! {"born": 1}).await?;
//! while let Some(person) = cursor.try_next().await? {
//!     println!("{person}");
//! }
//! # Ok(()) }
//! ```
//!
//! The layers, top to bottom:
//! - [`Client`] / [`Database`] / [`Collection`]: MongoDB's API. Every operation is a builder that
//!   is awaited (`coll.find(filter).limit(5).await`); its options override the collection's, which
//!   override the database's, which override the client's (read concern, write concern, read
//!   preference: see [`concern`]).
//! - [`Cursor`]: a `futures::Stream` over a server cursor; it issues `getMore` as it is drained and
//!   `killCursors` when dropped early.
//! - [`topology`]: the description of the deployment (from the seed list and the `hello` replies
//!   of a background monitor) and server selection by read preference, a pure function of it.
//! - `pool`: a few HTTP/2 connections per server, each multiplexing many concurrent calls, and
//!   the gRPC call itself (`cairn_proto::framing`).
//!
//! Every command is one `cairn.v1.Cairn/RunCommand` call carrying a BSON command document with
//! `$db` (see `cairn-proto`); replies are MongoDB's reply documents, and failures become a typed
//! [`Error`] with MongoDB's code, code name, message and labels.

pub mod action;
mod client;
mod collection;
pub mod concern;
mod cursor;
mod database;
pub mod error;
mod execute;
pub mod options;
mod pool;
pub mod results;
pub mod topology;

pub use bson;
pub use client::Client;
pub use collection::{Collection, IndexModel};
pub use concern::{
    Acknowledgment, ReadConcern, ReadConcernLevel, ReadPreference, ReadPreferenceMode, WriteConcern,
};
pub use cursor::Cursor;
pub use database::Database;
pub use error::{Error, ErrorKind, Result};
pub use options::{ClientOptions, ServerAddress};
pub use topology::{Selection, Topology, TopologyDescription};
