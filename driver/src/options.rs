//! Connection strings and client options.
//!
//! `cairn://host1:port,host2:port/defaultdb?replicaSet=rs0&readPreference=secondary&w=majority`
//! (`mongodb://` is accepted too). Option names are MongoDB's and case-insensitive; an unknown
//! option or a bad value is an [`ErrorKind::InvalidUri`](crate::ErrorKind::InvalidUri) error
//! rather than a silent default, so a typo cannot quietly weaken a write concern. Credentials are
//! refused: cairn has no authentication yet.

use crate::concern::{
    Acknowledgment, Inherited, ReadConcern, ReadConcernLevel, ReadPreference, ReadPreferenceMode,
    WriteConcern,
};
use crate::error::{Error, Result};
use bson::Document;
use std::fmt;
use std::time::Duration;

/// The port `cairnd` listens on by default.
pub const DEFAULT_PORT: u16 = 27027;

/// `host:port` of one server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerAddress {
    /// A host name or an IP address (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddress {
        ServerAddress {
            host: host.into().to_ascii_lowercase(),
            port,
        }
    }

    /// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to [`DEFAULT_PORT`].
    pub fn parse(text: &str) -> Result<ServerAddress> {
        let invalid = |why: &str| Error::invalid_uri(format!("invalid host '{text}': {why}"));
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("expected ':' after ']'"))?,
                    ),
                ),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(invalid("an IPv6 address must be written in brackets")),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("empty host name"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        Ok(ServerAddress::new(host, port))
    }

    /// The URI of the server's gRPC endpoint.
    pub(crate) fn endpoint_uri(&self) -> String {
        format!("http://{self}")
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Everything a [`Client`](crate::Client) is configured with.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientOptions {
    /// The seed list.
    pub hosts: Vec<ServerAddress>,
    /// `replicaSet`: the expected replica set name; members of another set are ignored.
    pub replica_set: Option<String>,
    /// `directConnection`: talk to the one host given, whatever its role.
    pub direct_connection: Option<bool>,
    /// The database named in the path of the connection string.
    pub default_database: Option<String>,
    /// `readConcernLevel`, `w`/`journal`/`wtimeoutMS`, `readPreference`/`readPreferenceTags`/
    /// `maxStalenessSeconds`.
    pub inherited: Inherited,
    /// `appName`, sent in `hello`.
    pub app_name: Option<String>,
    /// `connectTimeoutMS` (default 10 s).
    pub connect_timeout: Duration,
    /// `serverSelectionTimeoutMS` (default 30 s).
    pub server_selection_timeout: Duration,
    /// `heartbeatFrequencyMS` (default 10 s, at least 500 ms).
    pub heartbeat_frequency: Duration,
    /// `localThresholdMS` (default 15 ms): the latency window of server selection.
    pub local_threshold: Duration,
    /// `maxPoolSize`: gRPC channels (HTTP/2 connections) per server (default 2). Each channel
    /// multiplexes any number of concurrent commands.
    pub channels_per_server: usize,
}

/// The smallest heartbeat interval the server discovery spec allows.
pub const HEARTBEAT_FREQUENCY_MIN: Duration = Duration::from_millis(500);

/// Limit on the channels per server (`maxPoolSize`).
pub const CHANNELS_PER_SERVER_MAX: usize = 64;

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            hosts: vec![ServerAddress::new("localhost", DEFAULT_PORT)],
            replica_set: None,
            direct_connection: None,
            default_database: None,
            inherited: Inherited::default(),
            app_name: None,
            connect_timeout: Duration::from_secs(10),
            server_selection_timeout: Duration::from_secs(30),
            heartbeat_frequency: Duration::from_secs(10),
            local_threshold: Duration::from_millis(15),
            channels_per_server: 2,
        }
    }
}

