//! BSON documents off the wire.
//!
//! The bson crate builds a `Document` recursively, so a hostile message of a few megabytes of
//! nested documents would overflow the stack (an abort, not a panic). [`read_document`] first
//! walks the raw bytes with an explicit stack, which validates every element and checks the
//! nesting against [`COMMAND_DEPTH_MAX`], and only then converts.

use bson::{Document, RawBsonRef, RawDocument};
use cairn_types::{Error, ErrorCode, limits};

/// Deepest nesting of a command document (MongoDB's maxBSONDepth). A stored document may nest
/// [`limits::BSON_DEPTH_MAX`] deep; a command wraps it in a few more levels (`documents`, `u`,
/// `$set`, ...), and the storage layer checks the stored document's own limit.
pub const COMMAND_DEPTH_MAX: usize = 200;

/// Smallest BSON document: a length and the terminating zero.
const DOCUMENT_SIZE_MIN_BYTES: usize = 5;

fn invalid(message: String) -> Error {
    Error::new(ErrorCode::InvalidBSON, message)
}

/// Reads the document at the start of `bytes`; returns it and its length in bytes.
pub fn read_document(bytes: &[u8]) -> Result<(Document, usize), Error> {
    if bytes.len() < 4 {
        return Err(invalid(format!(
            "a document needs at least {DOCUMENT_SIZE_MIN_BYTES} bytes, {} left",
            bytes.len()
        )));
    }
    let length = crate::wire::frame::read_i32(bytes, 0);
    if length < DOCUMENT_SIZE_MIN_BYTES as i32 || length as usize > bytes.len() {
        return Err(invalid(format!(
            "document length {length} does not fit the {} bytes left",
            bytes.len()
        )));
    }
    let length = length as usize;
    if length > limits::BSON_OBJECT_INTERNAL_SIZE_MAX_BYTES {
        return Err(Error::new(
            ErrorCode::BSONObjectTooLarge,
            format!(
                "document of {length} bytes is over the limit of {} bytes",
                limits::BSON_OBJECT_INTERNAL_SIZE_MAX_BYTES
            ),
        ));
    }
    let raw = RawDocument::from_bytes(&bytes[..length])
        .map_err(|error| invalid(format!("invalid BSON document: {error}")))?;
    check_elements(raw, COMMAND_DEPTH_MAX)?;
    let document = Document::try_from(raw)
        .map_err(|error| invalid(format!("invalid BSON document: {error}")))?;
    Ok((document, length))
}

/// Validates every element of `document` without recursion and checks that nothing nests
/// deeper than `depth_max` (the document itself is depth 1).
pub fn check_elements(document: &RawDocument, depth_max: usize) -> Result<(), Error> {
    assert!(depth_max >= 1, "a document has depth 1 at least");
    let mut stack = vec![document.iter()];
    while let Some(elements) = stack.last_mut() {
        let Some(element) = elements.next() else {
            stack.pop();
            continue;
        };
        let (_, value) = element.map_err(|error| invalid(format!("invalid BSON: {error}")))?;
        let nested = match value {
            RawBsonRef::Document(inner) => inner,
            RawBsonRef::Array(array) => RawDocument::from_bytes(array.as_bytes())
                .map_err(|error| invalid(format!("invalid BSON array: {error}")))?,
            RawBsonRef::JavaScriptCodeWithScope(code) => code.scope,
            _ => continue,
        };
        if stack.len() + 1 > depth_max {
            return Err(Error::new(
                ErrorCode::Overflow,
                format!("BSON document nests deeper than the limit of {depth_max} levels"),
            ));
        }
        stack.push(nested.iter());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    /// A document nested `depth` levels deep, `{a: {a: ... {} ...}}`, built as bytes.
    pub(crate) fn nested_bytes(depth: usize) -> Vec<u8> {
        assert!(depth >= 1);
        // The innermost document is 5 bytes; each level around it adds 8: a length, the type,
        // "a\0", and its own terminating zero.
        let mut bytes = Vec::with_capacity(5 + 8 * (depth - 1));
        for level in (2..=depth).rev() {
            let length = 5 + 8 * (level - 1);
            bytes.extend_from_slice(&(length as i32).to_le_bytes());
            bytes.extend_from_slice(&[0x03, b'a', 0]);
        }
        bytes.extend_from_slice(&[5, 0, 0, 0, 0]);
        bytes.resize(bytes.len() + depth - 1, 0);
        bytes
    }

    #[test]
    fn reads_documents_and_their_length() {
        let document = doc! {"insert": "c", "documents": [{"_id": 1, "a": [1, {"b": null}]}]};
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        let length = bytes.len();
        bytes.extend_from_slice(b"trailing");
        assert_eq!(read_document(&bytes).unwrap(), (document, length));
    }

    #[test]
    fn refuses_short_long_and_malformed_documents() {
        for bytes in [
            &[][..],
            &[5, 0, 0][..],
            &[4, 0, 0, 0, 0][..],
            &[6, 0, 0, 0, 0][..],
            &[5, 0, 0, 0, 1][..],
            // {a: "x"} with a string length past the end.
            &[14, 0, 0, 0, 2, b'a', 0, 9, 0, 0, 0, b'x', 0, 0][..],
            // An unknown element type.
            &[8, 0, 0, 0, 0x42, b'a', 0, 0][..],
        ] {
            let error = read_document(bytes).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidBSON, "{bytes:?}: {error}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let (document, _) = read_document(&nested_bytes(3)).unwrap();
        assert_eq!(document, doc! {"a": {"a": {}}});
        assert!(read_document(&nested_bytes(COMMAND_DEPTH_MAX)).is_ok());
        let error = read_document(&nested_bytes(COMMAND_DEPTH_MAX + 1)).unwrap_err();
        assert_eq!(error.code, ErrorCode::Overflow);
        // Deep enough that a recursive parser would overflow a thread's stack.
        let error = read_document(&nested_bytes(1_000_000)).unwrap_err();
        assert_eq!(error.code, ErrorCode::Overflow);
    }
}
