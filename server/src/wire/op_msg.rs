//! OP_MSG (2013): `flagBits` (uint32), then sections up to the optional CRC-32C checksum.
//!
//! - Flag bits 0-15 are required: a receiver must refuse a message with one it does not know
//!   (IllegalOpMsgFlag, 223). Known: checksumPresent (bit 0: the last four bytes are the CRC-32C
//!   of everything before them; a mismatch closes the connection) and moreToCome (bit 1: the
//!   sender expects no reply; drivers send w:0 writes and endSessions this way). Bits 16-31 are
//!   optional; exhaustAllowed (bit 16) is accepted and ignored: replies never stream.
//! - Section kind 0 is the body, a command document, exactly once. Kind 1 is a document sequence
//!   (int32 size, identifier cstring, documents), merged into the command as an array field named
//!   by the identifier: `{insert: "c", $db: "d"}` + sequence `documents` = `{insert: "c", $db:
//!   "d", documents: [...]}`.
//! - A reply is one kind-0 section, with a checksum when the request had one (as mongod does).

use super::ReplyTo;
use super::document::read_document;
use super::frame::{HEADER_SIZE_BYTES, MESSAGE_SIZE_MAX_BYTES, op_code, read_i32, write_header};
use bson::{Bson, Document};
use cairn_types::{Error, ErrorCode};

pub const FLAG_CHECKSUM_PRESENT: u32 = 1 << 0;
pub const FLAG_MORE_TO_COME: u32 = 1 << 1;
pub const FLAG_EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits a receiver must understand.
const FLAGS_REQUIRED_MASK: u32 = 0xFFFF;
const FLAGS_REQUIRED_KNOWN: u32 = FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME;

const FLAG_BITS_SIZE_BYTES: usize = 4;
const CHECKSUM_SIZE_BYTES: usize = 4;
const SECTION_KIND_BODY: u8 = 0;
const SECTION_KIND_DOCUMENT_SEQUENCE: u8 = 1;

/// The flag bits of an OP_MSG; `Err` (close the connection) when the message is too short to
/// hold them.
pub fn read_flags(message: &[u8]) -> Result<u32, String> {
    if message.len() < HEADER_SIZE_BYTES + FLAG_BITS_SIZE_BYTES {
        return Err(format!(
            "OP_MSG of {} bytes has no room for its flag bits",
            message.len()
        ));
    }
    Ok(read_i32(message, HEADER_SIZE_BYTES) as u32)
}

/// How a request with these flags is answered.
pub fn reply_to(flags: u32) -> ReplyTo {
    if flags & FLAG_MORE_TO_COME != 0 {
        ReplyTo::Nothing
    } else {
        ReplyTo::OpMsg {
            checksum: flags & FLAG_CHECKSUM_PRESENT != 0,
        }
    }
}

fn protocol_error(message: String) -> Error {
    Error::new(ErrorCode::ProtocolError, message)
}

/// Parses a whole OP_MSG (header included) into its command document, sequences merged.
///
/// The outer `Err` closes the connection: the checksum does not match (or has no room), so no
/// byte of the message can be trusted. The inner `Err` is the `{ok: 0}` answer to a message
/// that is framed but not a valid request.
pub fn parse(message: &[u8], flags: u32) -> Result<Result<Document, Error>, String> {
    assert!(
        message.len() >= HEADER_SIZE_BYTES + FLAG_BITS_SIZE_BYTES,
        "read_flags checked the length"
    );
    let mut end = message.len();
    if flags & FLAG_CHECKSUM_PRESENT != 0 {
        if end < HEADER_SIZE_BYTES + FLAG_BITS_SIZE_BYTES + CHECKSUM_SIZE_BYTES {
            return Err("OP_MSG has checksumPresent set but no room for a checksum".to_owned());
        }
        end -= CHECKSUM_SIZE_BYTES;
        let expected = read_i32(message, end) as u32;
        let actual = crc32c::crc32c(&message[..end]);
        if expected != actual {
            return Err(format!(
                "OP_MSG checksum mismatch: the message carries {expected:#010x}, its bytes give {actual:#010x}"
            ));
        }
    }
    Ok(parse_sections(message, flags, end))
}

