//! The leader's work in share mode, run in the flight's own task.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::{
    body::ResponseBody,
    buffer::{self, Collected},
    policy::{self, Unshareable},
    shared::{BufferedResponse, SharedOutcome},
};

/// The leader's own response, when it could not be shared.
pub(crate) type Private<S, ReqB, ResB> =
    Result<Response<ResponseBody<ResB>>, <S as Service<Request<ReqB>>>::Error>;

/// What the leader needs besides the request.
pub(crate) struct Lead<S, ReqB, ResB, K>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
{
    pub(crate) private: oneshot::Sender<Private<S, ReqB, ResB>>,
    pub(crate) max_body: usize,
    pub(crate) private_ok: bool,
    pub(crate) store: Option<Store<K>>,
}

/// Calls the inner service, and turns its response into something every
/// waiter can have a copy of.
///
/// When the response cannot be shared, the leader gets it whole through
/// `private` (streamed, with whatever was already read put back in front),
/// and the followers are told to run their own requests.
pub(crate) async fn lead<S, ReqB, ResB, K>(
    mut service: S,
    request: Request<ReqB>,
    lead: Lead<S, ReqB, ResB, K>,
) -> SharedOutcome
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    // Kept to compare with followers if the response names them in `Vary`.
    let leader_headers = request.headers().clone();
    let response = match service.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let _ = lead.private.send(Err(error));
            return SharedOutcome::Unshareable(Unshareable::ServiceError);
        }
    };
    let (parts, body) = response.into_parts();
    if let Err(reason) = policy::check(parts.status, &parts.headers, lead.private_ok) {
        let _ = lead
            .private
            .send(Ok(Response::from_parts(parts, ResponseBody::inner(body))));
        remember_pass(&lead.store);
        return SharedOutcome::Unshareable(reason);
    }
    let (body, reason) = match buffer::collect(body, lead.max_body).await {
        Collected::Complete { data, trailers } => {
            let response = Arc::new(BufferedResponse::new(
                parts,
                data,
                trailers,
                &leader_headers,
            ));
            keep(&lead.store, &response);
            return SharedOutcome::Response(response);
        }
        Collected::TooLarge { prefix, rest } => {
            remember_pass(&lead.store);
            (ResponseBody::resumed(prefix, rest), Unshareable::TooLarge)
        }
        Collected::Failed { prefix, error } => {
            (ResponseBody::failed(prefix, error), Unshareable::BodyFailed)
        }
    };
    let _ = lead.private.send(Ok(Response::from_parts(parts, body)));
    SharedOutcome::Unshareable(reason)
}

#[cfg(feature = "cache")]
pub(crate) use cached_store::Store;

#[cfg(feature = "cache")]
mod cached_store {
    use std::sync::Arc;

    use crate::{
        cache::{ResponseCache, Target},
        key::ShareKey,
        shared::BufferedResponse,
    };

    /// Where the leader stores what it got.
    pub(crate) struct Store<K> {
        pub(crate) cache: ResponseCache<K>,
        pub(crate) key: ShareKey<K>,
        pub(crate) target: Target,
    }

    impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Store<K> {
        pub(crate) fn keep(&self, response: &Arc<BufferedResponse>) {
            if response.parts().status.is_server_error() {
                // Never stored; a stale copy keeps serving, with a pause
                // before the next attempt.
                self.cache.back_off(self.key.clone());
            } else {
                let target = self.target.clone();
                self.cache.store(self.key.clone(), response, target);
            }
        }

        pub(crate) fn pass(&self) {
            self.cache.pass(self.key.clone());
        }
    }
}

/// Without the cache, there is nothing to store.
#[cfg(not(feature = "cache"))]
pub(crate) type Store<K> = std::marker::PhantomData<K>;

#[cfg(feature = "cache")]
fn keep<K>(store: &Option<Store<K>>, response: &Arc<BufferedResponse>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        store.keep(response);
    }
}

#[cfg(feature = "cache")]
fn remember_pass<K>(store: &Option<Store<K>>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    if let Some(store) = store {
        store.pass();
    }
}

#[cfg(not(feature = "cache"))]
fn keep<K>(_: &Option<Store<K>>, _: &Arc<BufferedResponse>) {}

#[cfg(not(feature = "cache"))]
fn remember_pass<K>(_: &Option<Store<K>>) {}
