//! gRPC over HTTP/2 for cairn's one unary call, as the server and the driver both speak it.
//!
//! cairn serves and calls `cairn.v1.Cairn/RunCommand` directly on HTTP/2 (the `h2` crate)
//! rather than through a generic gRPC stack: a call is small and frequent, and a general stack's
//! per-call machinery (a task per call, a buffered channel to the connection, codecs and body
//! adapters) cost more CPU than the command itself. This module is the part of gRPC's protocol
//! both ends need: the length-prefixed message (uncompressed: cairn's encoding is `identity`),
//! the status in `grpc-status` and percent-encoded `grpc-message`, and `grpc-timeout`. The
//! generated tonic client and server in [`crate::v1`] speak the same protocol, so either end
//! works with them and with any other gRPC implementation.

use crate::GRPC_MESSAGE_SIZE_MAX_BYTES;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;
use tonic::{Code, Status};

/// The path of the one method.
pub const RUN_COMMAND_PATH: &str = "/cairn.v1.Cairn/RunCommand";
/// The content type of a call, both ways.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";
/// A message's prefix: the compressed flag (1 byte) and the length (4 bytes, big endian).
pub const MESSAGE_PREFIX_BYTES: usize = 5;

/// The field number of `document` in both `CommandRequest` and `CommandReply` (cairn.proto).
const DOCUMENT_FIELD: u32 = 1;

/// Room to leave in front of a document for [`frame_document`]: the gRPC prefix, the protobuf
/// key of the field and the longest length varint of a message under the limit.
pub const FRAME_HEAD_BYTES_MAX: usize = MESSAGE_PREFIX_BYTES + 1 + 5;

/// A buffer with [`FRAME_HEAD_BYTES_MAX`] bytes reserved in front, for a document to be
/// written after them and framed by [`frame_document`].
pub fn document_buffer() -> Vec<u8> {
    vec![0; FRAME_HEAD_BYTES_MAX]
}

/// The gRPC message of a `CommandRequest` or `CommandReply` carrying the document that
/// `buffer` holds after [`FRAME_HEAD_BYTES_MAX`] reserved bytes ([`document_buffer`]). The
/// head (prefix, key, length) is written into the reserved bytes, so the message is one
/// contiguous frame and the document is never copied. RESOURCE_EXHAUSTED if the message would
/// be over [`GRPC_MESSAGE_SIZE_MAX_BYTES`].
pub fn frame_document(mut buffer: Vec<u8>) -> Result<Bytes, Status> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    assert!(
        buffer.len() >= FRAME_HEAD_BYTES_MAX,
        "no room reserved for the head"
    );
    let document_len = buffer.len() - FRAME_HEAD_BYTES_MAX;
    let length = key_len(DOCUMENT_FIELD) + encoded_len_varint(document_len as u64) + document_len;
    if length > GRPC_MESSAGE_SIZE_MAX_BYTES {
        return Err(Status::resource_exhausted(format!(
            "message of {length} bytes is over the limit of {GRPC_MESSAGE_SIZE_MAX_BYTES} bytes"
        )));
    }
    let mut head = Vec::with_capacity(FRAME_HEAD_BYTES_MAX);
    head.put_u8(0);
    head.put_u32(u32::try_from(length).expect("under the message limit"));
    encode_key(DOCUMENT_FIELD, WireType::LengthDelimited, &mut head);
    encode_varint(document_len as u64, &mut head);
    // The head goes just before the document, in the buffer's own memory.
    let start = FRAME_HEAD_BYTES_MAX - head.len();
    buffer[start..FRAME_HEAD_BYTES_MAX].copy_from_slice(&head);
    Ok(Bytes::from(buffer).slice(start..))
}

/// Reads a unary call's one message (without its prefix) from the DATA frames of `body`, up to
/// the end of the data; `None` if there was none. Flow-control capacity is given back as data
/// arrives, so a message larger than the window streams in. A compressed message is
/// INTERNAL (cairn's encoding is identity), one over the limit RESOURCE_EXHAUSTED (refused from its prefix, before it is
/// read), a cut or a second message INTERNAL.
pub async fn read_message(body: &mut h2::RecvStream) -> Result<Option<Bytes>, Status> {
    // Usually the whole message is one DATA frame: it is kept as it came, without a copy.
    let mut whole: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut expected: Option<usize> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|error| h2_status(&error))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if chunk.is_empty() {
            continue;
        }
        if whole.is_none() && gathered.is_empty() {
            whole = Some(chunk);
        } else {
            if let Some(first) = whole.take() {
                gathered.extend_from_slice(&first);
            }
            gathered.extend_from_slice(&chunk);
        }
        let seen: &[u8] = whole.as_deref().unwrap_or(&gathered);
        if expected.is_none() && seen.len() >= MESSAGE_PREFIX_BYTES {
            if seen[0] != 0 {
                // The call's encoding is identity (another one is refused from its headers).
                return Err(Status::internal(
                    "a compressed message in a call whose encoding is identity",
                ));
            }
            let length = u32::from_be_bytes(seen[1..5].try_into().expect("4 bytes")) as usize;
            if length > GRPC_MESSAGE_SIZE_MAX_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "message of {length} bytes is over the limit of \
                     {GRPC_MESSAGE_SIZE_MAX_BYTES} bytes"
                )));
            }
            expected = Some(MESSAGE_PREFIX_BYTES + length);
            if whole.is_none() {
                gathered.reserve((MESSAGE_PREFIX_BYTES + length).saturating_sub(gathered.len()));
            }
        }
        let seen = whole.as_ref().map_or(gathered.len(), Bytes::len);
        if expected.is_some_and(|expected| seen > expected) {
            return Err(Status::internal("more than one message in a unary call"));
        }
    }
    let mut message = whole.unwrap_or_else(|| gathered.freeze());
    match expected {
        _ if message.is_empty() => Ok(None),
        Some(expected) if message.len() == expected => {
            message.advance(MESSAGE_PREFIX_BYTES);
            Ok(Some(message))
        }
        _ => Err(Status::internal(format!(
            "message cut short: {} bytes of {}",
            message.len(),
            expected.map_or_else(|| "at least 5".to_owned(), |e| e.to_string())
        ))),
    }
}

