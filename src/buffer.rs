//! Reading a response body into memory, up to a cap, without losing it.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

/// A body read to its end, or given back as far as it was read.
pub(crate) enum Collected<B: Body> {
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Longer than the cap: what was read, and the body to read the rest from.
    TooLarge {
        prefix: Bytes,
        rest: Pin<Box<B>>,
    },
    Failed {
        prefix: Bytes,
        error: B::Error,
    },
}

/// Reads `body` whole if it is at most `cap` bytes long.
///
/// A body that announces more than `cap` is not read at all; one that turns
/// out longer is given back with the part already read, so its reader loses
/// nothing.
pub(crate) async fn collect<B: Body>(body: B, cap: usize) -> Collected<B> {
    let mut body = Box::pin(body);
    let mut chunks = Chunks::default();
    if body.size_hint().lower() > cap as u64 {
        return Collected::TooLarge {
            prefix: Bytes::new(),
            rest: body,
        };
    }
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                return Collected::Failed {
                    prefix: chunks.concat(),
                    error,
                }
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                chunks.push(data.copy_to_bytes(data.remaining()));
                if chunks.len > cap {
                    return Collected::TooLarge {
                        prefix: chunks.concat(),
                        rest: body,
                    };
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(more);
                }
            }
        }
    }
    Collected::Complete {
        data: chunks.concat(),
        trailers,
    }
}

/// Chunks kept as they came; joined once at the end, and only if there are
/// several (the common single-chunk body is never copied).
#[derive(Default)]
struct Chunks {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    fn concat(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                for chunk in self.chunks {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};
    use std::convert::Infallible;

    type Chunked = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn chunked(chunks: &[&'static str]) -> Chunked {
        let frames: Vec<_> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        match collect(chunked(&["ab", "cd"]), 4).await {
            Collected::Complete { data, trailers } => {
                assert_eq!(data, "abcd");
                assert!(trailers.is_none());
            }
            _ => panic!("expected the whole body"),
        }
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_given_back_whole() {
        match collect(chunked(&["ab", "cd", "ef"]), 3).await {
            Collected::TooLarge { prefix, rest } => {
                assert_eq!(prefix, "abcd");
                assert_eq!(rest.collect().await.unwrap().to_bytes(), "ef");
            }
            _ => panic!("expected the body back"),
        }
    }

    #[tokio::test]
    async fn an_announced_length_over_the_cap_is_not_read() {
        match collect(Full::new(Bytes::from_static(b"0123456789")), 9).await {
            Collected::TooLarge { prefix, rest } => {
                assert!(prefix.is_empty());
                assert_eq!(rest.collect().await.unwrap().to_bytes(), "0123456789");
            }
            _ => panic!("expected the body back unread"),
        }
    }
}
