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
pub(crate) async fn lead_across<S, ReqB, ResB, K>(
    (ticket, max_body): (Ticket, usize),
    mut service: S,
    request: Request<ReqB>,
    leader_headers: LeaderHeaders,
    mut work: Lead<K>,
) -> Led<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    #[cfg(feature = "cache")]
    let digest: Box<str> = ticket.digest().into();
    #[cfg(feature = "cache")]
    if let Some(answer) = tier::fresh(&digest, &mut work, &leader_headers).await {
        return Led::shared(SharedOutcome::Response(Arc::new(answer)));
    }
    match ticket.turn().await {
        Turn::Answer(answer) => match Published::read(&answer) {
            Some(published) => {
                let mut answer = rebuild(published, &leader_headers);
                #[cfg(feature = "cache")]
                super::lead::keep(&work.store, &mut answer, None);
                Led::shared(SharedOutcome::Response(Arc::new(answer)))
            }
            None => lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await,
        },
        Turn::Lead(lease) => {
            // Another replica may have stored a fresh answer between this
            // one's look at the tier and its taking the lease: then that is
            // the flight's answer.
            #[cfg(feature = "cache")]
            if let Some(answer) = tier::fresh(&digest, &mut work, &leader_headers).await {
                let outcome = SharedOutcome::Response(Arc::new(answer));
                Wire::of(&outcome, max_body).publish(lease).await;
                return Led::shared(outcome);
            }
            work.for_cluster = true;
            #[cfg(feature = "cache")]
            let tier = tier::of(&work);
            let led =
                lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await;
            let wire = Wire::of(&led.outcome, max_body);
            #[cfg(feature = "cache")]
            if let Some(place) = tier {
                tier::put(place, &digest, &led.outcome, &wire).await;
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
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{rebuild, Lead, LeaderHeaders, Wire};

    use crate::{
        cache::StoreReport,
        redis::response::ResponseTier,
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

    /// An answer another replica stored, stored here too, if it is fresh.
    pub(super) async fn fresh<K>(
        digest: &str,
        work: &mut Lead<K>,
        leader_headers: &LeaderHeaders,
    ) -> Option<BufferedResponse>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let Place { tier, path, .. } = of(work)?;
        let found = tier.get(digest, &path).await?;
        let mut answer = rebuild(found.response, leader_headers);
        // Its time in Redis counts as time on the way: stored as if asked
        // for that much earlier.
        let store = work.store.as_mut()?;
        let requested = store.requested;
        store.requested = Instant::now()
            .checked_sub(found.waited)
            .unwrap_or(requested)
            .min(requested);
        crate::future::lead::keep(&work.store, &mut answer, None);
        if let Some(store) = work.store.as_mut() {
            store.requested = requested;
        }
        // Fresh as stored here, by the same rules as the origin's answers.
        // (Answers that travel have no `Vary`: no request headers to match.)
        let store = work.store.as_ref()?;
        store.fresh(&http::HeaderMap::new())?;
        Some(answer)
    }

    /// Puts what this leader stored into the tier, aged from when it was
    /// asked for (as the leader's own copy is).
    pub(super) async fn put(place: Place, digest: &str, outcome: &SharedOutcome, wire: &Wire) {
        let (SharedOutcome::Response(response), Wire::Answer(answer)) = (outcome, wire) else {
            return;
        };
        let Some(ttl) = response
            .parts()
            .extensions
            .get::<StoreReport>()
            .and_then(|r| r.ttl)
        else {
            return;
        };
        let fresh = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let aged = place.requested.elapsed();
        let Place { tier, path, .. } = place;
        tier.put(digest, &path, answer.clone(), aged, fresh + KEPT_STALE)
            .await;
    }
}
