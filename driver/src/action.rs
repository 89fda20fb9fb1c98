//! Operation builders: each collection, database and client operation returns one of these;
//! its methods set the operation's options, and awaiting it runs the command.
//!
//! ```no_run
//! # use cairn_driver::{Collection, ReadConcern, bson::{doc, Document}};
//! # async fn example(people: Collection<Document>) -> cairn_driver::Result<()> {
//! let cursor = people
//!     .find(doc! {"age": {"$gte": 18}})
//!     .sort(doc! {"age": -1})
//!     .limit(10)
//!     .read_concern(ReadConcern::majority())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The command each builder sends is built by its `command()` method, so that the exact
//! command document is one function away from a test. Read concern, write concern and read
//! preference set here override the collection's (see [`crate::concern`]).

use crate::client::Client;
use crate::collection::{Collection, IndexModel};
use crate::concern::{Inherited, ReadConcern, ReadPreference, WriteConcern};
use crate::cursor::Cursor;
use crate::database::Database;
use crate::error::{Error, ErrorKind, Result, bson_as_i64};
use crate::execute::{Reply, millis, with_read_concern, with_write_concern};
use crate::results::*;
use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use cairn_types::ErrorCode;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::Duration;

/// Setters for `Option` fields of `self.options` (values of the exact type, so that integer
/// literals infer: `.limit(5)`).
macro_rules! setters {
    ($($(#[$meta:meta])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$meta])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.options.$field = Some(value);
                self
            }
        )*
    };
}

/// `.read_concern()`, `.write_concern()`, `.read_preference()` for this one operation.
macro_rules! concern_setters {
    (read) => {
        /// The read concern of this operation.
        pub fn read_concern(mut self, read_concern: ReadConcern) -> Self {
            self.own.read_concern = Some(read_concern);
            self
        }
        /// The read preference of this operation.
        pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
            self.own.read_preference = Some(read_preference);
            self
        }
    };
    (write) => {
        /// The write concern of this operation.
        pub fn write_concern(mut self, write_concern: WriteConcern) -> Self {
            self.own.write_concern = Some(write_concern);
            self
        }
    };
}

/// `impl IntoFuture` that boxes `self.execute()`.
macro_rules! into_future {
    ($action:ty, $output:ty $(, $($bound:tt)*)?) => {
        impl$(<$($bound)*>)? IntoFuture for $action {
            type Output = Result<$output>;
            type IntoFuture = BoxFuture<'static, Result<$output>>;
            fn into_future(self) -> Self::IntoFuture {
                Box::pin(self.execute())
            }
        }
    };
}

fn insert_if<V: Into<Bson>>(command: &mut Document, key: &str, value: Option<V>) {
    if let Some(value) = value {
        command.insert(key, value.into());
    }
}

async fn read(database: &Database, command: Document, settings: &Inherited) -> Result<Reply> {
    let command = with_read_concern(command, settings);
    database
        .client()
        .core()
        .read(database.name(), command, settings.read_preference.as_ref())
        .await
}

async fn write(database: &Database, command: Document, settings: &Inherited) -> Result<Reply> {
    let command = with_write_concern(command, settings);
    database
        .client()
        .core()
        .write(database.name(), command)
        .await
}

/// Turns `writeErrors` / `writeConcernError` of a write reply into an error.
fn check_write_reply(
    reply: &Document,
    index_offset: usize,
    inserted_ids: BTreeMap<usize, Bson>,
) -> Result<()> {
    match Error::write_failure_from_reply(reply, index_offset)? {
        None => Ok(()),
        Some((mut failure, labels)) => {
            failure.inserted_ids = inserted_ids;
            Err(Error::new(ErrorKind::Write(failure)).with_labels(labels))
        }
    }
}

fn count(reply: &Document, key: &str) -> u64 {
    reply.get(key).and_then(bson_as_i64).unwrap_or(0).max(0) as u64
}

/// A reply document as `T`: moved when `T` is `Document` (most shell and untyped use), else
/// deserialized through serde.
pub(crate) fn deserialize<T: DeserializeOwned + 'static>(document: Document) -> Result<T> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Document>() {
        let document: Box<dyn std::any::Any> = Box::new(document);
        return Ok(*document
            .downcast::<T>()
            .expect("T is Document: the type ids are equal"));
    }
    bson::deserialize_from_document(document).map_err(Error::serialization)
}

// ---------------------------------------------------------------------------------------------
// find

/// Options of `find`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindOptions {
    pub sort: Option<Document>,
    pub projection: Option<Document>,
    pub skip: Option<u64>,
    /// A negative limit returns at most that many documents in one batch and closes the cursor.
    pub limit: Option<i64>,
    pub batch_size: Option<u32>,
    /// An index name or key pattern.
    pub hint: Option<Bson>,
    pub max_time: Option<Duration>,
    pub comment: Option<Bson>,
    pub allow_disk_use: Option<bool>,
    pub collation: Option<Document>,
    /// `maxTimeMS` of each `getMore` (tailable cursors).
    pub max_await_time: Option<Duration>,
}

/// `find`; awaits to a [`Cursor<T>`].
#[must_use = "an operation does nothing until it is awaited"]
pub struct Find<T> {
    collection: Collection<T>,
    filter: Document,
    options: FindOptions,
    own: Inherited,
    single_batch: bool,
}

impl<T> Find<T> {
    pub(crate) fn new(collection: Collection<T>, filter: Document) -> Find<T> {
        Find {
            collection,
            filter,
            options: FindOptions::default(),
            own: Inherited::default(),
            single_batch: false,
        }
    }

    setters! {
        sort: Document, projection: Document, skip: u64, limit: i64, batch_size: u32, hint: Bson,
        max_time: Duration, comment: Bson, allow_disk_use: bool, collation: Document,
        max_await_time: Duration,
    }
    concern_setters!(read);

    pub fn with_options(mut self, options: FindOptions) -> Self {
        self.options = options;
        self
    }

