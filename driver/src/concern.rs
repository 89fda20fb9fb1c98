//! Read concern, write concern and read preference, and how they are inherited.
//!
//! Each can be set on the client (also from the connection string), on a database, on a
//! collection and on one operation; the most specific one that is set wins ([`Inherited`]). What
//! is set goes into the command as `readConcern`, `writeConcern` and `$readPreference`; what is not
//! set is left out, so the server's defaults apply (`local` reads, its default write concern).
//! `$readPreference` is sent only for modes other than `primary`, as MongoDB's drivers do: a
//! command without it is a primary read.

use bson::{Bson, Document, doc};
use std::fmt;
use std::time::Duration;

/// `readConcern.level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadConcernLevel {
    Local,
    Majority,
    Linearizable,
    Available,
    Snapshot,
    /// A level this driver does not know by name; sent as is.
    Custom(String),
}

impl ReadConcernLevel {
    pub fn parse(level: &str) -> ReadConcernLevel {
        match level {
            "local" => ReadConcernLevel::Local,
            "majority" => ReadConcernLevel::Majority,
            "linearizable" => ReadConcernLevel::Linearizable,
            "available" => ReadConcernLevel::Available,
            "snapshot" => ReadConcernLevel::Snapshot,
            other => ReadConcernLevel::Custom(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ReadConcernLevel::Local => "local",
            ReadConcernLevel::Majority => "majority",
            ReadConcernLevel::Linearizable => "linearizable",
            ReadConcernLevel::Available => "available",
            ReadConcernLevel::Snapshot => "snapshot",
            ReadConcernLevel::Custom(level) => level,
        }
    }
}

/// A read concern: `{level: ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadConcern {
    pub level: ReadConcernLevel,
}

impl ReadConcern {
    pub fn local() -> ReadConcern {
        ReadConcern {
            level: ReadConcernLevel::Local,
        }
    }
    pub fn majority() -> ReadConcern {
        ReadConcern {
            level: ReadConcernLevel::Majority,
        }
    }
    pub fn linearizable() -> ReadConcern {
        ReadConcern {
            level: ReadConcernLevel::Linearizable,
        }
    }
    pub fn available() -> ReadConcern {
        ReadConcern {
            level: ReadConcernLevel::Available,
        }
    }
    pub fn snapshot() -> ReadConcern {
        ReadConcern {
            level: ReadConcernLevel::Snapshot,
        }
    }

    /// The `readConcern` field of a command.
    pub fn to_document(&self) -> Document {
        doc! {"level": self.level.as_str()}
    }
}

/// `writeConcern.w`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acknowledgment {
    /// `w: N`: N members (the primary counts); `w: 0` asks for no acknowledgment.
    Nodes(u32),
    /// `w: "majority"`.
    Majority,
    /// A tag set mode from the replica set configuration's `getLastErrorModes`.
    Custom(String),
}

impl Acknowledgment {
    fn to_bson(&self) -> Bson {
        match self {
            Acknowledgment::Nodes(n) => Bson::Int32(*n as i32),
            Acknowledgment::Majority => Bson::String("majority".into()),
            Acknowledgment::Custom(mode) => Bson::String(mode.clone()),
        }
    }

    /// `"majority"`, a tag mode, or a number.
    pub fn parse(w: &str) -> Acknowledgment {
        match w.parse::<u32>() {
            Ok(n) => Acknowledgment::Nodes(n),
            Err(_) if w == "majority" => Acknowledgment::Majority,
            Err(_) => Acknowledgment::Custom(w.to_string()),
        }
    }
}

/// A write concern: `{w, j, wtimeout}`; unset fields are left to the server's default.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WriteConcern {
    pub w: Option<Acknowledgment>,
    /// `j`: acknowledge only once the write is in the journal on disk.
    pub journal: Option<bool>,
    /// `wtimeout`: how long to wait for `w` before answering with a write concern error.
    pub w_timeout: Option<Duration>,
}

impl WriteConcern {
    pub fn majority() -> WriteConcern {
        WriteConcern {
            w: Some(Acknowledgment::Majority),
            ..WriteConcern::default()
        }
    }

