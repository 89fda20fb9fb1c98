//! The driver's typed error.
//!
//! [`Error`] is a kind plus the error labels the server attached (`errorLabels`, for example
//! `RetryableWriteError` or `TransientTransactionError`). The kinds separate what a caller reacts
//! to differently: a command the server refused ([`ErrorKind::Command`], with MongoDB's code and
//! code name), writes that failed inside an acknowledged write command ([`ErrorKind::Write`], with
//! every write error and the write concern error), a transport failure, a server selection
//! timeout, and client-side misuse (bad connection string, bad argument, a document serde could
//! not convert).

use crate::options::ServerAddress;
use bson::{Bson, Document};
use cairn_types::ErrorCode;
use std::collections::BTreeMap;
use std::fmt;

/// Result with the driver's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the driver or from the server.
#[derive(Clone, Debug)]
pub struct Error {
    kind: Box<ErrorKind>,
    labels: Vec<String>,
}

/// What went wrong.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server answered `{ok: 0, errmsg, code, codeName}`.
    Command(CommandError),
    /// The write command ran, but some of its writes failed or its write concern was not met.
    Write(WriteFailure),
    /// The server could not be reached, or the call failed in transit.
    Network {
        address: Option<ServerAddress>,
        /// The gRPC status code of the failed call.
        status: tonic::Code,
        message: String,
    },
    /// No server matched the selection criteria before `serverSelectionTimeoutMS`.
    ServerSelection { message: String },
    /// The reply was not a well-formed reply document.
    InvalidReply { message: String },
    /// A value could not be converted to or from BSON.
    Serialization { message: String },
    /// The connection string is malformed or names an option with a bad value.
    InvalidUri { message: String },
    /// An argument was refused before anything was sent (a document too large, say).
    InvalidArgument { message: String },
}

/// A command the server refused.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandError {
    pub code: i32,
    pub code_name: String,
    pub message: String,
    /// The whole reply, for fields this type does not name (`errInfo`, `keyValue`, ...).
    pub reply: Document,
}

/// One failed write of a write command (an entry of `writeErrors`).
#[derive(Clone, Debug, PartialEq)]
pub struct WriteError {
    /// Index of the failed write in the operation that was called (for `insert_many`, across all
    /// the batches it was split into).
    pub index: usize,
    pub code: i32,
    pub code_name: Option<String>,
    pub message: String,
    /// The entry as sent by the server (`keyPattern`, `keyValue`, `errInfo`, ...).
    pub details: Document,
}

/// `writeConcernError`: the write happened, but the write concern was not satisfied (in time).
#[derive(Clone, Debug, PartialEq)]
pub struct WriteConcernError {
    pub code: i32,
    pub code_name: String,
    pub message: String,
    pub details: Option<Document>,
}

/// The failed writes of one operation, and what did succeed.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WriteFailure {
    pub write_errors: Vec<WriteError>,
    pub write_concern_error: Option<WriteConcernError>,
    /// For inserts: the `_id` of each document that was inserted, by index.
    pub inserted_ids: BTreeMap<usize, Bson>,
}

impl Error {
    pub fn new(kind: ErrorKind) -> Error {
        Error {
            kind: Box::new(kind),
            labels: Vec::new(),
        }
    }

    pub(crate) fn with_labels(mut self, labels: impl IntoIterator<Item = String>) -> Error {
        for label in labels {
            if !self.labels.contains(&label) {
                self.labels.push(label);
            }
        }
        self
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The error labels (`errorLabels`) the server attached.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// MongoDB's numeric code: of the command error, else of the write concern error, else of the
    /// first write error.
    pub fn code(&self) -> Option<i32> {
        match &*self.kind {
            ErrorKind::Command(error) => Some(error.code),
            ErrorKind::Write(failure) => failure
                .write_concern_error
                .as_ref()
                .map(|wce| wce.code)
                .or_else(|| failure.write_errors.first().map(|we| we.code)),
            _ => None,
        }
    }

    /// The code as a [`cairn_types::ErrorCode`].
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().map(ErrorCode::from_code)
    }