    /// The `find` command this sends (without `$db` and the read concern).
    pub fn command(&self) -> Document {
        let options = &self.options;
        let mut command = doc! {"find": self.collection.name(), "filter": self.filter.clone()};
        insert_if(&mut command, "sort", options.sort.clone());
        insert_if(&mut command, "projection", options.projection.clone());
        insert_if(&mut command, "hint", options.hint.clone());
        insert_if(&mut command, "skip", options.skip.map(|skip| skip as i64));
        let mut single_batch = self.single_batch;
        if let Some(limit) = options.limit {
            if limit < 0 {
                single_batch = true;
            }
            if limit != 0 {
                command.insert("limit", limit.abs());
            }
        }
        insert_if(&mut command, "batchSize", options.batch_size.map(i64::from));
        if single_batch {
            command.insert("singleBatch", true);
        }
        insert_if(&mut command, "maxTimeMS", options.max_time.map(millis));
        insert_if(&mut command, "comment", options.comment.clone());
        insert_if(&mut command, "allowDiskUse", options.allow_disk_use);
        insert_if(&mut command, "collation", options.collation.clone());
        command
    }

    fn settings(&self) -> Inherited {
        self.own.over(&self.collection.inherited())
    }

    /// `explain` of this find: `{explain: <find>, verbosity}`.
    pub async fn explain(self, verbosity: &str) -> Result<Document> {
        let command = doc! {"explain": self.command(), "verbosity": verbosity};
        let settings = self.settings();
        Ok(read(self.collection.database(), command, &settings)
            .await?
            .document)
    }

    async fn execute(self) -> Result<Cursor<T>> {
        let settings = self.settings();
        let database = self.collection.database().clone();
        let reply = read(&database, self.command(), &settings).await?;
        Cursor::from_reply(
            database.client().clone(),
            reply.address,
            reply.document,
            self.options.batch_size,
            self.options.max_await_time,
        )
    }
}

into_future!(Find<T>, Cursor<T>, T: Send + 'static);

/// `find` of at most one document; awaits to `Option<T>`.
#[must_use = "an operation does nothing until it is awaited"]
pub struct FindOne<T> {
    find: Find<T>,
}

impl<T> FindOne<T> {
    pub(crate) fn new(collection: Collection<T>, filter: Document) -> FindOne<T> {
        let mut find = Find::new(collection, filter);
        find.options.limit = Some(1);
        find.single_batch = true;
        FindOne { find }
    }

    pub fn projection(mut self, projection: Document) -> Self {
        self.find.options.projection = Some(projection);
        self
    }
    pub fn sort(mut self, sort: Document) -> Self {
        self.find.options.sort = Some(sort);
        self
    }
    pub fn skip(mut self, skip: u64) -> Self {
        self.find.options.skip = Some(skip);
        self
    }
    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.find.options.max_time = Some(max_time);
        self
    }
    pub fn hint(mut self, hint: impl Into<Bson>) -> Self {
        self.find.options.hint = Some(hint.into());
        self
    }
    pub fn read_concern(mut self, read_concern: ReadConcern) -> Self {
        self.find.own.read_concern = Some(read_concern);
        self
    }
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.find.own.read_preference = Some(read_preference);
        self
    }

    pub fn command(&self) -> Document {
        self.find.command()
    }

    async fn execute(self) -> Result<Option<T>>
    where
        T: DeserializeOwned + 'static,
    {
        let mut cursor = self.find.execute().await?;
        cursor.next_document().await.transpose()
    }
}

into_future!(FindOne<T>, Option<T>, T: DeserializeOwned + Send + 'static);

// ---------------------------------------------------------------------------------------------
// insert

/// Options of `insert`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InsertOptions {
    /// Stop at the first failed document (default true).
    pub ordered: Option<bool>,
    pub bypass_document_validation: Option<bool>,
    pub comment: Option<Bson>,
}

/// Puts an `_id` first in `document` when it has none; returns the `_id`.
fn ensure_id(document: &mut Document) -> Bson {
    if let Some(id) = document.get("_id") {
        return id.clone();
    }
    let id = Bson::ObjectId(ObjectId::new());
    let mut with_id = doc! {"_id": id.clone()};
    with_id.extend(std::mem::take(document));
    *document = with_id;
    id
}

fn insert_command(
    collection: &str,
    documents: Vec<Document>,
    options: &InsertOptions,
    ordered_always: bool,
) -> Document {
    let mut command = doc! {"insert": collection, "documents": documents};
    if ordered_always || options.ordered.is_some() {
        command.insert("ordered", options.ordered.unwrap_or(true));
    }
    insert_if(
        &mut command,
        "bypassDocumentValidation",
        options.bypass_document_validation,
    );
    insert_if(&mut command, "comment", options.comment.clone());
    command
}

/// `insert` of one document; awaits to [`InsertOneResult`].
#[must_use = "an operation does nothing until it is awaited"]
pub struct InsertOne {
    collection: Collection<Document>,
    document: Result<Document>,
    options: InsertOptions,
    own: Inherited,
}