    pub fn nodes(n: u32) -> WriteConcern {
        WriteConcern {
            w: Some(Acknowledgment::Nodes(n)),
            ..WriteConcern::default()
        }
    }

    pub fn with_journal(mut self, journal: bool) -> WriteConcern {
        self.journal = Some(journal);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> WriteConcern {
        self.w_timeout = Some(timeout);
        self
    }

    /// Whether the server is asked to acknowledge the write (anything but `w: 0` without `j`).
    pub fn is_acknowledged(&self) -> bool {
        self.w != Some(Acknowledgment::Nodes(0)) || self.journal == Some(true)
    }

    /// The `writeConcern` field of a command.
    pub fn to_document(&self) -> Document {
        let mut document = Document::new();
        if let Some(w) = &self.w {
            document.insert("w", w.to_bson());
        }
        if let Some(journal) = self.journal {
            document.insert("j", journal);
        }
        if let Some(timeout) = self.w_timeout {
            document.insert(
                "wtimeout",
                i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            );
        }
        document
    }
}

/// Which members a read may go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadPreferenceMode {
    #[default]
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
    Nearest,
}

impl ReadPreferenceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPreferenceMode::Primary => "primary",
            ReadPreferenceMode::PrimaryPreferred => "primaryPreferred",
            ReadPreferenceMode::Secondary => "secondary",
            ReadPreferenceMode::SecondaryPreferred => "secondaryPreferred",
            ReadPreferenceMode::Nearest => "nearest",
        }
    }

    /// MongoDB's names, case-insensitively.
    pub fn parse(mode: &str) -> Option<ReadPreferenceMode> {
        let all = [
            ReadPreferenceMode::Primary,
            ReadPreferenceMode::PrimaryPreferred,
            ReadPreferenceMode::Secondary,
            ReadPreferenceMode::SecondaryPreferred,
            ReadPreferenceMode::Nearest,
        ];
        all.into_iter()
            .find(|candidate| candidate.as_str().eq_ignore_ascii_case(mode))
    }
}

/// A read preference: a mode, tag sets tried in order, and a staleness bound for secondaries.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ReadPreference {
    pub mode: ReadPreferenceMode,
    /// Each tag set is a document of string tags; a member matches a set when it has all of its
    /// tags; the first set that matches any member wins; an empty set matches every member.
    pub tag_sets: Vec<Document>,
    /// `maxStalenessSeconds`: secondaries estimated to lag more than this are not selected.
    pub max_staleness: Option<Duration>,
}

impl ReadPreference {
    pub fn primary() -> ReadPreference {
        ReadPreference::default()
    }
    pub fn primary_preferred() -> ReadPreference {
        ReadPreference {
            mode: ReadPreferenceMode::PrimaryPreferred,
            ..Default::default()
        }
    }
    pub fn secondary() -> ReadPreference {
        ReadPreference {
            mode: ReadPreferenceMode::Secondary,
            ..Default::default()
        }
    }
    pub fn secondary_preferred() -> ReadPreference {
        ReadPreference {
            mode: ReadPreferenceMode::SecondaryPreferred,
            ..Default::default()
        }
    }
    pub fn nearest() -> ReadPreference {
        ReadPreference {
            mode: ReadPreferenceMode::Nearest,
            ..Default::default()
        }
    }

    pub fn with_tag_sets(mut self, tag_sets: Vec<Document>) -> ReadPreference {
        self.tag_sets = tag_sets;
        self
    }

    pub fn with_max_staleness(mut self, max_staleness: Duration) -> ReadPreference {
        self.max_staleness = Some(max_staleness);
        self
    }

