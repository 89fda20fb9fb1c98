//! MongoDB's wire protocol on cairnd's port: mongosh, pymongo and the official drivers talk to
//! the same command dispatcher as the gRPC transport ([`crate::Node::run_command`]), one
//! implementation of every command, two framings.
//!
//! What this module owns:
//! - `frame`: the 16-byte message header, reading one whole message off a stream, the limits;
//! - `op_msg`: OP_MSG (2013): flag bits, section kinds 0 (body) and 1 (document sequences, merged
//!   into the command as arrays), CRC-32C checksums; replies;
//! - `op_query`: legacy OP_QUERY (2004) on `<db>.$cmd` (the handshake of older clients and of
//!   mongosh), answered with OP_REPLY (1);
//! - `document`: BSON documents off the wire, nesting depth checked before anything recurses;
//! - `connection`: one connection's task: read, decode, run on a blocking thread, reply.
//!
//! Which connections come here is decided in `crate::serve`: the first four bytes of a
//! connection are either the HTTP/2 client preface (`PRI `, gRPC) or a message length, and the
//! preface read as a little-endian length is 541,676,112, over [`frame::MESSAGE_SIZE_MAX_BYTES`],
//! so the two never collide ([`is_http2_preface`]).
//!
//! Bad input never crashes the node and never disturbs another connection. A message that cannot
//! be framed (length below 16 or over 48 MB, an unknown or unsupported opcode such as
//! OP_COMPRESSED, which cairn never advertises, a stream that ends inside a message, a bad
//! checksum) or that asked for no reply (moreToCome) gets a log line and its connection closed;
//! a message framed well enough to answer (an unknown section kind, a body that is not BSON, an
//! illegal flag bit, a namespace that is not `<db>.$cmd`) gets an `{ok: 0}` reply and the
//! connection goes on.
//!
//! Invariants: every reply answers exactly one request (`responseTo` is its `requestID`), and
//! none is sent for a moreToCome request; a connection runs one command at a time, in order.

mod connection;
pub(crate) use connection::kill;
pub mod document;
pub mod frame;
pub mod op_msg;
pub mod op_query;

pub(crate) use connection::serve_connection;

use bson::Document;
use cairn_types::Error;
use frame::{Message, op_code};
use std::sync::atomic::{AtomicI32, Ordering};

/// How many bytes of a new connection decide its protocol.
pub const PROTOCOL_DETECTION_BYTES: usize = 4;

/// The start of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const HTTP2_PREFACE_START: &[u8; PROTOCOL_DETECTION_BYTES] = b"PRI ";

/// Whether the first bytes of a connection are the HTTP/2 (gRPC) preface rather than a MongoDB
/// message header.
pub fn is_http2_preface(first: &[u8; PROTOCOL_DETECTION_BYTES]) -> bool {
    first == HTTP2_PREFACE_START
}

/// Resolves when the server is stopping (or its stop signal is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// How a request is to be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTo {
    /// An OP_MSG reply, with a checksum when the request had one.
    OpMsg { checksum: bool },
    /// An OP_MSG request with moreToCome: no reply at all.
    Nothing,
    /// An OP_REPLY; `query_failure` sets its QueryFailure flag (a query that is not a command).
    OpReply { query_failure: bool },
}

/// A message decoded into something to do.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A command document (with `$db`) to run.
    Command {
        command: Document,
        reply_to: ReplyTo,
    },
    /// A well-framed message that is not a valid request: answered with this error.
    Refused { error: Error, reply_to: ReplyTo },
}

/// Decodes one framed message. `Err` is the reason to close the connection: the message cannot
/// be answered (or asked for no answer) and the stream may not be trusted any more.
pub fn decode(message: &Message) -> Result<Decoded, String> {
    match message.header.op_code {
        op_code::MSG => {
            let flags = op_msg::read_flags(&message.bytes)?;
            let reply_to = op_msg::reply_to(flags);
            match op_msg::parse(&message.bytes, flags)? {
                Ok(command) => Ok(Decoded::Command { command, reply_to }),
                Err(error) if reply_to == ReplyTo::Nothing => Err(format!(
                    "{error} (in a moreToCome message, which cannot be answered)"
                )),
                Err(error) => Ok(Decoded::Refused { error, reply_to }),
            }
        }
        op_code::QUERY => Ok(op_query::parse(&message.bytes)),
        other => Err(format!(
            "opcode {other} reached decoding; only OP_MSG and OP_QUERY are framed"
        )),
    }
}

/// Request ids of the replies this node sends (unique per node process, as mongod's).
static NEXT_RESPONSE_ID: AtomicI32 = AtomicI32::new(1);

fn next_response_id() -> i32 {
    NEXT_RESPONSE_ID.fetch_add(1, Ordering::Relaxed)
}

