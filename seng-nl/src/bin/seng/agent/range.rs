// SPDX-License-Identifier: GPL-2.0-only
//! etcd's `KV.Range` for the snapshot, with keys and values as [`Bytes`] slices of the reply
//! instead of a `Vec<u8>` each: etcd-client decodes a page of 100,000 keys into 200,000
//! allocations and copies (about a tenth of a late join's CPU). The messages are etcd's own
//! (`rpc.proto`, `kv.proto`), reduced to the fields the agent sends or reads; prost skips the
//! others. The rest of the agent's calls go through etcd-client.

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// `etcdserverpb.RangeRequest`: the fields the snapshot sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// `etcdserverpb.ResponseHeader`: its revision.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`, key and value sharing the reply's buffer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// A `KV.Range` client on a channel of its own to the same endpoints.
pub struct RangeClient {
    grpc: tonic::client::Grpc<Channel>,
    token: Option<AsciiMetadataValue>,
}

impl RangeClient {
    /// A client of `endpoints` (connected at the first call), replies up to `max_message`
    /// bytes; `token` is etcd's authentication token, if it has users.
    pub fn new(endpoints: Vec<Endpoint>, max_message: usize, token: Option<AsciiMetadataValue>) -> RangeClient {
        RangeClient { grpc: tonic::client::Grpc::new(Channel::balance_list(endpoints.into_iter())).max_decoding_message_size(max_message), token }
    }

    /// One `Range` call.
    pub async fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        self.grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        let reply = self.grpc.unary(request, PathAndQuery::from_static("/etcdserverpb.KV/Range"), RangeCodec).await?;
        Ok(reply.into_inner())
    }
}

/// tonic-prost's encoder for the request; the reply decoded from one [`Bytes`] of the whole
/// message, whose `Buf` steps are cheaper than those of tonic's buffer (a varint or a field's
/// end each: 100,000 keys have a dozen of them each).
struct RangeCodec;

impl Codec for RangeCodec {
    type Encode = RangeRequest;
    type Decode = RangeResponse;
    type Encoder = tonic_prost::ProstEncoder<RangeRequest>;
    type Decoder = RangeDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RangeDecoder
    }
}

struct RangeDecoder;

impl Decoder for RangeDecoder {
    type Item = RangeResponse;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<RangeResponse>, tonic::Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        RangeResponse::decode(message).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