fn parse_sections(message: &[u8], flags: u32, end: usize) -> Result<Document, Error> {
    let unknown_required = flags & FLAGS_REQUIRED_MASK & !FLAGS_REQUIRED_KNOWN;
    if unknown_required != 0 {
        return Err(Error::new(
            ErrorCode::IllegalOpMsgFlag,
            format!(
                "Message contains illegal flags value: {flags:#x} (unknown required bits {unknown_required:#x})"
            ),
        ));
    }
    let mut body: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Document>)> = Vec::new();
    let mut offset = HEADER_SIZE_BYTES + FLAG_BITS_SIZE_BYTES;
    while offset < end {
        let kind = message[offset];
        offset += 1;
        match kind {
            SECTION_KIND_BODY => {
                if body.is_some() {
                    return Err(Error::new(
                        ErrorCode::Location(40430),
                        "Multiple body sections in message",
                    ));
                }
                let (document, length) = read_document(&message[offset..end])?;
                body = Some(document);
                offset += length;
            }
            SECTION_KIND_DOCUMENT_SEQUENCE => {
                let (name, documents, length) = read_sequence(&message[offset..end])?;
                if sequences.iter().any(|(existing, _)| *existing == name) {
                    return Err(Error::new(
                        ErrorCode::Location(40431),
                        format!("Duplicate document sequence: {name}"),
                    ));
                }
                sequences.push((name, documents));
                offset += length;
            }
            other => {
                return Err(Error::new(
                    ErrorCode::Location(40432),
                    format!("Unknown section kind {other}"),
                ));
            }
        }
    }
    assert_eq!(offset, end, "sections are read up to the end exactly");
    let Some(mut body) = body else {
        return Err(Error::new(
            ErrorCode::Location(40587),
            "OP_MSG messages must have a body",
        ));
    };
    for (name, documents) in sequences {
        if body.contains_key(&name) {
            return Err(Error::new(
                ErrorCode::Location(40433),
                format!("Duplicate field between body and document sequence {name}"),
            ));
        }
        body.insert(
            name,
            Bson::Array(documents.into_iter().map(Bson::Document).collect()),
        );
    }
    Ok(body)
}

/// A kind-1 section's payload at the start of `bytes`: identifier, documents, payload length.
fn read_sequence(bytes: &[u8]) -> Result<(String, Vec<Document>, usize), Error> {
    if bytes.len() < 4 {
        return Err(protocol_error(
            "document sequence has no room for its size".to_owned(),
        ));
    }
    let size = read_i32(bytes, 0);
    if size < 5 || size as usize > bytes.len() {
        return Err(protocol_error(format!(
            "document sequence size {size} does not fit the {} bytes left",
            bytes.len()
        )));
    }
    let section = &bytes[..size as usize];
    let Some(name_length) = section[4..].iter().position(|&byte| byte == 0) else {
        return Err(protocol_error(
            "document sequence identifier is not terminated".to_owned(),
        ));
    };
    let name = std::str::from_utf8(&section[4..4 + name_length])
        .map_err(|_| {
            Error::new(
                ErrorCode::InvalidBSON,
                "document sequence identifier is not UTF-8",
            )
        })?
        .to_owned();
    let mut offset = 4 + name_length + 1;
    let mut documents = Vec::new();
    while offset < section.len() {
        let (document, length) = read_document(&section[offset..])?;
        documents.push(document);
        offset += length;
    }
    Ok((name, documents, section.len()))
}