impl InsertOne {
    pub(crate) fn new(collection: Collection<Document>, document: Result<Document>) -> InsertOne {
        InsertOne {
            collection,
            document,
            options: InsertOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! { bypass_document_validation: bool, comment: Bson }
    concern_setters!(write);

    async fn execute(self) -> Result<InsertOneResult> {
        let mut document = self.document?;
        let id = ensure_id(&mut document);
        let command = insert_command(self.collection.name(), vec![document], &self.options, false);
        let settings = self.own.over(&self.collection.inherited());
        let reply = write(self.collection.database(), command, &settings).await?;
        check_write_reply(&reply.document, 0, BTreeMap::new())?;
        Ok(InsertOneResult { inserted_id: id })
    }
}

into_future!(InsertOne, InsertOneResult);

/// Bytes kept free in a message for the command around the documents.
const COMMAND_OVERHEAD_BYTES: usize = 16 * 1024;

/// `insert` of many documents; awaits to [`InsertManyResult`]. The documents are sent in as
/// few commands as fit the message size and the server's write batch size.
#[must_use = "an operation does nothing until it is awaited"]
pub struct InsertMany {
    collection: Collection<Document>,
    documents: Vec<Result<Document>>,
    options: InsertOptions,
    own: Inherited,
}

impl InsertMany {
    pub(crate) fn new(
        collection: Collection<Document>,
        documents: Vec<Result<Document>>,
    ) -> InsertMany {
        InsertMany {
            collection,
            documents,
            options: InsertOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! { ordered: bool, bypass_document_validation: bool, comment: Bson }
    concern_setters!(write);

    async fn execute(self) -> Result<InsertManyResult> {
        if self.documents.is_empty() {
            return Err(Error::invalid_argument(
                "insert_many needs at least one document",
            ));
        }
        let ordered = self.options.ordered.unwrap_or(true);
        let settings = self.own.over(&self.collection.inherited());
        let database = self.collection.database().clone();
        let batch_count_max = database
            .client()
            .topology_description()
            .servers
            .values()
            .map(|server| server.max_write_batch_size)
            .min()
            .unwrap_or(cairn_types::limits::WRITE_BATCH_SIZE_MAX as i64)
            .max(1) as usize;
        let batch_bytes_max = cairn_types::limits::MESSAGE_SIZE_MAX_BYTES - COMMAND_OVERHEAD_BYTES;

        let mut documents = Vec::with_capacity(self.documents.len());
        let mut ids = Vec::with_capacity(self.documents.len());
        for document in self.documents {
            let mut document = document?;
            ids.push(ensure_id(&mut document));
            let size = document.to_vec().map_err(Error::serialization)?.len();
            documents.push((document, size));
        }

        let mut inserted_ids = BTreeMap::new();
        let mut failure: Option<Error> = None;
        let mut start = 0;
        let mut pending = documents.into_iter().peekable();
        while pending.peek().is_some() {
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            while let Some((_, size)) = pending.peek() {
                if !batch.is_empty()
                    && (batch.len() >= batch_count_max || batch_bytes + size > batch_bytes_max)
                {
                    break;
                }
                let (document, size) = pending.next().expect("peeked");
                batch_bytes += size;
                batch.push(document);
            }
            let batch_len = batch.len();
            let command = insert_command(self.collection.name(), batch, &self.options, true);
            let reply = write(&database, command, &settings).await?;
            let failed_indexes: Vec<usize> =
                match Error::write_failure_from_reply(&reply.document, start)? {
                    None => Vec::new(),
                    Some((batch_failure, labels)) => {
                        let indexes = batch_failure.write_errors.iter().map(|e| e.index).collect();
                        failure = Some(match failure.take() {
                            None => Error::new(ErrorKind::Write(batch_failure)).with_labels(labels),
                            Some(previous) => merge_failures(previous, batch_failure, labels),
                        });
                        indexes
                    }
                };
            for (index, id) in ids.iter().enumerate().skip(start).take(batch_len) {
                let stopped_before =
                    ordered && failed_indexes.first().is_some_and(|first| index >= *first);
                if !failed_indexes.contains(&index) && !stopped_before {
                    inserted_ids.insert(index, id.clone());
                }
            }
            start += batch_len;
            if ordered && !failed_indexes.is_empty() {
                break;
            }
        }
        match failure {
            None => Ok(InsertManyResult { inserted_ids }),
            Some(error) => {
                let ErrorKind::Write(mut failure) = (*error.kind()).clone() else {
                    unreachable_write()
                };
                failure.inserted_ids = inserted_ids;
                Err(Error::new(ErrorKind::Write(failure)).with_labels(error.labels().to_vec()))
            }
        }
    }
}

fn merge_failures(previous: Error, next: crate::error::WriteFailure, labels: Vec<String>) -> Error {
    let ErrorKind::Write(mut merged) = (*previous.kind()).clone() else {
        unreachable_write()
    };
    merged.write_errors.extend(next.write_errors);
    if next.write_concern_error.is_some() {
        merged.write_concern_error = next.write_concern_error;
    }
    Error::new(ErrorKind::Write(merged))
        .with_labels(previous.labels().iter().cloned().chain(labels))
}

fn unreachable_write() -> ! {
    panic!("insert_many only records write failures")
}

into_future!(InsertMany, InsertManyResult);

// ---------------------------------------------------------------------------------------------
// update, replace, delete

/// An update: operators (`{$set: ...}`) or an aggregation pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateModifications {
    Document(Document),
    Pipeline(Vec<Document>),
}

impl From<Document> for UpdateModifications {
    fn from(document: Document) -> Self {
        UpdateModifications::Document(document)
    }
}

impl From<Vec<Document>> for UpdateModifications {
    fn from(pipeline: Vec<Document>) -> Self {
        UpdateModifications::Pipeline(pipeline)
    }
}

impl UpdateModifications {
    fn to_bson(&self) -> Bson {
        match self {
            UpdateModifications::Document(document) => Bson::Document(document.clone()),
            UpdateModifications::Pipeline(stages) => {
                Bson::Array(stages.iter().cloned().map(Bson::Document).collect())
            }
        }
    }

    /// An update document must hold only operators: a replacement belongs in `replace_one`.
    fn check(&self) -> Result<()> {
        match self {
            UpdateModifications::Document(document)
                if document.is_empty() || document.keys().any(|k| !k.starts_with('$')) =>
            {
                Err(Error::invalid_argument(
                    "an update document must contain only update operators ($set, $inc, ...)",
                ))
            }
            _ => Ok(()),
        }
    }
}

fn check_replacement(document: &Document) -> Result<()> {
    if document
        .keys()
        .next()
        .is_some_and(|key| key.starts_with('$'))
    {
        return Err(Error::invalid_argument(
            "a replacement document must not contain update operators",
        ));
    }
    Ok(())
}

/// Options of `update` and `replace`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateOptions {
    pub upsert: Option<bool>,
    pub array_filters: Option<Vec<Document>>,
    pub hint: Option<Bson>,
    pub collation: Option<Document>,
    pub bypass_document_validation: Option<bool>,
    pub comment: Option<Bson>,
}

/// `update` (one, many, or a replacement); awaits to [`UpdateResult`].
#[must_use = "an operation does nothing until it is awaited"]
pub struct Update {
    collection: Collection<Document>,
    filter: Document,
    update: Result<UpdateModifications>,
    multi: bool,
    options: UpdateOptions,
    own: Inherited,
}

impl Update {
    pub(crate) fn new(
        collection: Collection<Document>,
        filter: Document,
        update: UpdateModifications,
        multi: bool,
    ) -> Update {
        let update = update.check().map(|_| update);
        Update {
            collection,
            filter,
            update,
            multi,
            options: UpdateOptions::default(),
            own: Inherited::default(),
        }
    }

    pub(crate) fn replace(
        collection: Collection<Document>,
        filter: Document,
        replacement: Result<Document>,
    ) -> Update {
        let update = replacement
            .and_then(|r| check_replacement(&r).map(|_| UpdateModifications::Document(r)));
        Update {
            collection,
            filter,
            update,
            multi: false,
            options: UpdateOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! { upsert: bool, array_filters: Vec<Document>, hint: Bson, collation: Document, bypass_document_validation: bool, comment: Bson }
    concern_setters!(write);

    /// The `update` command this sends (without `$db` and the write concern).
    pub fn command(&self) -> Result<Document> {
        let update = self.update.as_ref().map_err(Clone::clone)?;
        let mut statement = doc! {"q": self.filter.clone(), "u": update.to_bson()};
        insert_if(&mut statement, "upsert", self.options.upsert);
        if self.multi {
            statement.insert("multi", true);
        }
        insert_if(
            &mut statement,
            "arrayFilters",
            self.options.array_filters.clone(),
        );
        insert_if(&mut statement, "hint", self.options.hint.clone());
        insert_if(&mut statement, "collation", self.options.collation.clone());
        let mut command =
            doc! {"update": self.collection.name(), "updates": [statement], "ordered": true};
        insert_if(
            &mut command,
            "bypassDocumentValidation",
            self.options.bypass_document_validation,
        );
        insert_if(&mut command, "comment", self.options.comment.clone());
        Ok(command)
    }

    async fn execute(self) -> Result<UpdateResult> {
        let command = self.command()?;
        let settings = self.own.over(&self.collection.inherited());
        let reply = write(self.collection.database(), command, &settings)
            .await?
            .document;
        check_write_reply(&reply, 0, BTreeMap::new())?;
        let upserted_id = reply
            .get_array("upserted")
            .ok()
            .and_then(|upserted| upserted.first())
            .and_then(|entry| entry.as_document())
            .and_then(|entry| entry.get("_id").cloned());
        let matched = count(&reply, "n");
        Ok(UpdateResult {
            matched_count: if upserted_id.is_some() {
                matched.saturating_sub(1)
            } else {
                matched
            },
            modified_count: count(&reply, "nModified"),
            upserted_id,
        })
    }
}

into_future!(Update, UpdateResult);

/// Options of `delete`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteOptions {
    pub hint: Option<Bson>,
    pub collation: Option<Document>,
    pub comment: Option<Bson>,
}

/// `delete` (one or many); awaits to [`DeleteResult`].
#[must_use = "an operation does nothing until it is awaited"]
pub struct Delete {
    collection: Collection<Document>,
    filter: Document,
    many: bool,
    options: DeleteOptions,
    own: Inherited,
}

impl Delete {
    pub(crate) fn new(collection: Collection<Document>, filter: Document, many: bool) -> Delete {
        Delete {
            collection,
            filter,
            many,
            options: DeleteOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! { hint: Bson, collation: Document, comment: Bson }
    concern_setters!(write);

    pub fn command(&self) -> Document {
        let mut statement = doc! {"q": self.filter.clone(), "limit": if self.many { 0 } else { 1 }};
        insert_if(&mut statement, "hint", self.options.hint.clone());
        insert_if(&mut statement, "collation", self.options.collation.clone());
        let mut command =
            doc! {"delete": self.collection.name(), "deletes": [statement], "ordered": true};
        insert_if(&mut command, "comment", self.options.comment.clone());
        command
    }

    async fn execute(self) -> Result<DeleteResult> {
        let settings = self.own.over(&self.collection.inherited());
        let reply = write(self.collection.database(), self.command(), &settings)
            .await?
            .document;
        check_write_reply(&reply, 0, BTreeMap::new())?;
        Ok(DeleteResult {
            deleted_count: count(&reply, "n"),
        })
    }
}

into_future!(Delete, DeleteResult);

// ---------------------------------------------------------------------------------------------
// findAndModify

/// Which version of the document `find_one_and_*` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnDocument {
    #[default]
    Before,
    After,
}

pub(crate) enum Modification {
    Update(UpdateModifications),
    Replace(Result<Document>),
    Delete,
}

/// Options of `findAndModify`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindAndModifyOptions {
    pub sort: Option<Document>,
    pub projection: Option<Document>,
    pub return_document: Option<ReturnDocument>,
    pub upsert: Option<bool>,
    pub array_filters: Option<Vec<Document>>,
    pub max_time: Option<Duration>,
    pub hint: Option<Bson>,
    pub collation: Option<Document>,
    pub bypass_document_validation: Option<bool>,
    pub comment: Option<Bson>,
}

/// `findAndModify`; awaits to the document before or after (`Option<T>`).
#[must_use = "an operation does nothing until it is awaited"]
pub struct FindAndModify<T> {
    collection: Collection<T>,
    filter: Document,
    modification: Modification,
    options: FindAndModifyOptions,
    own: Inherited,
}

impl<T> FindAndModify<T> {
    pub(crate) fn new(
        collection: Collection<T>,
        filter: Document,
        modification: Modification,
    ) -> FindAndModify<T> {
        FindAndModify {
            collection,
            filter,
            modification,
            options: FindAndModifyOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! {
        sort: Document, projection: Document, return_document: ReturnDocument, upsert: bool,
        array_filters: Vec<Document>, max_time: Duration, hint: Bson, collation: Document,
        bypass_document_validation: bool, comment: Bson,
    }
    concern_setters!(write);

    /// The `findAndModify` command this sends (without `$db` and the write concern).
    pub fn command(&self) -> Result<Document> {
        let options = &self.options;
        let mut command =
            doc! {"findAndModify": self.collection.name(), "query": self.filter.clone()};
        insert_if(&mut command, "sort", options.sort.clone());
        insert_if(&mut command, "fields", options.projection.clone());
        match &self.modification {
            Modification::Delete => {
                command.insert("remove", true);
            }
            Modification::Update(update) => {
                update.check()?;
                command.insert("update", update.to_bson());
            }
            Modification::Replace(replacement) => {
                let replacement = replacement.as_ref().map_err(Clone::clone)?;
                check_replacement(replacement)?;
                command.insert("update", replacement.clone());
            }
        }
        if !matches!(self.modification, Modification::Delete) {
            command.insert(
                "new",
                options.return_document == Some(ReturnDocument::After),
            );
            insert_if(&mut command, "upsert", options.upsert);
        }
        insert_if(&mut command, "arrayFilters", options.array_filters.clone());
        insert_if(&mut command, "maxTimeMS", options.max_time.map(millis));
        insert_if(&mut command, "hint", options.hint.clone());
        insert_if(&mut command, "collation", options.collation.clone());
        insert_if(
            &mut command,
            "bypassDocumentValidation",
            options.bypass_document_validation,
        );
        insert_if(&mut command, "comment", options.comment.clone());
        Ok(command)
    }

    async fn execute(self) -> Result<Option<T>>
    where
        T: DeserializeOwned + 'static,
    {
        let command = self.command()?;
        let settings = self.own.over(&self.collection.inherited());
        let reply = write(self.collection.database(), command, &settings)
            .await?
            .document;
        check_write_reply(&reply, 0, BTreeMap::new())?;
        match reply.get("value") {
            Some(Bson::Document(document)) => Ok(Some(deserialize(document.clone())?)),
            _ => Ok(None),
        }
    }
}

into_future!(FindAndModify<T>, Option<T>, T: DeserializeOwned + Send + 'static);

// ---------------------------------------------------------------------------------------------
// aggregate, count, distinct

pub(crate) enum AggregateTarget {
    Collection(String),
    /// `aggregate: 1`.
    Database,
}

/// Options of `aggregate`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregateOptions {
    pub batch_size: Option<u32>,
    pub allow_disk_use: Option<bool>,
    pub max_time: Option<Duration>,
    pub max_await_time: Option<Duration>,
    pub comment: Option<Bson>,
    pub hint: Option<Bson>,
    pub collation: Option<Document>,
    pub bypass_document_validation: Option<bool>,
    /// `let`: variables for the pipeline.
    pub variables: Option<Document>,
}

/// `aggregate`; awaits to a [`Cursor<Document>`].
#[must_use = "an operation does nothing until it is awaited"]
pub struct Aggregate {
    database: Database,
    target: AggregateTarget,
    inherited: Inherited,
    pipeline: Vec<Document>,
    options: AggregateOptions,
    own: Inherited,
}

impl Aggregate {
    pub(crate) fn new(
        database: Database,
        target: AggregateTarget,
        inherited: Inherited,
        pipeline: Vec<Document>,
    ) -> Aggregate {
        Aggregate {
            database,
            target,
            inherited,
            pipeline,
            options: AggregateOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! {
        batch_size: u32, allow_disk_use: bool, max_time: Duration, max_await_time: Duration,
        comment: Bson, hint: Bson, collation: Document, bypass_document_validation: bool,
        variables: Document,
    }
    concern_setters!(read);
    concern_setters!(write);

    /// A pipeline ending in `$out` or `$merge` writes, so it runs on the primary with the write
    /// concern.
    fn writes(&self) -> bool {
        self.pipeline
            .last()
            .is_some_and(|stage| stage.contains_key("$out") || stage.contains_key("$merge"))
    }

    /// The `aggregate` command this sends (without `$db` and the concerns).
    pub fn command(&self) -> Document {
        let options = &self.options;
        let target = match &self.target {
            AggregateTarget::Collection(name) => Bson::String(name.clone()),
            AggregateTarget::Database => Bson::Int32(1),
        };
        let mut cursor = Document::new();
        insert_if(&mut cursor, "batchSize", options.batch_size.map(i64::from));
        let mut command =
            doc! {"aggregate": target, "pipeline": self.pipeline.clone(), "cursor": cursor};
        insert_if(&mut command, "allowDiskUse", options.allow_disk_use);
        insert_if(&mut command, "maxTimeMS", options.max_time.map(millis));
        insert_if(&mut command, "comment", options.comment.clone());
        insert_if(&mut command, "hint", options.hint.clone());
        insert_if(&mut command, "collation", options.collation.clone());
        insert_if(
            &mut command,
            "bypassDocumentValidation",
            options.bypass_document_validation,
        );
        insert_if(&mut command, "let", options.variables.clone());
        command
    }

    /// `explain` of this pipeline.
    pub async fn explain(self, verbosity: &str) -> Result<Document> {
        let mut inner = self.command();
        inner.remove("cursor");
        let command = doc! {"explain": inner, "verbosity": verbosity};
        let settings = self.own.over(&self.inherited);
        Ok(read(&self.database, command, &settings).await?.document)
    }

    async fn execute(self) -> Result<Cursor<Document>> {
        let settings = self.own.over(&self.inherited);
        let reply = if self.writes() {
            let command = with_read_concern(self.command(), &settings);
            write(&self.database, command, &settings).await?
        } else {
            read(&self.database, self.command(), &settings).await?
        };
        Cursor::from_reply(
            self.database.client().clone(),
            reply.address,
            reply.document,
            self.options.batch_size,
            self.options.max_await_time,
        )
    }
}

into_future!(Aggregate, Cursor<Document>);

/// Options of `count_documents`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountOptions {
    pub skip: Option<u64>,
    pub limit: Option<u64>,
    pub hint: Option<Bson>,
    pub max_time: Option<Duration>,
    pub collation: Option<Document>,
    pub comment: Option<Bson>,
}

/// `count_documents`: `aggregate` with `$match`, `$skip`, `$limit` and `$group`; awaits to u64.
#[must_use = "an operation does nothing until it is awaited"]
pub struct CountDocuments {
    collection: Collection<Document>,
    filter: Document,
    options: CountOptions,
    own: Inherited,
}

impl CountDocuments {
    pub(crate) fn new(collection: Collection<Document>, filter: Document) -> CountDocuments {
        CountDocuments {
            collection,
            filter,
            options: CountOptions::default(),
            own: Inherited::default(),
        }
    }

    setters! { skip: u64, limit: u64, hint: Bson, max_time: Duration, collation: Document, comment: Bson }
    concern_setters!(read);

    pub fn pipeline(&self) -> Vec<Document> {
        let mut pipeline = vec![doc! {"$match": self.filter.clone()}];
        if let Some(skip) = self.options.skip {
            pipeline.push(doc! {"$skip": skip as i64});
        }
        if let Some(limit) = self.options.limit {
            pipeline.push(doc! {"$limit": limit as i64});
        }
        pipeline.push(doc! {"$group": {"_id": 1, "n": {"$sum": 1}}});
        pipeline
    }

    async fn execute(self) -> Result<u64> {
        let database = self.collection.database().clone();
        let mut aggregate = Aggregate::new(
            database,
            AggregateTarget::Collection(self.collection.name().to_string()),
            self.own.over(&self.collection.inherited()),
            self.pipeline(),
        );
        aggregate.options.hint = self.options.hint;
        aggregate.options.max_time = self.options.max_time;
        aggregate.options.collation = self.options.collation;
        aggregate.options.comment = self.options.comment;
        let mut cursor = aggregate.execute().await?;
        match cursor.next_document().await.transpose()? {
            Some(result) => Ok(result.get("n").and_then(bson_as_i64).unwrap_or(0).max(0) as u64),
            None => Ok(0),
        }
    }
}

into_future!(CountDocuments, u64);

/// `count` without a query; awaits to u64.
#[must_use = "an operation does nothing until it is awaited"]
pub struct EstimatedDocumentCount {
    collection: Collection<Document>,
    max_time: Option<Duration>,
    own: Inherited,
}

impl EstimatedDocumentCount {
    pub(crate) fn new(collection: Collection<Document>) -> EstimatedDocumentCount {
        EstimatedDocumentCount {
            collection,
            max_time: None,
            own: Inherited::default(),
        }
    }

    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.max_time = Some(max_time);
        self
    }
    concern_setters!(read);

    async fn execute(self) -> Result<u64> {
        let mut command = doc! {"count": self.collection.name()};
        insert_if(&mut command, "maxTimeMS", self.max_time.map(millis));
        let settings = self.own.over(&self.collection.inherited());
        let reply = read(self.collection.database(), command, &settings).await?;
        Ok(count(&reply.document, "n"))
    }
}

into_future!(EstimatedDocumentCount, u64);

/// `distinct`; awaits to the values.
#[must_use = "an operation does nothing until it is awaited"]
pub struct Distinct {
    collection: Collection<Document>,
    key: String,
    filter: Document,
    max_time: Option<Duration>,
    collation: Option<Document>,
    own: Inherited,
}

impl Distinct {
    pub(crate) fn new(collection: Collection<Document>, key: &str, filter: Document) -> Distinct {
        Distinct {
            collection,
            key: key.to_string(),
            filter,
            max_time: None,
            collation: None,
            own: Inherited::default(),
        }
    }

    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.max_time = Some(max_time);
        self
    }
    pub fn collation(mut self, collation: Document) -> Self {
        self.collation = Some(collation);
        self
    }
    concern_setters!(read);

    async fn execute(self) -> Result<Vec<Bson>> {
        let mut command =
            doc! {"distinct": self.collection.name(), "key": self.key, "query": self.filter};
        insert_if(&mut command, "maxTimeMS", self.max_time.map(millis));
        insert_if(&mut command, "collation", self.collation);
        let settings = self.own.over(&self.collection.inherited());
        let reply = read(self.collection.database(), command, &settings).await?;
        match reply.document.get_array("values") {
            Ok(values) => Ok(values.clone()),
            Err(_) => Err(Error::invalid_reply("distinct reply without values")),
        }
    }
}

into_future!(Distinct, Vec<Bson>);

// ---------------------------------------------------------------------------------------------
// indexes and DDL

/// `createIndexes`; awaits to [`CreateIndexesResult`] (see [`CreateIndexes::one`] for one index).
#[must_use = "an operation does nothing until it is awaited"]
pub struct CreateIndexes {
    collection: Collection<Document>,
    indexes: Vec<IndexModel>,
    max_time: Option<Duration>,
    own: Inherited,
    single: bool,
}

impl CreateIndexes {
    pub(crate) fn new(
        collection: Collection<Document>,
        indexes: Vec<IndexModel>,
        single: bool,
    ) -> CreateIndexes {
        CreateIndexes {
            collection,
            indexes,
            max_time: None,
            own: Inherited::default(),
            single,
        }
    }

    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.max_time = Some(max_time);
        self
    }
    concern_setters!(write);

    pub fn command(&self) -> Document {
        let indexes: Vec<Document> = self.indexes.iter().map(IndexModel::to_document).collect();
        let mut command = doc! {"createIndexes": self.collection.name(), "indexes": indexes};
        insert_if(&mut command, "maxTimeMS", self.max_time.map(millis));
        command
    }

    /// For `create_index`: awaits to the one index name.
    pub async fn one(self) -> Result<CreateIndexResult> {
        debug_assert!(self.single);
        let mut result = self.execute().await?;
        Ok(CreateIndexResult {
            index_name: result.index_names.pop().unwrap_or_default(),
        })
    }

    async fn execute(self) -> Result<CreateIndexesResult> {
        if self.indexes.is_empty() {
            return Err(Error::invalid_argument(
                "create_indexes needs at least one index",
            ));
        }
        let command = self.command();
        let index_names = self
            .indexes
            .iter()
            .map(|index| {
                index
                    .to_document()
                    .get_str("name")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let settings = self.own.over(&self.collection.inherited());
        let reply = write(self.collection.database(), command, &settings).await?;
        check_write_reply(&reply.document, 0, BTreeMap::new())?;
        Ok(CreateIndexesResult { index_names })
    }
}

into_future!(CreateIndexes, CreateIndexesResult);

/// `listIndexes`; awaits to a cursor over index specifications.
#[must_use = "an operation does nothing until it is awaited"]
pub struct ListIndexes {
    collection: Collection<Document>,
    batch_size: Option<u32>,
}

impl ListIndexes {
    pub(crate) fn new(collection: Collection<Document>) -> ListIndexes {
        ListIndexes {
            collection,
            batch_size: None,
        }
    }

    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Only the names.
    pub async fn names(self) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let indexes: Vec<Document> = self.execute().await?.try_collect().await?;
        Ok(indexes
            .into_iter()
            .filter_map(|index| index.get_str("name").ok().map(str::to_string))
            .collect())
    }

    async fn execute(self) -> Result<Cursor<Document>> {
        let mut cursor = Document::new();
        insert_if(&mut cursor, "batchSize", self.batch_size.map(i64::from));
        let command = doc! {"listIndexes": self.collection.name(), "cursor": cursor};
        let database = self.collection.database().clone();
        let reply = database
            .client()
            .core()
            .read(database.name(), command, None)
            .await?;
        Cursor::from_reply(
            database.client().clone(),
            reply.address,
            reply.document,
            self.batch_size,
            None,
        )
    }
}

into_future!(ListIndexes, Cursor<Document>);

/// `dropIndexes`.
#[must_use = "an operation does nothing until it is awaited"]
pub struct DropIndexes {
    collection: Collection<Document>,
    index: Bson,
    own: Inherited,
}

impl DropIndexes {
    pub(crate) fn new(collection: Collection<Document>, index: Bson) -> DropIndexes {
        DropIndexes {
            collection,
            index,
            own: Inherited::default(),
        }
    }
    concern_setters!(write);

    async fn execute(self) -> Result<()> {
        let command = doc! {"dropIndexes": self.collection.name(), "index": self.index};
        let settings = self.own.over(&self.collection.inherited());
        write(self.collection.database(), command, &settings)
            .await
            .map(|_| ())
    }
}

into_future!(DropIndexes, ());

/// `drop` of a collection.
#[must_use = "an operation does nothing until it is awaited"]
pub struct DropCollection {
    collection: Collection<Document>,
    own: Inherited,
}

impl DropCollection {
    pub(crate) fn new(collection: Collection<Document>) -> DropCollection {
        DropCollection {
            collection,
            own: Inherited::default(),
        }
    }
    concern_setters!(write);

    async fn execute(self) -> Result<()> {
        let command = doc! {"drop": self.collection.name()};
        let settings = self.own.over(&self.collection.inherited());
        match write(self.collection.database(), command, &settings).await {
            Err(error) if error.code() == Some(ErrorCode::NamespaceNotFound.code()) => Ok(()),
            result => result.map(|_| ()),
        }
    }
}

into_future!(DropCollection, ());

/// `dropDatabase`.
#[must_use = "an operation does nothing until it is awaited"]
pub struct DropDatabase {
    database: Database,
    own: Inherited,
}

impl DropDatabase {
    pub(crate) fn new(database: Database) -> DropDatabase {
        DropDatabase {
            database,
            own: Inherited::default(),
        }
    }
    concern_setters!(write);

    async fn execute(self) -> Result<()> {
        let settings = self.own.over(&self.database.inherited());
        write(&self.database, doc! {"dropDatabase": 1}, &settings)
            .await
            .map(|_| ())
    }
}

into_future!(DropDatabase, ());

/// `create`.
#[must_use = "an operation does nothing until it is awaited"]
pub struct CreateCollection {
    database: Database,
    name: String,
    options: Document,
    own: Inherited,
}

impl CreateCollection {
    pub(crate) fn new(database: Database, name: &str) -> CreateCollection {
        CreateCollection {
            database,
            name: name.to_string(),
            options: Document::new(),
            own: Inherited::default(),
        }
    }

    /// Options of `create` as a document (`{capped: true, size: 4096}`, ...).
    pub fn options(mut self, options: Document) -> Self {
        self.options = options;
        self
    }
    concern_setters!(write);

    async fn execute(self) -> Result<()> {
        let mut command = doc! {"create": self.name};
        command.extend(self.options);
        let settings = self.own.over(&self.database.inherited());
        write(&self.database, command, &settings).await.map(|_| ())
    }
}

into_future!(CreateCollection, ());

/// `listCollections`; awaits to a cursor over collection descriptions.
#[must_use = "an operation does nothing until it is awaited"]
pub struct ListCollections {
    database: Database,
    filter: Option<Document>,
    name_only: bool,
    batch_size: Option<u32>,
}

impl ListCollections {
    pub(crate) fn new(database: Database) -> ListCollections {
        ListCollections {
            database,
            filter: None,
            name_only: false,
            batch_size: None,
        }
    }

    pub fn filter(mut self, filter: Document) -> Self {
        self.filter = Some(filter);
        self
    }
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Only the names (sends `nameOnly: true`).
    pub async fn names(mut self) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        self.name_only = true;
        let collections: Vec<Document> = self.execute().await?.try_collect().await?;
        Ok(collections
            .into_iter()
            .filter_map(|c| c.get_str("name").ok().map(str::to_string))
            .collect())
    }

    async fn execute(self) -> Result<Cursor<Document>> {
        let mut cursor = Document::new();
        insert_if(&mut cursor, "batchSize", self.batch_size.map(i64::from));
        let mut command = doc! {"listCollections": 1, "cursor": cursor};
        insert_if(&mut command, "filter", self.filter);
        if self.name_only {
            command.insert("nameOnly", true);
        }
        let reply = self
            .database
            .client()
            .core()
            .read(self.database.name(), command, None)
            .await?;
        Cursor::from_reply(
            self.database.client().clone(),
            reply.address,
            reply.document,
            self.batch_size,
            None,
        )
    }
}

into_future!(ListCollections, Cursor<Document>);

/// `listDatabases`; awaits to the databases.
#[must_use = "an operation does nothing until it is awaited"]
pub struct ListDatabases {
    client: Client,
    filter: Option<Document>,
    name_only: bool,
}

impl ListDatabases {
    pub(crate) fn new(client: Client) -> ListDatabases {
        ListDatabases {
            client,
            filter: None,
            name_only: false,
        }
    }

    pub fn filter(mut self, filter: Document) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Only the names (sends `nameOnly: true`).
    pub async fn names(mut self) -> Result<Vec<String>> {
        self.name_only = true;
        Ok(self
            .execute()
            .await?
            .into_iter()
            .map(|database| database.name)
            .collect())
    }

    async fn execute(self) -> Result<Vec<DatabaseSpecification>> {
        let mut command = doc! {"listDatabases": 1};
        insert_if(&mut command, "filter", self.filter);
        if self.name_only {
            command.insert("nameOnly", true);
        }
        let reply = self
            .client
            .core()
            .read("admin", command, None)
            .await?
            .document;
        let databases = reply
            .get_array("databases")
            .map_err(|_| Error::invalid_reply("listDatabases reply without databases"))?;
        databases
            .iter()
            .map(|entry| {
                let entry = entry
                    .as_document()
                    .ok_or_else(|| Error::invalid_reply("databases entry is not a document"))?;
                Ok(DatabaseSpecification {
                    name: entry
                        .get_str("name")
                        .map_err(|_| Error::invalid_reply("databases entry without a name"))?
                        .to_string(),
                    size_on_disk: count(entry, "sizeOnDisk"),
                    empty: entry.get_bool("empty").unwrap_or(false),
                })
            })
            .collect()
    }
}

into_future!(ListDatabases, Vec<DatabaseSpecification>);

// ---------------------------------------------------------------------------------------------
// commands

/// A command run as is; awaits to the reply document.
#[must_use = "an operation does nothing until it is awaited"]
pub struct RunCommand {
    database: Database,
    command: Document,
    read_preference: Option<ReadPreference>,
}

impl RunCommand {
    pub(crate) fn new(database: Database, command: Document) -> RunCommand {
        RunCommand {
            database,
            command,
            read_preference: None,
        }
    }

    /// Run on a server chosen by this read preference (the default is the primary).
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = Some(read_preference);
        self
    }

    async fn execute(self) -> Result<Document> {
        let core = self.database.client().core();
        let reply = match &self.read_preference {
            Some(preference) => {
                core.read(self.database.name(), self.command, Some(preference))
                    .await?
            }
            None => core.write(self.database.name(), self.command).await?,
        };
        Ok(reply.document)
    }
}

into_future!(RunCommand, Document);

/// A command that replies with a cursor; awaits to the cursor.
#[must_use = "an operation does nothing until it is awaited"]
pub struct RunCursorCommand {
    database: Database,
    command: Document,
    read_preference: Option<ReadPreference>,
    batch_size: Option<u32>,
    max_await_time: Option<Duration>,
}

impl RunCursorCommand {
    pub(crate) fn new(database: Database, command: Document) -> RunCursorCommand {
        RunCursorCommand {
            database,
            command,
            read_preference: None,
            batch_size: None,
            max_await_time: None,
        }
    }

    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = Some(read_preference);
        self
    }

    /// `batchSize` of the `getMore`s (the first batch's size is part of the command).
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    pub fn max_await_time(mut self, max_await_time: Duration) -> Self {
        self.max_await_time = Some(max_await_time);
        self
    }

    async fn execute(self) -> Result<Cursor<Document>> {
        let core = self.database.client().core();
        let reply = match &self.read_preference {
            Some(preference) => {
                core.read(self.database.name(), self.command, Some(preference))
                    .await?
            }
            None => core.write(self.database.name(), self.command).await?,
        };
        Cursor::from_reply(
            self.database.client().clone(),
            reply.address,
            reply.document,
            self.batch_size,
            self.max_await_time,
        )
    }
}

into_future!(RunCursorCommand, Cursor<Document>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_id_puts_a_generated_id_first_and_keeps_a_given_one() {
        let mut document = doc! {"a": 1};
        let id = ensure_id(&mut document);
        assert!(matches!(id, Bson::ObjectId(_)));
        assert_eq!(document.keys().next().map(String::as_str), Some("_id"));
        let mut given = doc! {"a": 1, "_id": 7};
        assert_eq!(ensure_id(&mut given), Bson::Int32(7));
        assert_eq!(given, doc! {"a": 1, "_id": 7});
    }

    #[test]
    fn update_documents_must_be_operators_and_replacements_must_not() {
        assert!(
            UpdateModifications::from(doc! {"$set": {"a": 1}})
                .check()
                .is_ok()
        );
        assert!(UpdateModifications::from(doc! {"a": 1}).check().is_err());
        assert!(UpdateModifications::from(doc! {}).check().is_err());
        assert!(
            UpdateModifications::from(vec![doc! {"$set": {"a": 1}}])
                .check()
                .is_ok()
        );
        assert!(check_replacement(&doc! {"a": 1}).is_ok());
        assert!(check_replacement(&doc! {"$set": {"a": 1}}).is_err());
    }

    #[test]
    fn index_names_follow_mongodb() {
        assert_eq!(
            IndexModel::default_name(&doc! {"a": 1, "b": -1}),
            "a_1_b_-1"
        );
        assert_eq!(
            IndexModel::default_name(&doc! {"loc": "2dsphere"}),
            "loc_2dsphere"
        );
        let model = IndexModel::new(doc! {"a": 1}).with_options(doc! {"unique": true});
        assert_eq!(
            model.to_document(),
            doc! {"key": {"a": 1}, "name": "a_1", "unique": true}
        );
        let named = IndexModel::new(doc! {"a": 1}).with_options(doc! {"name": "mine"});
        assert_eq!(named.to_document(), doc! {"key": {"a": 1}, "name": "mine"});
    }
}