impl ClientOptions {
    /// Parses a `cairn://` or `mongodb://` connection string.
    pub fn parse(uri: &str) -> Result<ClientOptions> {
        let rest = uri
            .strip_prefix("cairn://")
            .or_else(|| uri.strip_prefix("mongodb://"))
            .ok_or_else(|| {
                Error::invalid_uri("the connection string must start with cairn:// or mongodb://")
            })?;
        let (authority, path_and_query) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => match rest.find('?') {
                Some(_) => {
                    return Err(Error::invalid_uri(
                        "a '/' must separate the hosts from the options",
                    ));
                }
                None => (rest, ""),
            },
        };
        if authority.contains('@') {
            return Err(Error::invalid_uri(
                "credentials are not supported: cairn has no authentication",
            ));
        }
        if authority.is_empty() {
            return Err(Error::invalid_uri("no host given"));
        }
        let mut options = ClientOptions {
            hosts: Vec::new(),
            ..ClientOptions::default()
        };
        for host in authority.split(',') {
            let address = ServerAddress::parse(&percent_decode(host)?)?;
            if !options.hosts.contains(&address) {
                options.hosts.push(address);
            }
        }
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        if !path.is_empty() {
            let database = percent_decode(path)?;
            if database.contains(['/', '\\', ' ', '"', '$', '.']) {
                return Err(Error::invalid_uri(format!(
                    "invalid database name '{database}'"
                )));
            }
            options.default_database = Some(database);
        }
        let mut read_preference_mode = None;
        let mut tag_sets = Vec::new();
        let mut max_staleness = None;
        let mut write_concern = WriteConcern::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Error::invalid_uri(format!("option '{pair}' has no value")))?;
            let key = percent_decode(key)?;
            let value = percent_decode(value)?;
            let bad = |expected: &str| {
                Error::invalid_uri(format!("option {key}={value}: expected {expected}"))
            };
            match key.to_ascii_lowercase().as_str() {
                "replicaset" => options.replica_set = Some(value.clone()),
                "directconnection" => {
                    options.direct_connection =
                        Some(parse_bool(&value).ok_or_else(|| bad("true or false"))?)
                }
                "readpreference" => read_preference_mode =
                    Some(ReadPreferenceMode::parse(&value).ok_or_else(|| {
                        bad("primary, primaryPreferred, secondary, secondaryPreferred or nearest")
                    })?),
                "readpreferencetags" => tag_sets.push(
                    parse_tag_set(&value)
                        .ok_or_else(|| bad("tag:value pairs separated by commas"))?,
                ),
                "maxstalenessseconds" => {
                    let seconds: i64 = value.parse().map_err(|_| bad("a number of seconds"))?;
                    // -1 means "no maximum", as in MongoDB's drivers.
                    max_staleness = (seconds >= 0).then(|| Duration::from_secs(seconds as u64));
                    if seconds < -1 {
                        return Err(bad("-1 or a number of seconds"));
                    }
                }
                "w" => write_concern.w = Some(Acknowledgment::parse(&value)),
                "journal" => {
                    write_concern.journal =
                        Some(parse_bool(&value).ok_or_else(|| bad("true or false"))?)
                }
                "wtimeoutms" => {
                    write_concern.w_timeout =
                        Some(parse_millis(&value).ok_or_else(|| bad("milliseconds"))?)
                }
                "readconcernlevel" => {
                    options.inherited.read_concern = Some(ReadConcern {
                        level: ReadConcernLevel::parse(&value),
                    })
                }
                "appname" => options.app_name = Some(value.clone()),
                "connecttimeoutms" => {
                    options.connect_timeout = parse_millis(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| bad("milliseconds above 0"))?
                }
                "serverselectiontimeoutms" => {
                    options.server_selection_timeout =
                        parse_millis(&value).ok_or_else(|| bad("milliseconds"))?
                }
                "heartbeatfrequencyms" => {
                    let frequency = parse_millis(&value).ok_or_else(|| bad("milliseconds"))?;
                    if frequency < HEARTBEAT_FREQUENCY_MIN {
                        return Err(bad("at least 500 milliseconds"));
                    }
                    options.heartbeat_frequency = frequency;
                }
                "localthresholdms" => {
                    options.local_threshold =
                        parse_millis(&value).ok_or_else(|| bad("milliseconds"))?
                }
                "maxpoolsize" => {
                    options.channels_per_server = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=CHANNELS_PER_SERVER_MAX).contains(n))
                        .ok_or_else(|| bad("a number from 1 to 64"))?
                }
                _ => return Err(Error::invalid_uri(format!("unknown option '{key}'"))),
            }
        }
        if write_concern != WriteConcern::default() {
            options.inherited.write_concern = Some(write_concern);
        }
        match read_preference_mode {
            Some(mode) => {
                if mode == ReadPreferenceMode::Primary
                    && (!tag_sets.is_empty() || max_staleness.is_some())
                {
                    return Err(Error::invalid_uri(
                        "readPreferenceTags and maxStalenessSeconds cannot be used with readPreference=primary",
                    ));
                }
                options.inherited.read_preference = Some(ReadPreference {
                    mode,
                    tag_sets,
                    max_staleness,
                });
            }
            None if !tag_sets.is_empty() || max_staleness.is_some() => {
                return Err(Error::invalid_uri(
                    "readPreferenceTags and maxStalenessSeconds need a readPreference",
                ));
            }
            None => {}
        }
        if options.direct_connection == Some(true) && options.hosts.len() > 1 {
            return Err(Error::invalid_uri(
                "directConnection=true needs exactly one host",
            ));
        }
        Ok(options)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_millis(value: &str) -> Option<Duration> {
    value.parse::<u64>().ok().map(Duration::from_millis)
}

