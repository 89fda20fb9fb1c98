//! Namespaces: `database.collection`, with MongoDB's naming rules.

use crate::limits::{DATABASE_NAME_LENGTH_MAX_BYTES, NAMESPACE_LENGTH_MAX_BYTES};
use crate::{Error, ErrorCode, Result};
use std::fmt;

/// A collection's full name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl Namespace {
    /// A namespace from its parts, without validation (see [`Namespace::validate`]).
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Namespace {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// Splits `"db.coll"` at the first dot.
    pub fn parse(full: &str) -> Result<Namespace> {
        match full.split_once('.') {
            Some((db, coll)) => Ok(Namespace::new(db, coll)),
            None => Err(Error::new(
                ErrorCode::InvalidNamespace,
                format!("Invalid namespace specified '{full}'"),
            )),
        }
    }

    /// Checks the database and collection names for a user collection (a data write or a
    /// `create`): MongoDB's rules, with `InvalidNamespace` (73) on failure.
    pub fn validate(&self) -> Result<()> {
        validate_db_name(&self.db)?;
        validate_collection_name(self)?;
        Ok(())
    }

    /// True for the replica set's oplog, `local.oplog.rs`.
    pub fn is_oplog(&self) -> bool {
        self.db == "local" && self.coll == "oplog.rs"
    }

    /// True for `system.*` collections.
    pub fn is_system(&self) -> bool {
        self.coll.starts_with("system.")
    }

    /// The command namespace `db.$cmd`.
    pub fn command_namespace(db: &str) -> Namespace {
        Namespace::new(db, "$cmd")
    }
}

/// MongoDB's rules for database names.
pub fn validate_db_name(db: &str) -> Result<()> {
    let invalid = || {
        Error::new(
            ErrorCode::InvalidNamespace,
            format!("Invalid database name: '{db}'"),
        )
    };
    if db.is_empty() || db.len() > DATABASE_NAME_LENGTH_MAX_BYTES {
        return Err(invalid());
    }
    if db
        .chars()
        .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
    {
        return Err(invalid());
    }
    Ok(())
}

/// MongoDB's rules for collection names (the database part is checked separately).
pub fn validate_collection_name(ns: &Namespace) -> Result<()> {
    let coll = &ns.coll;
    if coll.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidNamespace,
            format!("Invalid namespace specified '{ns}'"),
        ));
    }
    if coll.contains('\0') || (coll.contains('$') && coll != "oplog.$main") || coll.starts_with('.')
    {
        return Err(Error::new(
            ErrorCode::InvalidNamespace,
            format!("Invalid collection name: {coll}"),
        ));
    }
    if ns.db.len() + 1 + coll.len() > NAMESPACE_LENGTH_MAX_BYTES {
        return Err(Error::new(
            ErrorCode::InvalidNamespace,
            format!(
                "Fully qualified namespace is too long. Namespace: {ns} Max: {NAMESPACE_LENGTH_MAX_BYTES}"
            ),
        ));
    }
    Ok(())
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_at_first_dot() {
        let ns = Namespace::parse("shop.orders.archive").unwrap();
        assert_eq!(ns.db, "shop");
        assert_eq!(ns.coll, "orders.archive");
        assert_eq!(ns.to_string(), "shop.orders.archive");
        assert!(Namespace::parse("nodot").is_err());
    }

    #[test]
    fn naming_rules() {
        assert!(Namespace::new("shop", "orders").validate().is_ok());
        for bad_db in ["", "a b", "a.b", "a$b", "a/b", "a\"b"] {
            let error = Namespace::new(bad_db, "c").validate().unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidNamespace, "{bad_db:?}");
        }
        for bad_coll in ["", "a$b", ".a", "a\0b"] {
            let error = Namespace::new("db", bad_coll).validate().unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidNamespace, "{bad_coll:?}");
        }
        let long = "x".repeat(300);
        assert!(Namespace::new("db", long).validate().is_err());
        assert!(Namespace::new("local", "oplog.rs").is_oplog());
    }
}