/// Encodes an OP_MSG with one body section (and a checksum if asked). `Err` when the document
/// does not serialize or the message would be over the size limit.
fn encode(
    request_id: i32,
    response_to: i32,
    flags: u32,
    body: &Document,
    sequences: &[(&str, &[Document])],
) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; HEADER_SIZE_BYTES + FLAG_BITS_SIZE_BYTES];
    bytes[HEADER_SIZE_BYTES..].copy_from_slice(&flags.to_le_bytes());
    bytes.push(SECTION_KIND_BODY);
    body.to_writer(&mut bytes)
        .map_err(|error| Error::internal(format!("reply does not serialize: {error}")))?;
    for (name, documents) in sequences {
        bytes.push(SECTION_KIND_DOCUMENT_SEQUENCE);
        let start = bytes.len();
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        for document in documents.iter() {
            document.to_writer(&mut bytes).map_err(|error| {
                Error::internal(format!("document does not serialize: {error}"))
            })?;
        }
        let size = (bytes.len() - start) as i32;
        bytes[start..start + 4].copy_from_slice(&size.to_le_bytes());
    }
    let checksum = flags & FLAG_CHECKSUM_PRESENT != 0;
    let length = bytes.len() + if checksum { CHECKSUM_SIZE_BYTES } else { 0 };
    if length > MESSAGE_SIZE_MAX_BYTES {
        return Err(Error::new(
            ErrorCode::BSONObjectTooLarge,
            format!(
                "message of {length} bytes is over the limit of {MESSAGE_SIZE_MAX_BYTES} bytes"
            ),
        ));
    }
    write_header(&mut bytes, length, request_id, response_to, op_code::MSG);
    if checksum {
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    assert_eq!(bytes.len(), length, "the header's length is the message's");
    Ok(bytes)
}

/// The reply to request `response_to`.
pub fn encode_reply(
    response_id: i32,
    response_to: i32,
    reply: &Document,
    checksum: bool,
) -> Result<Vec<u8>, Error> {
    let flags = if checksum { FLAG_CHECKSUM_PRESENT } else { 0 };
    encode(response_id, response_to, flags, reply, &[])
}