/// The reply message to request `request_id` carrying `reply`, or `None` when none is due.
/// A reply document too large for a message is replaced by an error reply.
pub fn encode_reply(reply_to: ReplyTo, request_id: i32, reply: &Document) -> Option<Vec<u8>> {
    let response_id = next_response_id();
    let encode = |document: &Document| match reply_to {
        ReplyTo::Nothing => None,
        ReplyTo::OpMsg { checksum } => Some(op_msg::encode_reply(
            response_id,
            request_id,
            document,
            checksum,
        )),
        ReplyTo::OpReply { query_failure } => Some(op_query::encode_reply(
            response_id,
            request_id,
            document,
            query_failure,
        )),
    };
    match encode(reply)? {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "reply cannot be sent; answering with the error instead");
            let bytes =
                encode(&error.to_reply())?.expect("an error reply is small and always serializes");
            Some(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fuzz-style properties over the framing and decoding: random streams, random bodies behind
    //! sound headers, and mutated or truncated real requests never panic, and every decoded
    //! message is answered in its own framing.
    use super::frame::{HEADER_SIZE_BYTES, read_message};
    use super::*;
    use bson::{Bson, doc};
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Reads every message of `stream` as a connection would, decodes it and encodes a reply.
    /// Returns how many messages were framed.
    fn exercise(stream: &[u8]) -> usize {
        let mut reader = stream;
        let mut framed = 0;
        loop {
            let message = match futures::executor::block_on(read_message(&mut reader, &[])) {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => return framed,
            };
            framed += 1;
            assert_eq!(message.bytes.len(), message.header.message_length);
            assert!(message.bytes.len() >= HEADER_SIZE_BYTES);
            let (reply_to, reply) = match decode(&message) {
                Ok(Decoded::Command { command, reply_to }) => {
                    assert!(
                        command.contains_key("$db")
                            || reply_to
                                != ReplyTo::OpReply {
                                    query_failure: false
                                }
                    );
                    (reply_to, doc! {"ok": 1.0})
                }
                Ok(Decoded::Refused { error, reply_to }) => (reply_to, error.to_reply()),
                Err(_) => return framed,
            };
            let encoded = encode_reply(reply_to, message.header.request_id, &reply);
            assert_eq!(encoded.is_none(), reply_to == ReplyTo::Nothing);
            if let Some(bytes) = encoded {
                assert_eq!(
                    frame::read_i32(&bytes, 8),
                    message.header.request_id,
                    "a reply answers its request"
                );
            }
        }
    }

    /// A message with a sound header around `body`.
    fn framed(op_code: i32, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_SIZE_BYTES];
        bytes.extend_from_slice(body);
        let length = bytes.len();
        frame::write_header(&mut bytes, length, 42, 0, op_code);
        bytes
    }

    fn requests() -> Vec<Vec<u8>> {
        let documents = [doc! {"_id": 1, "a": [1, {"b": "x"}]}, doc! {"_id": 2}];
        vec![
            op_msg::encode_request(
                1,
                0,
                &doc! {"insert": "c", "$db": "d"},
                &[("documents", &documents[..])],
            )
            .unwrap(),
            op_msg::encode_request(
                2,
                op_msg::FLAG_CHECKSUM_PRESENT,
                &doc! {"ping": 1, "$db": "admin"},
                &[],
            )
            .unwrap(),
            op_msg::encode_request(
                3,
                op_msg::FLAG_MORE_TO_COME,
                &doc! {"endSessions": [], "$db": "admin"},
                &[],
            )
            .unwrap(),
            op_query::encode_request(4, 0, "admin.$cmd", &doc! {"isMaster": 1, "helloOk": true})
                .unwrap(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_streams_never_panic(stream in vec(any::<u8>(), 0..600)) {
            exercise(&stream);
        }

        #[test]
        fn random_bodies_behind_sound_headers_never_panic(
            op_code in prop_oneof![Just(frame::op_code::MSG), Just(frame::op_code::QUERY)],
            flags in prop_oneof![Just(0u32), Just(1u32), Just(2u32), Just(3u32), any::<u32>()],
            body in vec(any::<u8>(), 0..400),
        ) {
            let mut payload = flags.to_le_bytes().to_vec();
            payload.extend_from_slice(&body);
            prop_assert_eq!(exercise(&framed(op_code, &payload)), 1);
        }

        #[test]
        fn mutated_and_truncated_requests_never_panic(
            which in 0usize..4,
            mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            keep_length in any::<bool>(),
        ) {
            let mut bytes = requests()[which].clone();
            for (index, value) in mutations {
                let at = HEADER_SIZE_BYTES + index.index(bytes.len() - HEADER_SIZE_BYTES);
                bytes[at] = value;
            }
            let cut = HEADER_SIZE_BYTES + cut.index(bytes.len() - HEADER_SIZE_BYTES + 1);
            bytes.truncate(cut);
            if !keep_length {
                // A truncated message whose header says so: framed, then decoded.
                let length = bytes.len() as i32;
                bytes[..4].copy_from_slice(&length.to_le_bytes());
            }
            exercise(&bytes);
        }

        #[test]
        fn requests_round_trip(
            values in vec((0usize..4, any::<i32>()), 0..6),
            sequence_length in 0usize..4,
            checksum in any::<bool>(),
        ) {
            let keys = ["a", "b", "c", "d"];
            let mut body = doc! {"insert": "c", "$db": "d"};
            for (key, value) in &values {
                body.insert(keys[*key], *value);
            }
            let documents: Vec<_> = (0..sequence_length).map(|i| doc! {"_id": i as i64}).collect();
            let flags = if checksum { op_msg::FLAG_CHECKSUM_PRESENT } else { 0 };
            let bytes = op_msg::encode_request(7, flags, &body, &[("documents", &documents)]).unwrap();
            let mut header = [0u8; HEADER_SIZE_BYTES];
            header.copy_from_slice(&bytes[..HEADER_SIZE_BYTES]);
            let message = Message { header: frame::parse_header(&header).unwrap(), bytes };
            let mut expected = body.clone();
            expected.insert("documents", documents.into_iter().map(Bson::Document).collect::<Vec<_>>());
            prop_assert_eq!(
                decode(&message).unwrap(),
                Decoded::Command { command: expected, reply_to: ReplyTo::OpMsg { checksum } }
            );
        }
    }

    #[test]
    fn the_http2_preface_is_recognised() {
        assert!(is_http2_preface(b"PRI "));
        let header = op_msg::encode_request(1, 0, &doc! {"ping": 1}, &[]).unwrap();
        let mut first = [0u8; PROTOCOL_DETECTION_BYTES];
        first.copy_from_slice(&header[..PROTOCOL_DETECTION_BYTES]);
        assert!(!is_http2_preface(&first));
    }
}
