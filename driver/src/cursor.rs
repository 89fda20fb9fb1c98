//! Cursors: a `futures::Stream` over the documents of a server cursor.
//!
//! A cursor starts with the first batch of a `find`, `aggregate`, `listIndexes`, ... reply and
//! fetches the next batches with `getMore` from the same server as it is drained. When it is
//! dropped before the server cursor is exhausted (`id` != 0), it sends `killCursors` in the
//! background on the client's runtime, so abandoned cursors do not pin server resources until
//! their timeout.

use crate::client::Client;
use crate::error::{Error, Result, bson_as_i64};
use crate::execute::millis;
use crate::options::ServerAddress;
use bson::{Bson, Document, doc};
use cairn_types::Namespace;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type Batch = Result<(VecDeque<Document>, i64)>;

/// A stream of `T` read from a server cursor.
pub struct Cursor<T> {
    client: Client,
    address: ServerAddress,
    namespace: Namespace,
    id: i64,
    buffer: VecDeque<Document>,
    batch_size: Option<u32>,
    max_await_time: Option<Duration>,
    pending: Option<BoxFuture<'static, Batch>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Cursor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("namespace", &self.namespace.to_string())
            .field("id", &self.id)
            .field("address", &self.address)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl<T> Cursor<T> {
    /// A cursor from a reply with `cursor: {firstBatch, id, ns}`.
    pub(crate) fn from_reply(
        client: Client,
        address: ServerAddress,
        reply: Document,
        batch_size: Option<u32>,
        max_await_time: Option<Duration>,
    ) -> Result<Cursor<T>> {
        let (batch, id, namespace) = parse_batch(reply, "firstBatch")?;
        Ok(Cursor {
            client,
            address,
            namespace,
            id,
            buffer: batch,
            batch_size,
            max_await_time,
            pending: None,
            _type: PhantomData,
        })
    }

    /// The server's cursor id; 0 once the server has no more documents.
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The server the cursor lives on.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// Documents already fetched and not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// No document left here or on the server.
    pub fn is_exhausted(&self) -> bool {
        self.buffer.is_empty() && self.id == 0 && self.pending.is_none()
    }

    /// Kills the server cursor now and waits for the reply (dropping a cursor kills it in the
    /// background instead).
    pub async fn close(mut self) -> Result<()> {
        if self.id == 0 {
            return Ok(());
        }
        let command = doc! {"killCursors": self.namespace.coll.clone(), "cursors": [self.id]};
        self.id = 0;
        self.buffer.clear();
        self.client
            .core()
            .run_on(&self.address, &self.namespace.db, command, None)
            .await
            .map(|_| ())
    }

    /// The same cursor, yielding another type.
    pub fn with_type<U>(mut self) -> Cursor<U> {
        let cursor = Cursor {
            client: self.client.clone(),
            address: self.address.clone(),
            namespace: self.namespace.clone(),
            id: self.id,
            buffer: std::mem::take(&mut self.buffer),
            batch_size: self.batch_size,
            max_await_time: self.max_await_time,
            pending: self.pending.take(),
            _type: PhantomData,
        };
        // `self` must not kill the server cursor that now belongs to the new one.
        self.id = 0;
        cursor
    }

    fn get_more(&self) -> BoxFuture<'static, Batch> {
        let mut command = doc! {"getMore": self.id, "collection": self.namespace.coll.clone()};
        if let Some(batch_size) = self.batch_size {
            command.insert("batchSize", i64::from(batch_size));
        }
        if let Some(max_await_time) = self.max_await_time {
            command.insert("maxTimeMS", millis(max_await_time));
        }
        let client = self.client.clone();
        let address = self.address.clone();
        let db = self.namespace.db.clone();
        async move {
            let reply = client.core().run_on(&address, &db, command, None).await?;
            let (batch, id, _) = parse_batch(reply, "nextBatch")?;
            Ok((batch, id))
        }
        .boxed()
    }
}

impl<T: DeserializeOwned + 'static> Cursor<T> {
    /// The next document, or `None` at the end.
    pub async fn next_document(&mut self) -> Option<Result<T>> {
        futures::StreamExt::next(self).await
    }
}

impl<T: DeserializeOwned + 'static> Stream for Cursor<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        loop {
            if let Some(document) = this.buffer.pop_front() {
                return Poll::Ready(Some(crate::action::deserialize(document)));
            }
            if this.pending.is_none() {
                if this.id == 0 {
                    return Poll::Ready(None);
                }
                this.pending = Some(this.get_more());
            }
            let pending = this.pending.as_mut().expect("a getMore is pending");
            match pending.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => {
                    this.pending = None;
                    match outcome {
                        Ok((batch, id)) => {
                            this.buffer = batch;
                            this.id = id;
                        }
                        Err(error) => {
                            // The server cursor is gone or unreachable: end after this error.
                            this.id = 0;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                }
            }
        }
    }
}

impl<T> Drop for Cursor<T> {
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        let command = doc! {"killCursors": self.namespace.coll.clone(), "cursors": [self.id]};
        let client = self.client.clone();
        let address = self.address.clone();
        let db = self.namespace.db.clone();
        let runtime = client.core().runtime.clone();
        // A runtime that is shutting down drops the task; the server times the cursor out.
        runtime.spawn(async move {
            if let Err(error) = client.core().run_on(&address, &db, command, None).await {
                tracing::debug!(%error, "killCursors failed");
            }
        });
    }
}

/// `(batch, id, namespace)` of `{cursor: {<field>: [...], id, ns}}`.
fn parse_batch(mut reply: Document, field: &str) -> Result<(VecDeque<Document>, i64, Namespace)> {
    // The reply is taken apart, not copied: a batch can be large.
    let mut cursor = match reply.remove("cursor") {
        Some(Bson::Document(cursor)) => cursor,
        _ => {
            return Err(Error::invalid_reply(format!(
                "reply without a cursor document: {reply}"
            )));
        }
    };
    let id = cursor
        .get("id")
        .and_then(bson_as_i64)
        .ok_or_else(|| Error::invalid_reply("cursor without a numeric id"))?;
    let ns = cursor
        .get_str("ns")
        .map_err(|_| Error::invalid_reply("cursor without ns"))?;
    let namespace = Namespace::parse(ns).map_err(|e| Error::invalid_reply(e.message))?;
    let batch = match cursor.remove(field) {
        Some(Bson::Array(items)) => items,
        _ => return Err(Error::invalid_reply(format!("cursor without {field}"))),
    };
    let batch = batch
        .into_iter()
        .map(|item| match item {
            Bson::Document(document) => Ok(document),
            other => Err(Error::invalid_reply(format!(
                "{field} holds a non-document: {other}"
            ))),
        })
        .collect::<Result<VecDeque<_>>>()?;
    Ok((batch, id, namespace))
}
