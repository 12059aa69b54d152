//! The gRPC codec every Hive service and client uses: prost's, except that a
//! message that cannot be decoded (invalid UTF-8 in a string, JSON nested
//! deeper than prost's recursion limit, a malformed field) is
//! INVALID_ARGUMENT. That is input from the network, not an internal
//! failure; prost's own codec answers INTERNAL.

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Prost's codec with decoding failures reported as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct HiveCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for HiveCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for HiveCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = HiveDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        HiveDecoder(self.0.decoder())
    }
}

/// Prost's decoder with decoding failures reported as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct HiveDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for HiveDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| match status.code() {
            Code::Internal => {
                Status::invalid_argument(format!("the message could not be decoded: {}", status.message()))
            }
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
