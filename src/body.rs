//! The response body of the layer: the inner body, or bytes the layer owns.

use std::{
    fmt,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Something that must live exactly as long as the body: a lease guard.
pub(crate) trait Hold: Send {}

impl<T: Send> Hold for T {}

pin_project! {
    /// Response body of [`SingleFlight`](crate::layer::SingleFlight).
    ///
    /// Either the inner service's body, passed through (holding the lease of
    /// reject mode until it ends), or bytes the layer owns: a shared copy of
    /// a buffered response, or a rejection.
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Owned {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Inner {
            #[pin]
            body: B,
            hold: Option<Box<dyn Hold>>,
        },
        // A body the layer began to read, then gave back.
        Resumed {
            prefix: Option<Bytes>,
            body: Pin<Box<B>>,
        },
        Failed {
            prefix: Option<Bytes>,
            error: Option<B::Error>,
        },
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn owned(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self::from_kind(Kind::Owned { data, trailers })
    }

    pub(crate) fn inner(body: B) -> Self {
        Self::from_kind(Kind::Inner { body, hold: None })
    }

    /// The inner body, with a value dropped when the body ends or is dropped.
    pub(crate) fn holding(body: B, hold: Box<dyn Hold>) -> Self {
        Self::from_kind(Kind::Inner {
            body,
            hold: Some(hold),
        })
    }

    /// The inner body, after the `prefix` the layer already read from it.
    pub(crate) fn resumed(prefix: Bytes, body: Pin<Box<B>>) -> Self {
        Self::from_kind(Kind::Resumed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            body,
        })
    }

    /// The `prefix` the layer read, then the error the inner body failed with.
    pub(crate) fn failed(prefix: Bytes, error: B::Error) -> Self {
        Self::from_kind(Kind::Failed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            error: Some(error),
        })
    }

    fn from_kind(kind: Kind<B>) -> Self {
        Self { kind }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Owned { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Inner { body, hold } => {
                let frame = ready!(body.poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    // The body ended or failed: release what it held now,
                    // not whenever the server gets round to dropping it.
                    drop(hold.take());
                }
                Poll::Ready(frame.map(|frame| frame.map(into_bytes)))
            }
            KindProj::Resumed { prefix, body } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let frame = ready!(body.as_mut().poll_frame(cx));
                Poll::Ready(frame.map(|frame| frame.map(into_bytes)))
            }
            KindProj::Failed { prefix, error } => Poll::Ready(
                prefix
                    .take()
                    .map(|prefix| Ok(Frame::data(prefix)))
                    .or_else(|| error.take().map(Err)),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Owned { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Resumed { prefix, body } => prefix.is_none() && body.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Owned { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Resumed { prefix, body } => {
                let prefix = prefix.as_ref().map_or(0, |prefix| prefix.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + prefix);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}

fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Owned { .. } => "Owned",
            Kind::Inner { .. } => "Inner",
            Kind::Resumed { .. } => "Resumed",
            Kind::Failed { .. } => "Failed",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    struct SetOnDrop(Arc<AtomicBool>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn owned_bytes_come_back_with_their_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let body = ResponseBody::<Full<Bytes>>::owned(Bytes::from_static(b"hi"), Some(trailers));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
        assert_eq!(collected.to_bytes(), "hi");
    }

    #[tokio::test]
    async fn a_resumed_body_gives_its_prefix_first() {
        let rest = Box::pin(Full::new(Bytes::from_static(b" world")));
        let body = ResponseBody::resumed(Bytes::from_static(b"hello"), rest);
        assert_eq!(body.size_hint().exact(), Some(11));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
    }

    #[tokio::test]
    async fn the_hold_goes_when_the_body_ends() {
        let released = Arc::new(AtomicBool::new(false));
        let body = Full::new(Bytes::from_static(b"done"));
        let mut body = std::pin::pin!(ResponseBody::holding(
            body,
            Box::new(SetOnDrop(released.clone()))
        ));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!released.load(Ordering::SeqCst));
        assert!(body.frame().await.is_none());
        assert!(
            released.load(Ordering::SeqCst),
            "released at the end, not at drop"
        );
    }

    #[tokio::test]
    async fn a_failed_body_replays_its_prefix_then_its_error() {
        type Chunk = Result<Frame<Bytes>, &'static str>;
        let body: ResponseBody<StreamBody<futures_util::stream::Empty<Chunk>>> =
            ResponseBody::failed(Bytes::from_static(b"part"), "reset");
        let mut body = std::pin::pin!(body);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "part"
        );
        assert_eq!(body.frame().await.unwrap().unwrap_err(), "reset");
        assert!(body.frame().await.is_none());
    }
}
