//! Named limits, each with its unit last (STYLE.md, "Put a limit on everything").

/// Largest user document, in bytes (MongoDB's `BSONObjMaxUserSize`).
pub const BSON_OBJECT_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Largest internal document (a document plus command overhead), in bytes.
pub const BSON_OBJECT_INTERNAL_SIZE_MAX_BYTES: usize = BSON_OBJECT_SIZE_MAX_BYTES + 16 * 1024;

/// Deepest nesting of embedded documents and arrays in a stored document.
pub const BSON_DEPTH_MAX: usize = 100;

/// Largest message on the wire (gRPC or MongoDB wire protocol), in bytes.
pub const MESSAGE_SIZE_MAX_BYTES: usize = 48_000_000;

/// Largest number of writes in one insert/update/delete command.
pub const WRITE_BATCH_SIZE_MAX: usize = 100_000;

/// Longest namespace (`db.collection`), in bytes.
pub const NAMESPACE_LENGTH_MAX_BYTES: usize = 255;

/// Longest database name, in bytes.
pub const DATABASE_NAME_LENGTH_MAX_BYTES: usize = 63;

/// Checks the size and nesting limits of a document that is about to be stored.
///
/// Returns `BSONObjectTooLarge` (10334) for a document over 16 MiB and `Overflow` (15) for one
/// nested deeper than [`BSON_DEPTH_MAX`].
pub fn check_document(document: &bson::Document, size_bytes: usize) -> crate::Result<()> {
    if size_bytes > BSON_OBJECT_SIZE_MAX_BYTES {
        return Err(crate::Error::new(
            crate::ErrorCode::BSONObjectTooLarge,
            format!(
                "object to insert too large. size in bytes: {size_bytes}, max size: {BSON_OBJECT_SIZE_MAX_BYTES}"
            ),
        ));
    }
    let depth = document_depth(document);
    if depth > BSON_DEPTH_MAX {
        return Err(crate::Error::new(
            crate::ErrorCode::Overflow,
            format!("Document exceeds maximum nesting depth of {BSON_DEPTH_MAX}"),
        ));
    }
    Ok(())
}

/// Nesting depth of a document: a flat document has depth 1.
pub fn document_depth(document: &bson::Document) -> usize {
    // Iterative, so that a hostile, very deep document cannot overflow the stack.
    let mut deepest = 0;
    let mut stack: Vec<(&bson::Bson, usize)> = Vec::new();
    deepest = deepest.max(1);
    for value in document.values() {
        stack.push((value, 1));
    }
    while let Some((value, depth)) = stack.pop() {
        match value {
            bson::Bson::Document(inner) => {
                deepest = deepest.max(depth + 1);
                stack.extend(inner.values().map(|v| (v, depth + 1)));
            }
            bson::Bson::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn depth_counts_documents_and_arrays() {
        assert_eq!(document_depth(&doc! {}), 1);
        assert_eq!(document_depth(&doc! {"a": 1}), 1);
        assert_eq!(document_depth(&doc! {"a": {"b": 1}}), 2);
        assert_eq!(document_depth(&doc! {"a": [[1]]}), 3);
    }

    #[test]
    fn too_deep_is_overflow() {
        let mut document = doc! {"leaf": 1};
        for _ in 0..BSON_DEPTH_MAX {
            document = doc! {"a": document};
        }
        let error = check_document(&document, 100).unwrap_err();
        assert_eq!(error.code, crate::ErrorCode::Overflow);
        let error = check_document(&doc! {}, BSON_OBJECT_SIZE_MAX_BYTES + 1).unwrap_err();
        assert_eq!(error.code, crate::ErrorCode::BSONObjectTooLarge);
    }
}