    /// MongoDB's code name (`DuplicateKey`, `WriteConflict`, ...), when there is a code.
    pub fn code_name(&self) -> Option<String> {
        match &*self.kind {
            ErrorKind::Command(error) => Some(error.code_name.clone()),
            ErrorKind::Write(failure) => match &failure.write_concern_error {
                Some(wce) => Some(wce.code_name.clone()),
                None => failure.write_errors.first().map(|we| {
                    we.code_name
                        .clone()
                        .unwrap_or_else(|| ErrorCode::from_code(we.code).name().into())
                }),
            },
            _ => None,
        }
    }

    /// The message (`errmsg` for server errors).
    pub fn message(&self) -> String {
        match &*self.kind {
            ErrorKind::Command(error) => error.message.clone(),
            ErrorKind::Write(failure) => {
                match (&failure.write_errors.first(), &failure.write_concern_error) {
                    (Some(write_error), _) => write_error.message.clone(),
                    (None, Some(wce)) => wce.message.clone(),
                    (None, None) => "write failed".to_string(),
                }
            }
            ErrorKind::Network { message, .. }
            | ErrorKind::ServerSelection { message }
            | ErrorKind::InvalidReply { message }
            | ErrorKind::Serialization { message }
            | ErrorKind::InvalidUri { message }
            | ErrorKind::InvalidArgument { message } => message.clone(),
        }
    }

    /// The write failure, for errors of kind [`ErrorKind::Write`].
    pub fn write_failure(&self) -> Option<&WriteFailure> {
        match &*self.kind {
            ErrorKind::Write(failure) => Some(failure),
            _ => None,
        }
    }

    /// A duplicate key (11000), as a command error or as any of the write errors.
    pub fn is_duplicate_key(&self) -> bool {
        self.has_code(ErrorCode::DuplicateKey.code())
    }

    /// The command error's code, or any write error's or the write concern error's, is `code`.
    pub fn has_code(&self, code: i32) -> bool {
        match &*self.kind {
            ErrorKind::Command(error) => error.code == code,
            ErrorKind::Write(failure) => {
                failure.write_errors.iter().any(|we| we.code == code)
                    || failure
                        .write_concern_error
                        .as_ref()
                        .is_some_and(|wce| wce.code == code)
            }
            _ => false,
        }
    }

    pub fn is_network_error(&self) -> bool {
        matches!(&*self.kind, ErrorKind::Network { .. })
    }

    pub fn is_server_selection_error(&self) -> bool {
        matches!(&*self.kind, ErrorKind::ServerSelection { .. })
    }

    pub fn is_write_concern_error(&self) -> bool {
        matches!(&*self.kind, ErrorKind::Write(failure) if failure.write_concern_error.is_some())
    }

    /// The server is not (or no longer) the primary or is shutting down: the topology should be
    /// re-checked before another server is selected (the SDAM "state change" errors).
    pub fn is_state_change_error(&self) -> bool {
        match &*self.kind {
            ErrorKind::Command(error) => is_state_change_code(error.code),
            ErrorKind::Write(failure) => failure
                .write_concern_error
                .as_ref()
                .is_some_and(|wce| is_state_change_code(wce.code)),
            _ => false,
        }
    }

    pub(crate) fn network(address: Option<ServerAddress>, status: &tonic::Status) -> Error {
        let message = match &address {
            Some(address) => format!("{address}: {}", describe_status(status)),
            None => describe_status(status),
        };
        Error::new(ErrorKind::Network {
            address,
            status: status.code(),
            message,
        })
    }

