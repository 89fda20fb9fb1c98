//! [`Collection<T>`]: a typed handle on one collection; every operation returns a builder in
//! [`crate::action`] that is configured with its option methods and then awaited.

use crate::action::*;
use crate::concern::{Inherited, ReadConcern, ReadPreference, WriteConcern};
use crate::database::Database;
use bson::{Bson, Document};
use cairn_types::Namespace;
use serde::Serialize;
use std::borrow::Borrow;
use std::marker::PhantomData;

/// A collection whose documents are read and written as `T` (serde), `Document` by default.
pub struct Collection<T = Document> {
    database: Database,
    name: String,
    /// Settings of this collection only (unset fields come from the database).
    own: Inherited,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Collection<T> {
    fn clone(&self) -> Self {
        Collection {
            database: self.database.clone(),
            name: self.name.clone(),
            own: self.own.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Collection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collection({}.{})", self.database.name(), self.name)
    }
}

/// An index to create: its key pattern and its options (`name`, `unique`, `sparse`,
/// `partialFilterExpression`, `expireAfterSeconds`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexModel {
    pub keys: Document,
    pub options: Document,
}

impl IndexModel {
    pub fn new(keys: Document) -> IndexModel {
        IndexModel {
            keys,
            options: Document::new(),
        }
    }

    pub fn with_options(mut self, options: Document) -> IndexModel {
        self.options = options;
        self
    }

    /// The name MongoDB gives an index without one: `a_1_b_-1`.
    pub fn default_name(keys: &Document) -> String {
        keys.iter()
            .map(|(key, value)| {
                let value = match value {
                    Bson::String(text) => text.clone(),
                    Bson::Int32(n) => n.to_string(),
                    Bson::Int64(n) => n.to_string(),
                    Bson::Double(n) if n.fract() == 0.0 => format!("{}", *n as i64),
                    other => other.to_string(),
                };
                format!("{key}_{value}")
            })
            .collect::<Vec<_>>()
            .join("_")
    }

