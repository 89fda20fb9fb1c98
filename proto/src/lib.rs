//! cairn-proto: the gRPC contract between cairn's clients and servers.
//!
//! `cairn.proto` is fixed (DESIGN.md, "Contracts that outside tools rely on"): one service,
//! `cairn.v1.Cairn`, with one RPC, `RunCommand`, whose request and reply each carry one BSON
//! document (a MongoDB command with `$db`, and its reply). The generated client
//! ([`v1::cairn_client::CairnClient`]) and server ([`v1::cairn_server::CairnServer`]) live in
//! [`v1`]. Member-to-member RPCs will get a service of their own, in a file of their own, next to
//! this one.
//!
//! Size limit: tonic's default decoding limit is 4 MiB; every cairn endpoint must raise it to
//! [`GRPC_MESSAGE_SIZE_MAX_BYTES`] both ways ([`client`] and [`server`] do it), so that a BSON
//! document of up to [`cairn_types::limits::MESSAGE_SIZE_MAX_BYTES`] fits in one message.

/// Generated code for package `cairn.v1`.
pub mod v1 {
    #![allow(clippy::all, rust_2018_idioms, missing_docs)]
    tonic::include_proto!("cairn.v1");
}

pub mod framing;

pub use v1::{CommandReply, CommandRequest};

/// Protobuf framing around one BSON document: the field tag (1 byte) and the length varint (at
/// most 10 bytes), rounded up.
pub const PROTOBUF_FRAMING_OVERHEAD_BYTES: usize = 16;

/// The gRPC message size limit: a BSON document of [`cairn_types::limits::MESSAGE_SIZE_MAX_BYTES`]
/// plus its protobuf framing.
pub const GRPC_MESSAGE_SIZE_MAX_BYTES: usize =
    cairn_types::limits::MESSAGE_SIZE_MAX_BYTES + PROTOBUF_FRAMING_OVERHEAD_BYTES;

/// A client for `cairn.v1.Cairn` over `channel`, with cairn's message size limits both ways.
pub fn client<T>(channel: T) -> v1::cairn_client::CairnClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    v1::cairn_client::CairnClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(GRPC_MESSAGE_SIZE_MAX_BYTES)
}

/// A server for `cairn.v1.Cairn` around `service`, with cairn's message size limits both ways.
pub fn server<S: v1::cairn_server::Cairn>(service: S) -> v1::cairn_server::CairnServer<S> {
    v1::cairn_server::CairnServer::new(service)
        .max_decoding_message_size(GRPC_MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(GRPC_MESSAGE_SIZE_MAX_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn request_carries_the_bson_bytes_unchanged() {
        let document = bson::doc! {"ping": 1, "$db": "admin"};
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        let request = CommandRequest {
            document: bytes.clone().into(),
        };
        let encoded = request.encode_to_vec();
        assert!(encoded.len() <= bytes.len() + PROTOBUF_FRAMING_OVERHEAD_BYTES);
        let decoded = CommandRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(decoded.document.as_ref(), bytes.as_slice());
        let back = bson::Document::from_reader(decoded.document.as_ref()).unwrap();
        assert_eq!(back, document);
    }

    #[test]
    fn framing_overhead_covers_the_largest_message() {
        let message = CommandReply {
            document: vec![0u8; cairn_types::limits::MESSAGE_SIZE_MAX_BYTES].into(),
        };
        assert!(message.encoded_len() <= GRPC_MESSAGE_SIZE_MAX_BYTES);
    }
}