    pub(crate) fn invalid_reply(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidReply {
            message: message.into(),
        })
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument {
            message: message.into(),
        })
    }

    pub(crate) fn invalid_uri(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidUri {
            message: message.into(),
        })
    }

    pub(crate) fn serialization(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Serialization {
            message: message.to_string(),
        })
    }

    /// The error for a reply with `ok: 0`.
    pub(crate) fn from_command_reply(reply: Document) -> Error {
        let code = reply_code(&reply).unwrap_or(ErrorCode::UnknownError.code());
        let code_name = reply
            .get_str("codeName")
            .map(str::to_string)
            .unwrap_or_else(|_| ErrorCode::from_code(code).name().into_owned());
        let message = reply
            .get_str("errmsg")
            .unwrap_or("command failed")
            .to_string();
        let labels = string_array(&reply, "errorLabels");
        Error::new(ErrorKind::Command(CommandError {
            code,
            code_name,
            message,
            reply,
        }))
        .with_labels(labels)
    }

    /// Reads `writeErrors` and `writeConcernError` of a write command's reply; `index_offset` is
    /// added to each write error's index (for batches of a split `insert_many`).
    pub(crate) fn write_failure_from_reply(
        reply: &Document,
        index_offset: usize,
    ) -> Result<Option<(WriteFailure, Vec<String>)>> {
        let mut failure = WriteFailure::default();
        let mut labels = string_array(reply, "errorLabels");
        if let Ok(entries) = reply.get_array("writeErrors") {
            for entry in entries {
                let Bson::Document(entry) = entry else {
                    return Err(Error::invalid_reply("writeErrors entry is not a document"));
                };
                let index = entry.get("index").and_then(bson_as_i64).ok_or_else(|| {
                    Error::invalid_reply("writeErrors entry without a numeric index")
                })?;
                failure.write_errors.push(WriteError {
                    index: index as usize + index_offset,
                    code: reply_code(entry).unwrap_or(ErrorCode::UnknownError.code()),
                    code_name: entry.get_str("codeName").ok().map(str::to_string),
                    message: entry.get_str("errmsg").unwrap_or_default().to_string(),
                    details: entry.clone(),
                });
            }
        }
        if let Ok(entry) = reply.get_document("writeConcernError") {
            let code = reply_code(entry).unwrap_or(ErrorCode::UnknownError.code());
            labels.extend(string_array(entry, "errorLabels"));
            failure.write_concern_error = Some(WriteConcernError {
                code,
                code_name: entry
                    .get_str("codeName")
                    .map(str::to_string)
                    .unwrap_or_else(|_| ErrorCode::from_code(code).name().into_owned()),
                message: entry.get_str("errmsg").unwrap_or_default().to_string(),
                details: entry.get_document("errInfo").ok().cloned(),
            });
        }
        if failure.write_errors.is_empty() && failure.write_concern_error.is_none() {
            Ok(None)
        } else {
            Ok(Some((failure, labels)))
        }
    }
}

/// Codes after which a server must be re-checked (not primary, shutting down, stepped down).
pub(crate) fn is_state_change_code(code: i32) -> bool {
    [
        ErrorCode::NotWritablePrimary,
        ErrorCode::NotPrimaryNoSecondaryOk,
        ErrorCode::NotPrimaryOrSecondary,
        ErrorCode::InterruptedDueToReplStateChange,
        ErrorCode::PrimarySteppedDown,
        ErrorCode::ShutdownInProgress,
        ErrorCode::InterruptedAtShutdown,
    ]
    .iter()
    .any(|known| known.code() == code)
}

fn describe_status(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut message = status.message().to_string();
    let mut source = status.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = inner.source();
    }
    format!("{:?}: {message}", status.code())
}

fn reply_code(document: &Document) -> Option<i32> {
    document
        .get("code")
        .and_then(bson_as_i64)
        .map(|code| code as i32)
}

/// A numeric BSON value as i64 (int32, int64 or an integral double).
pub(crate) fn bson_as_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 && v.is_finite() => Some(*v as i64),
        _ => None,
    }
}

