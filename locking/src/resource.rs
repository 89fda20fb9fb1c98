//! Lockable resources and their canonical order.
//!
//! Owns: [`ResourceId`] (the replication state transition lock, Global, a database, a collection,
//! the oplog), [`ResourceType`] (what statistics are grouped by), the canonical acquisition order,
//! and the hash that places a resource in the lock table.
//!
//! Invariants: the canonical order is RSTL < Global < Database (by name) < Collection (by
//! namespace) < oplog, and every path that acquires several resources at once (a collection lock
//! and its ancestors, restoring after a yield) acquires them in that order. Two resources are the
//! same lock exactly when they are equal (names are compared, the hash only picks a bucket).

use cairn_types::Namespace;
use std::cmp::Ordering;
use std::fmt;

/// What a lock protects.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ResourceId {
    /// The replication state transition lock (RSTL): operations take it in IX with the Global
    /// lock, a state transition takes it in X.
    ReplicationStateTransition,
    /// The whole node.
    Global,
    /// One database.
    Database(String),
    /// One collection. The oplog is never a `Collection`: it is [`ResourceId::Oplog`].
    Collection(Namespace),
    /// The replica set's oplog (`local.oplog.rs`), its own resource.
    Oplog,
}

/// Resource types, as serverStatus groups lock statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    ReplicationStateTransition = 0,
    Global = 1,
    Database = 2,
    Collection = 3,
    Oplog = 4,
}

/// Number of resource types (array sizes indexed by [`ResourceType::index`]).
pub const RESOURCE_TYPES: usize = 5;

impl ResourceType {
    pub const ALL: [ResourceType; RESOURCE_TYPES] = [
        ResourceType::ReplicationStateTransition,
        ResourceType::Global,
        ResourceType::Database,
        ResourceType::Collection,
        ResourceType::Oplog,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The key in serverStatus `locks` and currentOp `locks`.
    pub const fn name(self) -> &'static str {
        match self {
            ResourceType::ReplicationStateTransition => "ReplicationStateTransition",
            ResourceType::Global => "Global",
            ResourceType::Database => "Database",
            ResourceType::Collection => "Collection",
            ResourceType::Oplog => "oplog",
        }
    }
}

impl ResourceId {
    /// The resource a collection lock takes: the oplog namespace maps to [`ResourceId::Oplog`].
    pub fn collection(ns: &Namespace) -> ResourceId {
        if ns.is_oplog() {
            ResourceId::Oplog
        } else {
            ResourceId::Collection(ns.clone())
        }
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceId::ReplicationStateTransition => ResourceType::ReplicationStateTransition,
            ResourceId::Global => ResourceType::Global,
            ResourceId::Database(_) => ResourceType::Database,
            ResourceId::Collection(_) => ResourceType::Collection,
            ResourceId::Oplog => ResourceType::Oplog,
        }
    }

    /// The lock-table hash of this resource (FNV-1a over the type and the names).
    pub fn table_hash(&self) -> u64 {
        match self {
            ResourceId::Database(db) => name_hash(ResourceType::Database, db, ""),
            ResourceId::Collection(ns) => name_hash(ResourceType::Collection, &ns.db, &ns.coll),
            other => other.resource_type() as u64,
        }
    }

    /// True when this is the database lock `db`.
    pub(crate) fn is_database(&self, db: &str) -> bool {
        matches!(self, ResourceId::Database(name) if name == db)
    }

    /// True when this is the collection lock `ns`.
    pub(crate) fn is_collection(&self, ns: &Namespace) -> bool {
        matches!(self, ResourceId::Collection(held) if held == ns)
    }
}

/// FNV-1a over the resource type and up to two names (with a separator), so that `a.bc` and
/// `ab.c` hash apart. Cheap for the short names locks use, and needs no allocation.
pub(crate) fn name_hash(kind: ResourceType, first: &str, second: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET ^ kind as u64;
    for byte in first
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(second.bytes())
    {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

impl Ord for ResourceId {
    /// The canonical acquisition order.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (ResourceId::Database(a), ResourceId::Database(b)) => a.cmp(b),
            (ResourceId::Collection(a), ResourceId::Collection(b)) => a.cmp(b),
            _ => self.resource_type().cmp(&other.resource_type()),
        }
    }
}

impl PartialOrd for ResourceId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ResourceId {
    /// The form lockInfo shows as `resourceId`: `{Collection: shop.orders}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.resource_type().name();
        match self {
            ResourceId::Database(db) => write!(f, "{{{kind}: {db}}}"),
            ResourceId::Collection(ns) => write!(f, "{{{kind}: {ns}}}"),
            _ => write!(f, "{{{kind}}}"),
        }
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_order_is_the_hierarchy() {
        let mut resources = [
            ResourceId::Oplog,
            ResourceId::Collection(Namespace::new("b", "x")),
            ResourceId::Database("b".into()),
            ResourceId::Collection(Namespace::new("a", "z")),
            ResourceId::Global,
            ResourceId::Database("a".into()),
            ResourceId::ReplicationStateTransition,
        ];
        resources.sort();
        let shown: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "{ReplicationStateTransition}",
                "{Global}",
                "{Database: a}",
                "{Database: b}",
                "{Collection: a.z}",
                "{Collection: b.x}",
                "{oplog}",
            ]
        );
    }

    #[test]
    fn oplog_namespace_is_the_oplog_resource_and_hashes_separate_names() {
        assert_eq!(
            ResourceId::collection(&Namespace::new("local", "oplog.rs")),
            ResourceId::Oplog
        );
        let ab_c = name_hash(ResourceType::Collection, "ab", "c");
        let a_bc = name_hash(ResourceType::Collection, "a", "bc");
        assert_ne!(ab_c, a_bc);
        assert_ne!(
            name_hash(ResourceType::Database, "a", ""),
            name_hash(ResourceType::Collection, "a", "")
        );
    }
}
