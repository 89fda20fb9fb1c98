//! MongoDB's error codes as values.
//!
//! [`ErrorCode`] maps one-to-one onto MongoDB's numeric codes and code names
//! (`src/mongo/base/error_codes.yml`); codes MongoDB reports only by source location (`Location`
//! codes such as 31254) are [`ErrorCode::Location`]. [`Error`] is the value every cairn crate
//! returns to a caller that must react to the code: a code, a message, and optional extra fields
//! for the reply (`keyPattern`/`keyValue` of a duplicate key, for example).

use std::fmt;

macro_rules! error_codes {
    ($($name:ident = $code:literal,)*) => {
        /// A MongoDB error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum ErrorCode {
            $($name,)*
            /// A code that MongoDB reports by its source location: code name `Location<code>`.
            Location(i32),
        }

        impl ErrorCode {
            /// The numeric code.
            pub const fn code(self) -> i32 {
                match self {
                    $(ErrorCode::$name => $code,)*
                    ErrorCode::Location(code) => code,
                }
            }

            /// MongoDB's code name (`codeName` in replies).
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $(ErrorCode::$name => std::borrow::Cow::Borrowed(stringify!($name)),)*
                    ErrorCode::Location(code) => std::borrow::Cow::Owned(format!("Location{code}")),
                }
            }

            /// The code for a number; numbers without a name become [`ErrorCode::Location`].
            pub fn from_code(code: i32) -> ErrorCode {
                match code {
                    $($code => ErrorCode::$name,)*
                    other => ErrorCode::Location(other),
                }
            }

            /// Every named code, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];
        }
    };
}

error_codes! {
    InternalError = 1,
    BadValue = 2,
    NoSuchKey = 4,
    HostUnreachable = 6,
    HostNotFound = 7,
    UnknownError = 8,
    FailedToParse = 9,
    CannotMutateObject = 10,
    Unauthorized = 13,
    TypeMismatch = 14,
    Overflow = 15,
    InvalidLength = 16,
    ProtocolError = 17,
    AuthenticationFailed = 18,
    IllegalOperation = 20,
    EmptyArrayOperation = 21,
    InvalidBSON = 22,
    LockTimeout = 24,
    NamespaceNotFound = 26,
    IndexNotFound = 27,
    PathNotViable = 28,
    NonExistentPath = 29,
    InvalidPath = 30,
    ConflictingUpdateOperators = 40,
    CursorNotFound = 43,
    LockBusy = 46,
    NoMatchingDocument = 47,
    NamespaceExists = 48,
    MaxTimeMSExpired = 50,
    DollarPrefixedFieldName = 52,
    InvalidIdField = 53,
    NotSingleValueField = 54,
    EmptyFieldName = 56,
    DottedFieldName = 57,
    CommandNotFound = 59,
    WriteConcernTimeout = 64,
    MultipleErrorsOccurred = 65,
    ImmutableField = 66,
    CannotCreateIndex = 67,
    IndexAlreadyExists = 68,
    InvalidOptions = 72,
    InvalidNamespace = 73,
    NodeNotFound = 74,
    NoReplicationEnabled = 76,
    UnknownReplWriteConcern = 79,
    IndexOptionsConflict = 85,
    IndexKeySpecsConflict = 86,
    NetworkTimeout = 89,
    CallbackCanceled = 90,
    ShutdownInProgress = 91,
    InvalidReplicaSetConfig = 93,
    NotYetInitialized = 94,
    NotSecondary = 95,
    OperationFailed = 96,
    DBPathInUse = 98,
    UnsatisfiableWriteConcern = 100,
    NodeNotElectable = 104,
    LockFailed = 107,
    ConfigurationInProgress = 109,
    NotExactValueField = 111,
    WriteConflict = 112,
    InitialSyncFailure = 113,
    CommandNotSupported = 115,
    ConflictingOperationInProgress = 117,
    OplogStartMissing = 120,
    DocumentValidationFailure = 121,
    NotAReplicaSet = 123,
    CommandFailed = 125,
    UnrecoverableRollbackError = 127,
    FailedToSatisfyReadPreference = 133,
    ReadConcernMajorityNotAvailableYet = 134,
    StaleTerm = 135,
    CappedPositionLost = 136,
    OplogOutOfOrder = 152,
    CursorInUse = 143,
    ExceededMemoryLimit = 146,
    DurationOverflow = 159,
    CommandNotSupportedOnView = 166,
    InvalidPipelineOperator = 168,
    CannotIndexParallelArrays = 171,
    QueryPlanKilled = 175,
    InvalidIndexSpecificationOption = 197,
    CannotBuildIndexKeys = 201,
    NoSuchSession = 206,
    InvalidUUID = 207,
    StaleClusterTime = 209,
    IncompleteTransactionHistory = 217,
    UpdateOperationFailed = 218,
    IndexModified = 221,
    IllegalOpMsgFlag = 223,
    TransactionTooOld = 225,
    CursorKilled = 237,
    NotImplemented = 238,
    SnapshotTooOld = 239,
    ConversionFailure = 241,
    CannotCreateCollection = 242,
    SnapshotUnavailable = 246,
    NoSuchTransaction = 251,
    TransactionCommitted = 256,
    TransactionTooLarge = 257,
    ExceededTimeLimit = 262,
    OperationNotSupportedInTransaction = 263,
    ClientDisconnect = 279,
    QueryExceededMemoryLimitNoDiskUseAllowed = 292,
    DataCorruptionDetected = 296,
    APIStrictError = 323,
    LinearizableReadConcernError = 187,
    PrimarySteppedDown = 189,
    NotWritablePrimary = 10107,
    BSONObjectTooLarge = 10334,
    DuplicateKey = 11000,
    InterruptedAtShutdown = 11600,
    Interrupted = 11601,
    InterruptedDueToReplStateChange = 11602,
    BackgroundOperationInProgressForNamespace = 12587,
    NotPrimaryNoSecondaryOk = 13435,
    NotPrimaryOrSecondary = 13436,
    OutOfDiskSpace = 14031,
    KeyTooLong = 17280,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.code())
    }
}

