//! The local leader of a share-mode flight that spans replicas: it takes its
//! turn in the cluster before (or instead of) calling the service, and, with
//! a cache, reads and fills the cache's Redis tier.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::lead::{lead, Lead, Led};
use crate::{
    policy::LeaderHeaders,
    redis::{
        flight::{Ticket, Turn},
        share::{Published, Wire},
    },
    shared::{BufferedResponse, SharedOutcome},
};

/// Leads the flight for this replica: an answer another replica stored, or
/// the cluster leader's answer if another replica leads, else the
/// service's, published for the other replicas when this one leads.
///
/// `consult_tier`: the request asks nothing of the cache itself (no
/// `Cache-Control` or `Pragma` of its own), so an answer from the tier does.
pub(crate) async fn lead_across<S, ReqB, ResB, K>(
    (ticket, max_body): (Ticket, usize),
    mut service: S,
    request: Request<ReqB>,
    leader_headers: LeaderHeaders,
    mut work: Lead<K>,
    consult_tier: bool,
) -> Led<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    #[cfg(feature = "cache")]
    let digest: Box<str> = ticket.digest().into();
    #[cfg(feature = "cache")]
    let mut counts = None;
    #[cfg(feature = "cache")]
    if consult_tier {
        match tier::look(&digest, &mut work).await {
            tier::Looked::Fresh(answer) => return Led::shared(SharedOutcome::Response(answer)),
            tier::Looked::Missing(read) => counts = read,
        }
    }
    #[cfg(not(feature = "cache"))]
    let _ = consult_tier;
    match ticket.turn().await {
        // Served, not stored: the flight may have begun before a write this
        // request came after (an answer to keep comes from the tier, which
        // takes only answers no invalidation crossed).
        Turn::Answer(answer) => match Published::read(&answer) {
            Some(published) => {
                let answer = rebuild(published, &leader_headers);
                Led::shared(SharedOutcome::Response(Arc::new(answer)))
            }
            None => lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await,
        },
        Turn::Lead(lease) => {
            // Another replica may have stored a fresh answer between this
            // one's look at the tier and its taking the lease: then that is
            // the flight's answer.
            #[cfg(feature = "cache")]
            if consult_tier {
                match tier::look(&digest, &mut work).await {
                    tier::Looked::Fresh(answer) => {
                        let outcome = SharedOutcome::Response(answer);
                        Wire::of(&outcome, max_body).publish(lease).await;
                        return Led::shared(outcome);
                    }
                    tier::Looked::Missing(read) => counts = read,
                }
            }
            work.for_cluster = true;
            #[cfg(feature = "cache")]
            let place = tier::of(&work);
            let led =
                lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await;
            let wire = Wire::of(&led.outcome, max_body);
            #[cfg(feature = "cache")]
            if let (Some(place), Some(counts)) = (place, counts) {
                tier::put(place, &digest, counts, &led.outcome, &wire).await;
            }
            wire.publish(lease).await;
            led
        }
        Turn::Alone => {
            lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await
        }
    }
}

/// A published answer as a buffered response, for a leader's request with
/// these headers.
fn rebuild(published: Published, leader_headers: &LeaderHeaders) -> BufferedResponse {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = published.status;
    parts.headers = published.headers;
    BufferedResponse::new(parts, published.body, None, leader_headers)
}

/// The response cache's Redis tier, as the leader of a flight uses it.
#[cfg(feature = "cache")]
mod tier {
    use std::{sync::Arc, time::Duration};

    use tokio::time::Instant;

    use super::{rebuild, Lead, Wire};
    use crate::{
        cache::StoreReport,
        policy::LeaderHeaders,
        redis::response::{Counts, ResponseTier},
        shared::{BufferedResponse, SharedOutcome},
    };

    /// How long past its freshness an entry stays in the tier, to be
    /// revalidated or served stale by the windows a replica allows.
    const KEPT_STALE: Duration = Duration::from_secs(600);

    /// Where the leader's answer goes in the tier.
    pub(super) struct Place {
        tier: ResponseTier,
        path: Box<str>,
        /// When the leader asked: the answer's age runs from then.
        requested: Instant,
    }

    /// The tier, the request's path and when it was asked, when the leader
    /// may store.
    pub(super) fn of<K>(work: &Lead<K>) -> Option<Place>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let store = work.store.as_ref().filter(|store| !store.forced)?;
        Some(Place {
            tier: store.cache.tier()?.clone(),
            path: store.target.path().into(),
            requested: store.requested,
        })
    }

    /// What a look at the tier found.
    pub(super) enum Looked {
        /// A fresh answer another replica stored, now stored here too, as
        /// stored copies are served (with its `Age`).
        Fresh(Arc<BufferedResponse>),
        /// None; with the invalidation counts read, if Redis answered.
        Missing(Option<Counts>),
    }

    /// Looks for the key's answer in the tier, stores it here if it is
    /// fresh by this cache's rules.
    pub(super) async fn look<K>(digest: &str, work: &mut Lead<K>) -> Looked
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let Some(Place { tier, path, .. }) = of(work) else {
            return Looked::Missing(None);
        };
        let Some((counts, found)) = tier.get(digest, &path).await else {
            return Looked::Missing(None);
        };
        let Some(found) = found else {
            return Looked::Missing(Some(counts));
        };
        let Some(store) = work.store.as_mut() else {
            return Looked::Missing(Some(counts));
        };
        // Its time in Redis counts as time on the way: stored as if asked
        // for that much earlier.
        let requested = store.requested;
        store.requested = Instant::now()
            .checked_sub(found.waited)
            .unwrap_or(requested)
            .min(requested);
        let mut answer = rebuild(found.response, &LeaderHeaders::default());
        crate::future::lead::keep(&work.store, &mut answer, None);
        let Some(store) = work.store.as_mut() else {
            return Looked::Missing(Some(counts));
        };
        store.requested = requested;
        // Fresh as stored here, by the same rules as the origin's answers.
        // (Answers that travel have no `Vary`: no request headers to match.)
        match store.fresh(&http::HeaderMap::new()) {
            Some(stored) => {
                let status = store.cache.config().cache_status.as_ref();
                Looked::Fresh(stored.for_waiters(Instant::now(), status.is_some()))
            }
            None => Looked::Missing(Some(counts)),
        }
    }

    /// Puts what this leader stored into the tier, aged from when it was
    /// asked for (as the leader's own copy is), unless an invalidation came
    /// since the leader read `counts`.
    pub(super) async fn put(
        place: Place,
        digest: &str,
        counts: Counts,
        outcome: &SharedOutcome,
        wire: &Wire,
    ) {
        let (SharedOutcome::Response(response), Wire::Answer(answer)) = (outcome, wire) else {
            return;
        };
        let stored = response.parts().extensions.get::<StoreReport>();
        let Some(ttl) = stored.and_then(|report| report.ttl) else {
            return;
        };
        let fresh = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let aged = place.requested.elapsed();
        let Place { tier, path, .. } = place;
        let keep = fresh + KEPT_STALE;
        tier.put(digest, &path, counts, answer.clone(), aged, keep)
            .await;
    }
}