fn string_array(document: &Document, key: &str) -> Vec<String> {
    document
        .get_array(key)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Command(error) => {
                write!(f, "{} ({}): {}", error.code_name, error.code, error.message)
            }
            ErrorKind::Write(failure) => {
                if let Some(first) = failure.write_errors.first() {
                    let name = first
                        .code_name
                        .clone()
                        .unwrap_or_else(|| ErrorCode::from_code(first.code).name().into_owned());
                    write!(
                        f,
                        "write error at index {}: {name} ({}): {}",
                        first.index, first.code, first.message
                    )?;
                    if failure.write_errors.len() > 1 {
                        write!(
                            f,
                            " (and {} more write errors)",
                            failure.write_errors.len() - 1
                        )?;
                    }
                }
                if let Some(wce) = &failure.write_concern_error {
                    if !failure.write_errors.is_empty() {
                        write!(f, "; ")?;
                    }
                    write!(
                        f,
                        "write concern error: {} ({}): {}",
                        wce.code_name, wce.code, wce.message
                    )?;
                }
                Ok(())
            }
            ErrorKind::Network { message, .. } => write!(f, "network error: {message}"),
            ErrorKind::ServerSelection { message } => write!(f, "server selection: {message}"),
            ErrorKind::InvalidReply { message } => write!(f, "invalid reply: {message}"),
            ErrorKind::Serialization { message } => write!(f, "BSON conversion: {message}"),
            ErrorKind::InvalidUri { message } => write!(f, "invalid connection string: {message}"),
            ErrorKind::InvalidArgument { message } => write!(f, "invalid argument: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<bson::error::Error> for Error {
    fn from(error: bson::error::Error) -> Error {
        Error::serialization(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn command_error_carries_code_name_message_and_labels() {
        let error = Error::from_command_reply(doc! {
            "ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary",
            "errorLabels": ["RetryableWriteError"],
        });
        assert_eq!(error.code(), Some(10107));
        assert_eq!(error.code_name().as_deref(), Some("NotWritablePrimary"));
        assert_eq!(error.message(), "not primary");
        assert!(error.has_label("RetryableWriteError"));
        assert!(error.is_state_change_error());
        assert!(!error.is_duplicate_key());
        assert_eq!(error.to_string(), "NotWritablePrimary (10107): not primary");
    }

    #[test]
    fn code_name_falls_back_to_the_known_name() {
        let error = Error::from_command_reply(doc! {"ok": 0, "errmsg": "x", "code": 11000});
        assert_eq!(error.code_name().as_deref(), Some("DuplicateKey"));
        assert!(error.is_duplicate_key());
    }

    #[test]
    fn write_errors_and_write_concern_error_are_read_with_offsets() {
        let reply = doc! {
            "ok": 1, "n": 1,
            "writeErrors": [{"index": 1, "code": 11000, "codeName": "DuplicateKey", "errmsg": "E11000 dup", "keyValue": {"_id": 1}}],
            "writeConcernError": {"code": 64, "codeName": "WriteConcernTimeout", "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": true}},
        };
        let (failure, _) = Error::write_failure_from_reply(&reply, 10)
            .unwrap()
            .unwrap();
        assert_eq!(failure.write_errors.len(), 1);
        assert_eq!(failure.write_errors[0].index, 11);
        assert_eq!(
            failure.write_errors[0]
                .details
                .get_document("keyValue")
                .unwrap(),
            &doc! {"_id": 1}
        );
        let wce = failure.write_concern_error.clone().unwrap();
        assert_eq!(wce.code, 64);
        assert_eq!(wce.details, Some(doc! {"wtimeout": true}));
        let error = Error::new(ErrorKind::Write(failure));
        assert!(error.is_duplicate_key());
        assert!(error.is_write_concern_error());
        assert_eq!(error.code(), Some(64));
    }

    #[test]
    fn a_clean_reply_is_no_failure() {
        assert!(
            Error::write_failure_from_reply(&doc! {"ok": 1, "n": 3}, 0)
                .unwrap()
                .is_none()
        );
        assert!(
            Error::write_failure_from_reply(&doc! {"ok": 1, "writeErrors": [{"code": 1}]}, 0)
                .is_err()
        );
    }
}