/// An error with a MongoDB code, a message, and optional extra reply fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields for the reply document (`keyPattern`, `keyValue`, `errInfo`, ...).
    pub info: Option<Box<bson::Document>>,
}

/// Result with a cairn [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            info: None,
        }
    }

    /// Adds extra reply fields.
    pub fn with_info(mut self, info: bson::Document) -> Error {
        self.info = Some(Box::new(info));
        self
    }

    pub fn bad_value(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadValue, message)
    }

    pub fn failed_to_parse(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::FailedToParse, message)
    }

    pub fn type_mismatch(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::TypeMismatch, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InternalError, message)
    }

    /// The reply to a failed command: `{ok: 0, errmsg, code, codeName, ...info}`.
    pub fn to_reply(&self) -> bson::Document {
        let mut reply = bson::doc! {
            "ok": 0.0,
            "errmsg": self.message.clone(),
            "code": self.code.code(),
            "codeName": self.code.name().into_owned(),
        };
        if let Some(info) = &self.info {
            for (key, value) in info.iter() {
                reply.insert(key.clone(), value.clone());
            }
        }
        reply
    }

    /// The entry of a `writeErrors` array: `{index, code, codeName, errmsg, ...info}`.
    pub fn to_write_error(&self, index: usize) -> bson::Document {
        let mut entry = bson::doc! {
            "index": index as i32,
            "code": self.code.code(),
            "codeName": self.code.name().into_owned(),
            "errmsg": self.message.clone(),
        };
        if let Some(info) = &self.info {
            for (key, value) in info.iter() {
                entry.insert(key.clone(), value.clone());
            }
        }
        entry
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.code(),
            self.message
        )
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(codes.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), code);
        }
        assert_eq!(ErrorCode::WriteConflict.code(), 112);
        assert_eq!(ErrorCode::DuplicateKey.name(), "DuplicateKey");
        assert_eq!(ErrorCode::from_code(31254).name(), "Location31254");
    }

    #[test]
    fn reply_shape() {
        let error = Error::new(ErrorCode::CommandNotFound, "no such command: 'foo'")
            .with_info(bson::doc! {"extra": 1});
        let reply = error.to_reply();
        assert_eq!(reply.get_f64("ok").unwrap(), 0.0);
        assert_eq!(reply.get_i32("code").unwrap(), 59);
        assert_eq!(reply.get_str("codeName").unwrap(), "CommandNotFound");
        assert_eq!(reply.get_i32("extra").unwrap(), 1);
    }
}
