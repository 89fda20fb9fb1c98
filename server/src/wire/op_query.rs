//! Legacy OP_QUERY (2004) on `<db>.$cmd`, answered with OP_REPLY (1).
//!
//! Clients use it for the first handshake (`isMaster` with `helloOk`, mongosh among them); cairn
//! runs any command sent this way, as it would over OP_MSG. The command is the query document
//! (unwrapped from `{$query: ..., $readPreference: ...}` when wrapped), its `$db` the
//! namespace's database; the SecondaryOk flag becomes `$readPreference: secondaryPreferred`. A
//! query on any other namespace (a legacy find) is refused with QueryFailure, as MongoDB 6.0+
//! does. The skip, limit and field selector of a command query mean nothing and are ignored.

use super::document::read_document;
use super::frame::{HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES, op_code, read_i32, write_header};
use super::{Decoded, ReplyTo};
use bson::{Bson, Document, doc};
use cairn_types::{Error, ErrorCode};

/// OP_QUERY flag: reads may go to a secondary.
pub const QUERY_FLAG_SECONDARY_OK: i32 = 1 << 2;
/// OP_REPLY flag: the query failed; the document is `{$err, code}`.
pub const REPLY_FLAG_QUERY_FAILURE: i32 = 1 << 1;

/// The namespace suffix of commands.
const COMMAND_COLLECTION: &str = "$cmd";
/// OP_REPLY's fixed fields after the header: flags, cursorID, startingFrom, numberReturned.
const REPLY_PREFIX_SIZE_BYTES: usize = 4 + 8 + 4 + 4;

fn protocol_error(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ProtocolError, message)
}

/// Parses a whole OP_QUERY (header included). Never closes the connection: the message is
/// framed, so every problem is answered.
pub fn parse(message: &[u8]) -> Decoded {
    match parse_command(message) {
        Ok(command) => Decoded::Command {
            command,
            reply_to: ReplyTo::OpReply {
                query_failure: false,
            },
        },
        Err((error, query_failure)) => Decoded::Refused {
            error,
            reply_to: ReplyTo::OpReply { query_failure },
        },
    }
}

/// The command document, or the error and whether it is a query failure (not a command).
fn parse_command(message: &[u8]) -> Result<Document, (Error, bool)> {
    let command_error = |error: Error| (error, false);
    let mut offset = HEADER_SIZE_BYTES;
    if message.len() < offset + 4 {
        return Err(command_error(protocol_error(
            "OP_QUERY has no room for its flags",
        )));
    }
    let flags = read_i32(message, offset);
    offset += 4;
    let Some(name_length) = message[offset..].iter().position(|&byte| byte == 0) else {
        return Err(command_error(protocol_error(
            "OP_QUERY collection name is not terminated",
        )));
    };
    let namespace = std::str::from_utf8(&message[offset..offset + name_length])
        .map_err(|_| {
            command_error(Error::new(
                ErrorCode::InvalidNamespace,
                "OP_QUERY collection name is not UTF-8",
            ))
        })?
        .to_owned();
    offset += name_length + 1;
    if message.len() < offset + 8 {
        return Err(command_error(protocol_error(
            "OP_QUERY has no room for numberToSkip and numberToReturn",
        )));
    }
    offset += 8;
    let (query, length) = read_document(&message[offset..]).map_err(command_error)?;
    offset += length;
    if offset < message.len() {
        // The field selector: must be a document, and nothing may follow it.
        let (_, length) = read_document(&message[offset..]).map_err(command_error)?;
        if offset + length != message.len() {
            return Err(command_error(protocol_error(format!(
                "{} bytes after the end of OP_QUERY's documents",
                message.len() - offset - length
            ))));
        }
    }

    let (db, collection) = namespace.split_once('.').unwrap_or((&namespace, ""));
    if collection != COMMAND_COLLECTION {
        let name = query.keys().next().cloned().unwrap_or_default();
        return Err((
            Error::new(
                ErrorCode::Location(5739101),
                format!(
                    "Unsupported OP_QUERY on '{namespace}' (command '{name}'): legacy queries were \
                     removed in MongoDB 6.0; only commands on <db>.$cmd are served. The client \
                     driver may require an upgrade."
                ),
            ),
            true,
        ));
    }
    if db.is_empty() {
        return Err(command_error(Error::new(
            ErrorCode::InvalidNamespace,
            format!("Invalid namespace specified '{namespace}'"),
        )));
    }
    let mut command = unwrap_query(query);
    command.insert("$db", db);
    if flags & QUERY_FLAG_SECONDARY_OK != 0 && !command.contains_key("$readPreference") {
        command.insert("$readPreference", doc! {"mode": "secondaryPreferred"});
    }
    Ok(command)
}

/// `{$query: {...}, $readPreference: {...}}` (or `query`) becomes the inner command with the read
/// preference moved into it.
fn unwrap_query(mut query: Document) -> Document {
    let wrapped = matches!(
        query.iter().next(),
        Some((key, Bson::Document(_))) if key == "$query" || key == "query"
    );
    if !wrapped {
        return query;
    }
    let key = query.keys().next().cloned().expect("checked just above");
    let Some(Bson::Document(mut command)) = query.remove(&key) else {
        unreachable!("checked just above: the first field is a document");
    };
    if let Some(read_preference) = query.remove("$readPreference") {
        command.insert("$readPreference", read_preference);
    }
    command
}

