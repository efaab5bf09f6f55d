//! Reading a response body into memory, up to a cap, without losing it.

use std::{
    future::Future,
    mem,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;

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
pub(crate) fn collect<B: Body>(body: B, cap: usize) -> Collect<B> {
    Collect {
        body: Some(Box::pin(body)),
        chunks: Chunks::default(),
        trailers: None,
        cap,
    }
}

/// The future of [`collect`]. A named type, so that the leader's work can
/// hold it without an `async` block's copies of its arguments.
pub(crate) struct Collect<B> {
    /// Boxed to be handed back as it is if it turns out too large.
    body: Option<Pin<Box<B>>>,
    chunks: Chunks,
    trailers: Option<HeaderMap>,
    cap: usize,
}

impl<B: Body> Future for Collect<B> {
    type Output = Collected<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Collected<B>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            panic!("Collect polled after completion");
        };
        if this.chunks.len == 0 && body.size_hint().lower() > this.cap as u64 {
            return Poll::Ready(this.too_large());
        }
        loop {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    this.body = None;
                    let prefix = mem::take(&mut this.chunks).concat();
                    return Poll::Ready(Collected::Failed { prefix, error });
                }
            };
            match frame.into_data() {
                Ok(mut data) => {
                    this.chunks.push(data.copy_to_bytes(data.remaining()));
                    if this.chunks.len > this.cap {
                        return Poll::Ready(this.too_large());
                    }
                }
                Err(frame) => {
                    if let Ok(more) = frame.into_trailers() {
                        this.trailers
                            .get_or_insert_with(HeaderMap::new)
                            .extend(more);
                    }
                }
            }
        }
        this.body = None;
        Poll::Ready(Collected::Complete {
            data: mem::take(&mut this.chunks).concat(),
            trailers: this.trailers.take(),
        })
    }
}

impl<B: Body> Collect<B> {
    /// What was read, and the body to read the rest from.
    fn too_large(&mut self) -> Collected<B> {
        let (prefix, rest) = self.give_back();
        Collected::TooLarge { prefix, rest }
    }

    /// Stops reading: what was read, and the body to read the rest from.
    /// Only before the body ended.
    pub(crate) fn give_back(&mut self) -> (Bytes, Pin<Box<B>>) {
        let Some(rest) = self.body.take() else {
            unreachable!("a body is given back once, before it ended");
        };
        (mem::take(&mut self.chunks).concat(), rest)
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
    use http_body_util::BodyExt;
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