/// The status carried by `headers` (trailers, or the headers of a trailers-only response).
pub fn status_from_headers(headers: &http::HeaderMap) -> Option<Status> {
    let code = headers.get("grpc-status")?;
    let code = std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|code| code.parse::<i32>().ok());
    let Some(code) = code else {
        return Some(Status::internal("malformed grpc-status"));
    };
    let message = headers
        .get("grpc-message")
        .map(|message| percent_decode(message.as_bytes()))
        .unwrap_or_default();
    Some(Status::new(Code::from_i32(code), message))
}

/// Writes `status` into `headers` as `grpc-status` and `grpc-message`.
pub fn put_status(status: &Status, headers: &mut http::HeaderMap) {
    headers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    if !status.message().is_empty() {
        let encoded = percent_encode(status.message());
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_str(&encoded).expect("percent encoding is printable ASCII"),
        );
    }
}

/// The status of a call that failed in HTTP/2 itself (a reset stream, a lost connection).
pub fn h2_status(error: &h2::Error) -> Status {
    let code = match error.reason() {
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ if error.is_io() || error.is_go_away() => Code::Unavailable,
        Some(_) => Code::Internal,
        None => Code::Unavailable,
    };
    Status::new(code, format!("HTTP/2: {error}"))
}

/// The status of a response whose HTTP status is not 200 (gRPC's mapping).
pub fn http_status(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status}"))
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The reverse of [`percent_encode`]; a `%` not followed by two hex digits is kept as it is.
pub fn percent_decode(encoded: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut at = 0;
    while at < encoded.len() {
        let hex = |offset: usize| {
            encoded
                .get(at + offset)
                .and_then(|&digit| (digit as char).to_digit(16))
        };
        match (encoded[at], hex(1), hex(2)) {
            (b'%', Some(high), Some(low)) => {
                bytes.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, _, _) => {
                bytes.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommandReply;
    use prost::Message;

    #[test]
    fn timeouts_parse_as_grpc_defines_them() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"400m"), Some(Duration::from_millis(400)));
        assert_eq!(parse_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"123456789S",
            b"1s",
            b"-1S",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(
                parse_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        for (plain, encoded) in [
            ("plain text", "plain text"),
            ("100% ok", "100%25 ok"),
            ("line\nnext", "line%0Anext"),
            ("é", "%C3%A9"),
        ] {
            assert_eq!(percent_encode(plain), encoded);
            assert_eq!(percent_decode(encoded.as_bytes()), plain);
        }
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn statuses_round_trip_through_headers() {
        let status = Status::new(Code::DeadlineExceeded, "too late: 100%\n");
        let mut headers = http::HeaderMap::new();
        put_status(&status, &mut headers);
        let back = status_from_headers(&headers).unwrap();
        assert_eq!(back.code(), Code::DeadlineExceeded);
        assert_eq!(back.message(), "too late: 100%\n");
        assert!(status_from_headers(&http::HeaderMap::new()).is_none());
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(
            status_from_headers(&headers).unwrap().code(),
            Code::Internal
        );
    }

    #[test]
    fn a_framed_document_is_a_prefixed_message_of_either_type() {
        use crate::CommandRequest;
        for size in [5usize, 127, 128, 300, 16_383, 16_384, 70_000] {
            let document = vec![7u8; size];
            let mut buffer = document_buffer();
            buffer.extend_from_slice(&document);
            let frame = frame_document(buffer).unwrap();
            assert_eq!(frame[0], 0);
            let length = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
            assert_eq!(frame.len(), MESSAGE_PREFIX_BYTES + length);
            // Exactly what prost encodes for either message.
            let reply = CommandReply {
                document: document.clone().into(),
            };
            assert_eq!(&frame[5..], reply.encode_to_vec().as_slice());
            assert_eq!(CommandReply::decode(&frame[5..]).unwrap(), reply);
            assert_eq!(
                CommandRequest::decode(&frame[5..]).unwrap().document,
                document
            );
        }
    }

    #[test]
    fn a_document_over_the_message_limit_is_refused() {
        let mut buffer = document_buffer();
        buffer.resize(FRAME_HEAD_BYTES_MAX + GRPC_MESSAGE_SIZE_MAX_BYTES, 0);
        let error = frame_document(buffer).unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted);
    }
}