/// The OP_REPLY to request `response_to`, carrying one document. With `query_failure`, the
/// QueryFailure flag is set and the document gets MongoDB's `$err` field.
pub fn encode_reply(
    response_id: i32,
    response_to: i32,
    reply: &Document,
    query_failure: bool,
) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; HEADER_SIZE_BYTES + REPLY_PREFIX_SIZE_BYTES];
    let flags = if query_failure {
        REPLY_FLAG_QUERY_FAILURE
    } else {
        0
    };
    bytes[HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + 4].copy_from_slice(&flags.to_le_bytes());
    // cursorID 0, startingFrom 0, numberReturned 1.
    bytes[HEADER_SIZE_BYTES + 16..].copy_from_slice(&1i32.to_le_bytes());
    let written = if query_failure && !reply.contains_key("$err") {
        let mut failure = doc! {"$err": reply.get_str("errmsg").unwrap_or("query failed")};
        failure.extend(reply.clone());
        failure.to_writer(&mut bytes)
    } else {
        reply.to_writer(&mut bytes)
    };
    written.map_err(|error| Error::internal(format!("reply does not serialize: {error}")))?;
    let length = bytes.len();
    if length > MESSAGE_SIZE_MAX_BYTES {
        return Err(Error::new(
            ErrorCode::BSONObjectTooLarge,
            format!("reply of {length} bytes is over the limit of {MESSAGE_SIZE_MAX_BYTES} bytes"),
        ));
    }
    write_header(&mut bytes, length, response_id, response_to, op_code::REPLY);
    Ok(bytes)
}

/// An OP_QUERY request as a client sends it (tests and tools).
pub fn encode_request(
    request_id: i32,
    flags: i32,
    namespace: &str,
    query: &Document,
) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; HEADER_SIZE_BYTES];
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(namespace.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&0i32.to_le_bytes());
    bytes.extend_from_slice(&(-1i32).to_le_bytes());
    query
        .to_writer(&mut bytes)
        .map_err(|error| Error::internal(format!("query does not serialize: {error}")))?;
    let length = bytes.len();
    write_header(&mut bytes, length, request_id, 0, op_code::QUERY);
    Ok(bytes)
}

/// The document of an OP_REPLY (header included) and its flags (tests and tools).
pub fn decode_reply(message: &[u8]) -> Result<(i32, Document), Error> {
    if message.len() < HEADER_SIZE_BYTES + REPLY_PREFIX_SIZE_BYTES {
        return Err(protocol_error("OP_REPLY too short"));
    }
    let flags = read_i32(message, HEADER_SIZE_BYTES);
    let (document, _) = read_document(&message[HEADER_SIZE_BYTES + REPLY_PREFIX_SIZE_BYTES..])?;
    Ok((flags, document))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_on_dollar_cmd_get_their_db() {
        let bytes = encode_request(
            1,
            0,
            "admin.$cmd",
            &doc! {"isMaster": 1, "helloOk": true, "client": {"application": {"name": "t"}}},
        )
        .unwrap();
        assert_eq!(
            parse(&bytes),
            Decoded::Command {
                command: doc! {"isMaster": 1, "helloOk": true, "client": {"application": {"name": "t"}}, "$db": "admin"},
                reply_to: ReplyTo::OpReply {
                    query_failure: false
                },
            }
        );
        // Wrapped, with a read preference, and SecondaryOk.
        let bytes = encode_request(
            1,
            QUERY_FLAG_SECONDARY_OK,
            "app.$cmd",
            &doc! {"$query": {"ping": 1, "$db": "other"}, "$readPreference": {"mode": "nearest"}},
        )
        .unwrap();
        assert!(matches!(parse(&bytes), Decoded::Command { command, .. }
            if command == doc! {"ping": 1, "$db": "app", "$readPreference": {"mode": "nearest"}}));
        let bytes =
            encode_request(1, QUERY_FLAG_SECONDARY_OK, "app.$cmd", &doc! {"ping": 1}).unwrap();
        assert!(matches!(parse(&bytes), Decoded::Command { command, .. }
            if command.get_document("$readPreference").unwrap() == &doc! {"mode": "secondaryPreferred"}));
    }

    #[test]
    fn legacy_queries_and_malformed_ones_are_refused() {
        let bytes = encode_request(1, 0, "app.users", &doc! {"name": "x"}).unwrap();
        let Decoded::Refused { error, reply_to } = parse(&bytes) else {
            panic!("refused");
        };
        assert_eq!(error.code, ErrorCode::Location(5739101));
        assert_eq!(
            reply_to,
            ReplyTo::OpReply {
                query_failure: true
            }
        );
        let reply = encode_reply(2, 1, &error.to_reply(), true).unwrap();
        let (flags, document) = decode_reply(&reply).unwrap();
        assert_eq!(flags, REPLY_FLAG_QUERY_FAILURE);
        assert!(
            document
                .get_str("$err")
                .unwrap()
                .contains("Unsupported OP_QUERY")
        );
        assert_eq!(read_i32(&reply, 8), 1);

        let good = encode_request(1, 0, "admin.$cmd", &doc! {"ping": 1}).unwrap();
        for (cut, code) in [
            (18, ErrorCode::ProtocolError),
            (good.len() - 3, ErrorCode::InvalidBSON),
            (30, ErrorCode::ProtocolError),
        ] {
            let mut bytes = good[..cut].to_vec();
            bytes[..4].copy_from_slice(&(cut as i32).to_le_bytes());
            assert!(
                matches!(parse(&bytes), Decoded::Refused { error, .. } if error.code == code),
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[5, 0, 0, 0, 0, 1]);
        assert!(
            matches!(parse(&trailing), Decoded::Refused { error, .. } if error.code == ErrorCode::ProtocolError)
        );
        let bytes = encode_request(1, 0, ".$cmd", &doc! {"ping": 1}).unwrap();
        assert!(
            matches!(parse(&bytes), Decoded::Refused { error, .. } if error.code == ErrorCode::InvalidNamespace)
        );
    }
}