/// A request, as a client sends it: a body, document sequences, flag bits (tests and tools).
pub fn encode_request(
    request_id: i32,
    flags: u32,
    body: &Document,
    sequences: &[(&str, &[Document])],
) -> Result<Vec<u8>, Error> {
    encode(request_id, 0, flags, body, sequences)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::parse_header;
    use crate::wire::{Decoded, Message, decode};
    use bson::doc;

    fn message(bytes: Vec<u8>) -> Message {
        let mut header = [0u8; HEADER_SIZE_BYTES];
        header.copy_from_slice(&bytes[..HEADER_SIZE_BYTES]);
        Message {
            header: parse_header(&header).unwrap(),
            bytes,
        }
    }

    fn decoded(bytes: Vec<u8>) -> Result<Decoded, String> {
        decode(&message(bytes))
    }

    fn refused_code(bytes: Vec<u8>) -> ErrorCode {
        match decoded(bytes) {
            Ok(Decoded::Refused { error, reply_to }) => {
                assert_eq!(reply_to, ReplyTo::OpMsg { checksum: false });
                error.code
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn body_and_sequences_merge_into_the_command() {
        let documents = [doc! {"_id": 1}, doc! {"_id": 2, "a": "x"}];
        let bytes = encode_request(
            9,
            0,
            &doc! {"insert": "c", "$db": "d"},
            &[("documents", &documents[..])],
        )
        .unwrap();
        assert_eq!(
            decoded(bytes).unwrap(),
            Decoded::Command {
                command: doc! {"insert": "c", "$db": "d", "documents": [{"_id": 1}, {"_id": 2, "a": "x"}]},
                reply_to: ReplyTo::OpMsg { checksum: false },
            }
        );
        // An empty sequence is an empty array.
        let bytes = encode_request(
            9,
            0,
            &doc! {"insert": "c", "$db": "d"},
            &[("documents", &[])],
        )
        .unwrap();
        assert!(
            matches!(decoded(bytes).unwrap(), Decoded::Command { command, .. } if command.get_array("documents").unwrap().is_empty())
        );
    }

    #[test]
    fn checksums_are_verified_and_echoed() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let bytes = encode_request(3, FLAG_CHECKSUM_PRESENT, &body, &[]).unwrap();
        assert_eq!(
            decoded(bytes.clone()).unwrap(),
            Decoded::Command {
                command: body.clone(),
                reply_to: ReplyTo::OpMsg { checksum: true }
            }
        );
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decoded(damaged).unwrap_err().contains("checksum mismatch"));
        let mut damaged = bytes;
        damaged[25] ^= 1;
        assert!(decoded(damaged).unwrap_err().contains("checksum mismatch"));

        let reply = encode_reply(4, 3, &doc! {"ok": 1.0}, true).unwrap();
        let length = reply.len();
        assert_eq!(
            crc32c::crc32c(&reply[..length - 4]).to_le_bytes(),
            reply[length - 4..]
        );
        assert_eq!(read_i32(&reply, 8), 3, "responseTo is the request's id");
        assert_eq!(read_flags(&reply).unwrap(), FLAG_CHECKSUM_PRESENT);
    }

    #[test]
    fn more_to_come_gets_no_reply_and_bad_ones_close() {
        let body = doc! {"insert": "c", "$db": "d", "writeConcern": {"w": 0}};
        let bytes = encode_request(5, FLAG_MORE_TO_COME, &body, &[]).unwrap();
        assert_eq!(
            decoded(bytes).unwrap(),
            Decoded::Command {
                command: body,
                reply_to: ReplyTo::Nothing
            }
        );
        let mut bytes = encode_request(5, FLAG_MORE_TO_COME, &doc! {}, &[]).unwrap();
        bytes[20] = 7;
        assert!(decoded(bytes).unwrap_err().contains("moreToCome"));
        // exhaustAllowed is optional and ignored.
        let bytes = encode_request(5, FLAG_EXHAUST_ALLOWED, &doc! {"hello": 1}, &[]).unwrap();
        assert!(matches!(decoded(bytes).unwrap(), Decoded::Command { .. }));
    }

    #[test]
    fn malformed_messages_are_refused_with_codes() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let good = encode_request(1, 0, &body, &[]).unwrap();

        let bytes = encode_request(1, 1 << 5, &body, &[]).unwrap();
        assert_eq!(refused_code(bytes), ErrorCode::IllegalOpMsgFlag);

        let mut bytes = good.clone();
        bytes[20] = 2;
        assert_eq!(refused_code(bytes), ErrorCode::Location(40432));

        let mut bytes = good.clone();
        bytes[21] = 0xff; // the body's length byte
        assert_eq!(refused_code(bytes), ErrorCode::InvalidBSON);

        let mut bytes = good.clone();
        bytes.extend_from_slice(&good[20..]);
        let length = bytes.len() as i32;
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        assert_eq!(refused_code(bytes), ErrorCode::Location(40430));

        let mut bytes = good[..20].to_vec();
        bytes[..4].copy_from_slice(&20i32.to_le_bytes());
        assert_eq!(refused_code(bytes), ErrorCode::Location(40587));

        let documents = [doc! {"_id": 1}];
        let bytes =
            encode_request(1, 0, &body, &[("d", &documents[..]), ("d", &documents[..])]).unwrap();
        assert_eq!(refused_code(bytes), ErrorCode::Location(40431));
        let bytes = encode_request(1, 0, &body, &[("ping", &documents[..])]).unwrap();
        assert_eq!(refused_code(bytes), ErrorCode::Location(40433));

        // A sequence whose size runs past the end, or whose identifier is not terminated.
        let mut bytes = encode_request(1, 0, &body, &[("documents", &documents[..])]).unwrap();
        let sequence_size_at = good.len() + 1;
        bytes[sequence_size_at..sequence_size_at + 4].copy_from_slice(&1000i32.to_le_bytes());
        assert_eq!(refused_code(bytes), ErrorCode::ProtocolError);
        let mut bytes = good.clone();
        bytes.extend_from_slice(&[1, 7, 0, 0, 0, b'a', b'b']);
        let length = bytes.len() as i32;
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        assert_eq!(refused_code(bytes), ErrorCode::ProtocolError);

        // No room for flags closes.
        let mut bytes = good[..18].to_vec();
        bytes[..4].copy_from_slice(&18i32.to_le_bytes());
        assert!(decoded(bytes).unwrap_err().contains("flag bits"));
    }
}