    /// The `$readPreference` field of a command.
    pub fn to_document(&self) -> Document {
        let mut document = doc! {"mode": self.mode.as_str()};
        if !self.tag_sets.is_empty() {
            document.insert(
                "tags",
                self.tag_sets
                    .iter()
                    .cloned()
                    .map(Bson::Document)
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(max_staleness) = self.max_staleness {
            document.insert("maxStalenessSeconds", max_staleness.as_secs() as i64);
        }
        document
    }

    /// Parses a `$readPreference` document (`{mode, tags?, maxStalenessSeconds?}`).
    pub fn from_document(document: &Document) -> Option<ReadPreference> {
        let mode = ReadPreferenceMode::parse(document.get_str("mode").ok()?)?;
        let tag_sets = match document.get_array("tags") {
            Ok(tags) => tags
                .iter()
                .filter_map(|t| t.as_document().cloned())
                .collect(),
            Err(_) => Vec::new(),
        };
        let max_staleness = document
            .get("maxStalenessSeconds")
            .and_then(crate::error::bson_as_i64)
            .filter(|seconds| *seconds > 0)
            .map(|seconds| Duration::from_secs(seconds as u64));
        Some(ReadPreference {
            mode,
            tag_sets,
            max_staleness,
        })
    }
}

impl fmt::Display for ReadPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_document())
    }
}

/// The three settings that a client, a database and a collection pass down.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Inherited {
    pub read_concern: Option<ReadConcern>,
    pub write_concern: Option<WriteConcern>,
    pub read_preference: Option<ReadPreference>,
}

impl Inherited {
    /// `self` with every unset field taken from `parent`: the more specific level wins.
    pub fn over(&self, parent: &Inherited) -> Inherited {
        Inherited {
            read_concern: self
                .read_concern
                .clone()
                .or_else(|| parent.read_concern.clone()),
            write_concern: self
                .write_concern
                .clone()
                .or_else(|| parent.write_concern.clone()),
            read_preference: self
                .read_preference
                .clone()
                .or_else(|| parent.read_preference.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_concern_document_has_only_what_is_set() {
        assert_eq!(WriteConcern::default().to_document(), doc! {});
        assert_eq!(
            WriteConcern::majority()
                .with_journal(true)
                .with_timeout(Duration::from_millis(500))
                .to_document(),
            doc! {"w": "majority", "j": true, "wtimeout": 500_i64}
        );
        assert_eq!(WriteConcern::nodes(2).to_document(), doc! {"w": 2});
        assert!(!WriteConcern::nodes(0).is_acknowledged());
        assert!(WriteConcern::nodes(0).with_journal(true).is_acknowledged());
        assert_eq!(
            Acknowledgment::parse("dc"),
            Acknowledgment::Custom("dc".into())
        );
    }

    #[test]
    fn read_preference_round_trips_through_its_document() {
        let preference = ReadPreference::secondary()
            .with_tag_sets(vec![doc! {"dc": "ny"}, doc! {}])
            .with_max_staleness(Duration::from_secs(120));
        let document = preference.to_document();
        assert_eq!(
            document,
            doc! {"mode": "secondary", "tags": [{"dc": "ny"}, {}], "maxStalenessSeconds": 120_i64}
        );
        assert_eq!(ReadPreference::from_document(&document), Some(preference));
        assert_eq!(
            ReadPreferenceMode::parse("SECONDARYPREFERRED"),
            Some(ReadPreferenceMode::SecondaryPreferred)
        );
        assert_eq!(ReadPreferenceMode::parse("any"), None);
    }

    #[test]
    fn the_most_specific_level_wins() {
        let client = Inherited {
            read_concern: Some(ReadConcern::local()),
            write_concern: Some(WriteConcern::nodes(1)),
            read_preference: Some(ReadPreference::nearest()),
        };
        let database = Inherited {
            write_concern: Some(WriteConcern::majority()),
            ..Default::default()
        };
        let collection = Inherited {
            read_concern: Some(ReadConcern::majority()),
            ..Default::default()
        };
        let operation = Inherited {
            read_preference: Some(ReadPreference::secondary()),
            ..Default::default()
        };
        let effective = operation.over(&collection.over(&database.over(&client)));
        assert_eq!(effective.read_concern, Some(ReadConcern::majority()));
        assert_eq!(effective.write_concern, Some(WriteConcern::majority()));
        assert_eq!(effective.read_preference, Some(ReadPreference::secondary()));
        assert_eq!(Inherited::default().over(&client), client);
    }
}
