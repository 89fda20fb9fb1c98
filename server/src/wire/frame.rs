//! Message framing: the standard header (`messageLength`, `requestID`, `responseTo`, `opCode`,
//! four little-endian int32s) and reading one whole message off a stream.
//!
//! A message's length is checked against [`MESSAGE_SIZE_MAX_BYTES`] and its opcode against the
//! ones cairn serves before a single byte of its body is read; the body buffer grows as bytes
//! arrive, so a peer that announces 48 MB and sends nothing holds only
//! [`MESSAGE_BUFFER_INITIAL_BYTES`].

use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of the standard message header.
pub const HEADER_SIZE_BYTES: usize = 16;

/// Largest message accepted (and sent): MongoDB's maxMessageSizeBytes, 48,000,000 bytes.
pub const MESSAGE_SIZE_MAX_BYTES: usize = cairn_types::limits::MESSAGE_SIZE_MAX_BYTES;

/// Initial capacity of a message buffer.
pub const MESSAGE_BUFFER_INITIAL_BYTES: usize = 64 * 1024;

/// MongoDB's opcodes.
pub mod op_code {
    /// A reply to OP_QUERY.
    pub const REPLY: i32 = 1;
    /// Legacy writes and reads, removed in MongoDB 6.0.
    pub const UPDATE: i32 = 2001;
    pub const INSERT: i32 = 2002;
    /// Legacy query; still used on `<db>.$cmd` for the handshake.
    pub const QUERY: i32 = 2004;
    pub const GET_MORE: i32 = 2005;
    pub const DELETE: i32 = 2006;
    pub const KILL_CURSORS: i32 = 2007;
    /// A compressed message: only after a compressor has been negotiated (cairn offers none).
    pub const COMPRESSED: i32 = 2012;
    /// The message of every modern command.
    pub const MSG: i32 = 2013;
}

/// The standard message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// Total message size in bytes, the header included.
    pub message_length: usize,
    pub request_id: i32,
    pub response_to: i32,
    pub op_code: i32,
}

/// One whole message: its header, and all of its bytes (the header's included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: MessageHeader,
    pub bytes: Vec<u8>,
}

/// Reads a little-endian int32 at `offset`; the caller has checked the bounds.
pub(crate) fn read_i32(bytes: &[u8], offset: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    i32::from_le_bytes(word)
}

/// Parses and checks a header. `Err` says why the connection must be closed.
pub fn parse_header(bytes: &[u8; HEADER_SIZE_BYTES]) -> Result<MessageHeader, String> {
    let length = read_i32(bytes, 0);
    let header = MessageHeader {
        message_length: 0,
        request_id: read_i32(bytes, 4),
        response_to: read_i32(bytes, 8),
        op_code: read_i32(bytes, 12),
    };
    if length < HEADER_SIZE_BYTES as i32 {
        return Err(format!(
            "message length {length} is below the header size of {HEADER_SIZE_BYTES} bytes"
        ));
    }
    if length as usize > MESSAGE_SIZE_MAX_BYTES {
        return Err(format!(
            "message length {length} is over the limit of {MESSAGE_SIZE_MAX_BYTES} bytes"
        ));
    }
    match header.op_code {
        op_code::MSG | op_code::QUERY => {}
        op_code::COMPRESSED => {
            return Err("OP_COMPRESSED received, but no compressor was negotiated \
                        (cairn advertises none)"
                .to_owned());
        }
        legacy @ (op_code::REPLY
        | op_code::UPDATE
        | op_code::INSERT
        | op_code::GET_MORE
        | op_code::DELETE
        | op_code::KILL_CURSORS) => {
            return Err(format!(
                "legacy opcode {legacy} is not supported (MongoDB 6.0 removed it); use OP_MSG"
            ));
        }
        unknown => return Err(format!("unknown opcode {unknown}")),
    }
    Ok(MessageHeader {
        message_length: length as usize,
        ..header
    })
}

/// Why reading a message stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer broke the framing (see [`parse_header`]) or closed inside a message.
    Bad(String),
    /// The connection failed (reset, ...).
    Io(std::io::Error),
}