/// `dc:ny,rack:1` as `{dc: "ny", rack: "1"}`; the empty string is the empty tag set.
fn parse_tag_set(value: &str) -> Option<Document> {
    let mut tags = Document::new();
    for pair in value.split(',').filter(|pair| !pair.is_empty()) {
        let (tag, tag_value) = pair.split_once(':')?;
        tags.insert(tag, tag_value);
    }
    Some(tags)
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| Error::invalid_uri(format!("bad percent-encoding in '{text}'")))?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| Error::invalid_uri(format!("'{text}' is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn full_connection_string() {
        let options = ClientOptions::parse(
            "cairn://a.example:1,B.example,[::1]:3/app?replicaSet=rs0&readPreference=secondaryPreferred\
             &readPreferenceTags=dc:ny,rack:1&readPreferenceTags=&maxStalenessSeconds=120&w=majority\
             &journal=true&wtimeoutMS=2500&readConcernLevel=majority&appName=tests&serverSelectionTimeoutMS=500\
             &heartbeatFrequencyMS=1000&localThresholdMS=5&maxPoolSize=4&connectTimeoutMS=100",
        )
        .unwrap();
        assert_eq!(
            options.hosts,
            vec![
                ServerAddress::new("a.example", 1),
                ServerAddress::new("b.example", DEFAULT_PORT),
                ServerAddress::new("::1", 3)
            ]
        );
        assert_eq!(options.hosts[2].to_string(), "[::1]:3");
        assert_eq!(options.replica_set.as_deref(), Some("rs0"));
        assert_eq!(options.default_database.as_deref(), Some("app"));
        assert_eq!(
            options.inherited.read_preference,
            Some(ReadPreference {
                mode: ReadPreferenceMode::SecondaryPreferred,
                tag_sets: vec![doc! {"dc": "ny", "rack": "1"}, doc! {}],
                max_staleness: Some(Duration::from_secs(120)),
            })
        );
        assert_eq!(
            options.inherited.write_concern,
            Some(
                WriteConcern::majority()
                    .with_journal(true)
                    .with_timeout(Duration::from_millis(2500))
            )
        );
        assert_eq!(
            options.inherited.read_concern,
            Some(ReadConcern::majority())
        );
        assert_eq!(options.app_name.as_deref(), Some("tests"));
        assert_eq!(options.server_selection_timeout, Duration::from_millis(500));
        assert_eq!(options.heartbeat_frequency, Duration::from_secs(1));
        assert_eq!(options.local_threshold, Duration::from_millis(5));
        assert_eq!(options.channels_per_server, 4);
        assert_eq!(options.connect_timeout, Duration::from_millis(100));
    }

    #[test]
    fn minimal_strings_and_mongodb_scheme() {
        let options = ClientOptions::parse("mongodb://localhost").unwrap();
        assert_eq!(options.hosts, vec![ServerAddress::new("localhost", 27027)]);
        assert_eq!(options.inherited, Inherited::default());
        assert_eq!(options.default_database, None);
        let options = ClientOptions::parse("cairn://h:1/?w=2").unwrap();
        assert_eq!(
            options.inherited.write_concern,
            Some(WriteConcern::nodes(2))
        );
        let options = ClientOptions::parse("cairn://h:1,h:1/my%20db").unwrap_err();
        assert!(
            options.to_string().contains("invalid database name"),
            "{options}"
        );
        let options = ClientOptions::parse("cairn://h:1,h:1/?W=1&ReadConcernLevel=local").unwrap();
        assert_eq!(options.hosts.len(), 1, "duplicate seeds are merged");
        assert_eq!(options.inherited.read_concern, Some(ReadConcern::local()));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        let cases = [
            ("http://h", "must start with"),
            ("cairn://", "no host"),
            ("cairn://user:pw@h", "credentials"),
            ("cairn://h:0", "port"),
            ("cairn://h:99999", "port"),
            ("cairn://::1", "brackets"),
            ("cairn://h?w=1", "'/'"),
            (
                "cairn://h/?readPreference=fastest",
                "readPreference=fastest",
            ),
            ("cairn://h/?journal=yes", "journal=yes"),
            ("cairn://h/?wtimeoutMS=-1", "wtimeoutMS"),
            ("cairn://h/?bogus=1", "unknown option 'bogus'"),
            (
                "cairn://h/?readPreferenceTags=dc:ny",
                "need a readPreference",
            ),
            (
                "cairn://h/?readPreference=primary&maxStalenessSeconds=100",
                "primary",
            ),
            ("cairn://a,b/?directConnection=true", "exactly one host"),
            ("cairn://h/?heartbeatFrequencyMS=10", "500"),
            ("cairn://h/?w", "has no value"),
            ("cairn://h/%zz", "percent"),
        ];
        for (uri, expected) in cases {
            let error = ClientOptions::parse(uri).expect_err(uri);
            assert!(
                matches!(error.kind(), crate::ErrorKind::InvalidUri { .. }),
                "{uri}"
            );
            assert!(error.to_string().contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn server_address_parsing() {
        assert_eq!(
            ServerAddress::parse("h").unwrap(),
            ServerAddress::new("h", 27027)
        );
        assert_eq!(
            ServerAddress::parse("H:5").unwrap(),
            ServerAddress::new("h", 5)
        );
        assert_eq!(
            ServerAddress::parse("[fe80::1]").unwrap(),
            ServerAddress::new("fe80::1", 27027)
        );
        assert!(ServerAddress::parse("[fe80::1").is_err());
        assert!(ServerAddress::parse(":5").is_err());
        assert_eq!(ServerAddress::new("h", 5).endpoint_uri(), "http://h:5");
    }
}