    /// The entry of `createIndexes.indexes`: `{key, name, ...options}`.
    pub fn to_document(&self) -> Document {
        let mut document = bson::doc! {"key": self.keys.clone()};
        let name = match self.options.get_str("name") {
            Ok(name) => name.to_string(),
            Err(_) => IndexModel::default_name(&self.keys),
        };
        document.insert("name", name);
        for (key, value) in &self.options {
            if key != "name" {
                document.insert(key.clone(), value.clone());
            }
        }
        document
    }
}

impl<T> Collection<T> {
    pub(crate) fn new(database: Database, name: &str, own: Inherited) -> Collection<T> {
        Collection {
            database,
            name: name.to_string(),
            own,
            _type: PhantomData,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> Namespace {
        Namespace::new(self.database.name(), self.name.clone())
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The effective settings: this collection's, else the database's, else the client's.
    pub(crate) fn inherited(&self) -> Inherited {
        self.own.over(&self.database.inherited())
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

    /// The same collection read and written as `U`.
    pub fn clone_with_type<U>(&self) -> Collection<U> {
        Collection::new(self.database.clone(), &self.name, self.own.clone())
    }

    /// The same collection with other settings (unset fields still inherited).
    pub fn with_options(&self, own: Inherited) -> Collection<T> {
        Collection::new(self.database.clone(), &self.name, own.over(&self.own))
    }

    /// `find`: a cursor over the matching documents.
    pub fn find(&self, filter: Document) -> Find<T> {
        Find::new(self.clone(), filter)
    }

    /// `find` with `limit: 1, singleBatch: true`.
    pub fn find_one(&self, filter: Document) -> FindOne<T> {
        FindOne::new(self.clone(), filter)
    }

    /// `insert` of one document; an `_id` is generated when it has none.
    pub fn insert_one(&self, document: impl Borrow<T>) -> InsertOne
    where
        T: Serialize,
    {
        InsertOne::new(self.clone_with_type(), to_document(document.borrow()))
    }

    /// `insert` of many documents, split into batches that fit in a message.
    pub fn insert_many(&self, documents: impl IntoIterator<Item = impl Borrow<T>>) -> InsertMany
    where
        T: Serialize,
    {
        let documents = documents
            .into_iter()
            .map(|d| to_document(d.borrow()))
            .collect();
        InsertMany::new(self.clone_with_type(), documents)
    }

    /// `update` of the first matching document; `update` is a document of update operators or
    /// an aggregation pipeline (`Vec<Document>`).
    pub fn update_one(&self, filter: Document, update: impl Into<UpdateModifications>) -> Update {
        Update::new(self.clone_with_type(), filter, update.into(), false)
    }

    /// `update` of every matching document (`multi: true`).
    pub fn update_many(&self, filter: Document, update: impl Into<UpdateModifications>) -> Update {
        Update::new(self.clone_with_type(), filter, update.into(), true)
    }

    /// `update` that replaces the first matching document.
    pub fn replace_one(&self, filter: Document, replacement: impl Borrow<T>) -> Update
    where
        T: Serialize,
    {
        Update::replace(
            self.clone_with_type(),
            filter,
            to_document(replacement.borrow()),
        )
    }

    pub fn delete_one(&self, filter: Document) -> Delete {
        Delete::new(self.clone_with_type(), filter, false)
    }

    pub fn delete_many(&self, filter: Document) -> Delete {
        Delete::new(self.clone_with_type(), filter, true)
    }

    /// `findAndModify` with an update; returns the document before (default) or after.
    pub fn find_one_and_update(
        &self,
        filter: Document,
        update: impl Into<UpdateModifications>,
    ) -> FindAndModify<T> {
        FindAndModify::new(self.clone(), filter, Modification::Update(update.into()))
    }

    /// `findAndModify` with a replacement.
    pub fn find_one_and_replace(
        &self,
        filter: Document,
        replacement: impl Borrow<T>,
    ) -> FindAndModify<T>
    where
        T: Serialize,
    {
        FindAndModify::new(
            self.clone(),
            filter,
            Modification::Replace(to_document(replacement.borrow())),
        )
    }

    /// `findAndModify` with `remove: true`; returns the removed document.
    pub fn find_one_and_delete(&self, filter: Document) -> FindAndModify<T> {
        FindAndModify::new(self.clone(), filter, Modification::Delete)
    }

    /// `aggregate`: a cursor over the pipeline's output (`Cursor::with_type` for typed output).
    pub fn aggregate(&self, pipeline: impl IntoIterator<Item = Document>) -> Aggregate {
        Aggregate::new(
            self.database.clone(),
            AggregateTarget::Collection(self.name.clone()),
            self.inherited(),
            pipeline.into_iter().collect(),
        )
    }

    /// The number of matching documents (an aggregation with `$match` and `$group`).
    pub fn count_documents(&self, filter: Document) -> CountDocuments {
        CountDocuments::new(self.clone_with_type(), filter)
    }

    /// The collection's document count from its metadata (`count` without a query).
    pub fn estimated_document_count(&self) -> EstimatedDocumentCount {
        EstimatedDocumentCount::new(self.clone_with_type())
    }

    /// `distinct` values of `key` among the matching documents.
    pub fn distinct(&self, key: &str, filter: Document) -> Distinct {
        Distinct::new(self.clone_with_type(), key, filter)
    }

    pub fn create_index(&self, index: IndexModel) -> CreateIndexes {
        CreateIndexes::new(self.clone_with_type(), vec![index], true)
    }

    pub fn create_indexes(&self, indexes: impl IntoIterator<Item = IndexModel>) -> CreateIndexes {
        CreateIndexes::new(self.clone_with_type(), indexes.into_iter().collect(), false)
    }

    /// `listIndexes`: a cursor over the index specifications.
    pub fn list_indexes(&self) -> ListIndexes {
        ListIndexes::new(self.clone_with_type())
    }

    /// `dropIndexes` of one index, by name.
    pub fn drop_index(&self, name: &str) -> DropIndexes {
        DropIndexes::new(self.clone_with_type(), Bson::String(name.to_string()))
    }

    /// `dropIndexes` of every index but `_id_`.
    pub fn drop_indexes(&self) -> DropIndexes {
        DropIndexes::new(self.clone_with_type(), Bson::String("*".into()))
    }

    /// `drop`; dropping a collection that does not exist is not an error.
    pub fn drop(&self) -> DropCollection {
        DropCollection::new(self.clone_with_type())
    }
}

fn to_document<T: Serialize>(value: &T) -> crate::Result<Document> {
    bson::serialize_to_document(value).map_err(crate::Error::serialization)
}