/// Reads until `buffer` is full or the stream ends; returns how many bytes were read.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Reads one message. `prefix` holds bytes of it already taken off the stream (the protocol
/// detection's). `Ok(None)`: the peer closed the connection between messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    prefix: &[u8],
) -> Result<Option<Message>, ReadError> {
    assert!(
        prefix.len() <= HEADER_SIZE_BYTES,
        "a prefix is part of the header"
    );
    let mut header_bytes = [0u8; HEADER_SIZE_BYTES];
    header_bytes[..prefix.len()].copy_from_slice(prefix);
    let read = fill(reader, &mut header_bytes[prefix.len()..])
        .await
        .map_err(ReadError::Io)?;
    let header_read = prefix.len() + read;
    if header_read == 0 {
        return Ok(None);
    }
    if header_read < HEADER_SIZE_BYTES {
        return Err(ReadError::Bad(format!(
            "connection closed inside a message header ({header_read} of {HEADER_SIZE_BYTES} bytes)"
        )));
    }
    let header = parse_header(&header_bytes).map_err(ReadError::Bad)?;
    let mut bytes = Vec::with_capacity(header.message_length.min(MESSAGE_BUFFER_INITIAL_BYTES));
    bytes.extend_from_slice(&header_bytes);
    let body_length = header.message_length - HEADER_SIZE_BYTES;
    let body_read = reader
        .take(body_length as u64)
        .read_to_end(&mut bytes)
        .await
        .map_err(ReadError::Io)?;
    if body_read < body_length {
        return Err(ReadError::Bad(format!(
            "connection closed inside a message ({} of {} bytes)",
            HEADER_SIZE_BYTES + body_read,
            header.message_length
        )));
    }
    assert_eq!(
        bytes.len(),
        header.message_length,
        "a message is read whole"
    );
    Ok(Some(Message { header, bytes }))
}

/// Writes a header for a message of `message_length` bytes at the start of `bytes`.
pub(crate) fn write_header(
    bytes: &mut [u8],
    message_length: usize,
    request_id: i32,
    response_to: i32,
    op_code: i32,
) {
    assert!(
        message_length <= MESSAGE_SIZE_MAX_BYTES,
        "messages are checked against the size limit before they are sent"
    );
    bytes[0..4].copy_from_slice(&(message_length as i32).to_le_bytes());
    bytes[4..8].copy_from_slice(&request_id.to_le_bytes());
    bytes[8..12].copy_from_slice(&response_to.to_le_bytes());
    bytes[12..16].copy_from_slice(&op_code.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: i32, op: i32) -> [u8; HEADER_SIZE_BYTES] {
        let mut bytes = [0u8; HEADER_SIZE_BYTES];
        bytes[0..4].copy_from_slice(&length.to_le_bytes());
        bytes[4..8].copy_from_slice(&7i32.to_le_bytes());
        bytes[12..16].copy_from_slice(&op.to_le_bytes());
        bytes
    }

    #[test]
    fn header_limits_and_opcodes() {
        let parsed = parse_header(&header(21, op_code::MSG)).unwrap();
        assert_eq!(
            parsed,
            MessageHeader {
                message_length: 21,
                request_id: 7,
                response_to: 0,
                op_code: op_code::MSG
            }
        );
        assert!(parse_header(&header(16, op_code::QUERY)).is_ok());
        assert!(
            parse_header(&header(15, op_code::MSG))
                .unwrap_err()
                .contains("below")
        );
        assert!(
            parse_header(&header(-1, op_code::MSG))
                .unwrap_err()
                .contains("below")
        );
        assert!(parse_header(&header(48_000_000, op_code::MSG)).is_ok());
        assert!(
            parse_header(&header(48_000_001, op_code::MSG))
                .unwrap_err()
                .contains("over")
        );
        assert!(
            parse_header(&header(100, op_code::COMPRESSED))
                .unwrap_err()
                .contains("OP_COMPRESSED")
        );
        assert!(
            parse_header(&header(100, op_code::INSERT))
                .unwrap_err()
                .contains("legacy")
        );
        assert!(
            parse_header(&header(100, 9999))
                .unwrap_err()
                .contains("unknown opcode")
        );
        // The HTTP/2 preface read as a header is over the limit: the protocols never collide.
        let mut preface = [0u8; HEADER_SIZE_BYTES];
        preface.copy_from_slice(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..HEADER_SIZE_BYTES]);
        assert!(
            parse_header(&preface)
                .unwrap_err()
                .contains("over the limit")
        );
    }

    #[tokio::test]
    async fn reads_whole_messages_and_reports_truncation() {
        let mut message = header(20, op_code::MSG).to_vec();
        message.extend_from_slice(&[1, 2, 3, 4]);
        let mut two = message.clone();
        two.extend_from_slice(&message);
        let mut reader = &two[..];
        let first = read_message(&mut reader, &[]).await.unwrap().unwrap();
        assert_eq!(first.bytes, message);
        // The second starts with a prefix already taken off the stream.
        let (prefix, rest) = reader.split_at(4);
        let mut rest = rest;
        let second = read_message(&mut rest, prefix).await.unwrap().unwrap();
        assert_eq!(second.bytes, message);
        assert!(read_message(&mut rest, &[]).await.unwrap().is_none());

        let mut short = &message[..10];
        assert!(
            matches!(read_message(&mut short, &[]).await, Err(ReadError::Bad(reason)) if reason.contains("header"))
        );
        let mut short = &message[..18];
        assert!(
            matches!(read_message(&mut short, &[]).await, Err(ReadError::Bad(reason)) if reason.contains("18 of 20"))
        );
    }
}
