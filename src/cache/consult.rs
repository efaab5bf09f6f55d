//! What the cache does with one request (RFC 9111 §4): serve what it
//! stored, serve it stale, or send the request on, and why. Each request is
//! counted here, once.

use std::{sync::Arc, time::Duration};

use http::HeaderMap;
use tokio::time::Instant;

use super::{
    directives::RequestDirectives,
    freshness::Freshness,
    response::{CachedResponse, Counted, Lookup, ResponseCache},
    status::Forward,
};
use crate::key::ShareKey;

/// The cache's decision for one request.
pub(crate) enum Decision {
    /// Answer with this stored copy now; `stale` when it is no longer
    /// fresh (served while refreshes back off, or at the client's
    /// `max-stale`).
    Serve {
        answer: Arc<CachedResponse>,
        stale: bool,
    },
    /// Answer with this stale copy now, and refresh it in the background
    /// (`stale-while-revalidate`).
    Refresh(Arc<CachedResponse>),
    /// Go to the origin. `stale`: the variant found stale, to revalidate
    /// (if it has a validator) and to serve if the origin fails (if
    /// `stale-if-error` allows).
    Forward {
        why: Forward,
        stale: Option<Arc<CachedResponse>>,
        if_error: bool,
    },
    /// Go to the origin and store nothing (`no-store` in the request).
    Pass,
    /// `only-if-cached`, and nothing usable is stored: `504`.
    NotCached,
}

impl<K> ResponseCache<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Decides for a request with these headers; `directives`: whether the
    /// request has a `Cache-Control` or `Pragma` to read; `counted`: false
    /// for a request entering again (it was counted the first time).
    pub(crate) fn consult(
        &self,
        key: &ShareKey<K>,
        headers: &HeaderMap,
        directives: bool,
        now: Instant,
        counted: bool,
    ) -> Decision {
        let asks = if directives && self.config().request_directives {
            RequestDirectives::of(headers)
        } else {
            RequestDirectives::default()
        };
        let decision = decide(self.lookup(key, headers, now, !directives), &asks, now);
        if let Decision::Serve { answer, .. } | Decision::Refresh(answer) = &decision {
            answer.used();
        }
        if !counted {
            return decision;
        }
        self.count(match &decision {
            Decision::Serve { stale: false, .. } => Counted::Hit,
            Decision::Serve { stale: true, .. } | Decision::Refresh(_) => Counted::Stale,
            Decision::Forward { .. } | Decision::NotCached => Counted::Miss,
            Decision::Pass => Counted::Pass,
        });
        decision
    }
}

fn decide(found: Lookup, asks: &RequestDirectives, now: Instant) -> Decision {
    if asks.no_store {
        return Decision::Pass;
    }
    let forward = |why, stale, if_error| {
        if asks.only_if_cached {
            Decision::NotCached
        } else {
            Decision::Forward {
                why,
                stale,
                if_error,
            }
        }
    };
    let answer = match found {
        Lookup::Miss => return forward(Forward::UriMiss, None, false),
        Lookup::VaryMiss => return forward(Forward::VaryMiss, None, false),
        Lookup::Answer(answer) => answer,
    };
    let age = answer.age(now);
    let freshness = answer.freshness(now);
    if asks.no_cache {
        return forward(Forward::Request, Some(answer), false);
    }
    if freshness == Freshness::Fresh {
        let left = answer.lifetime().saturating_sub(age);
        let too_old = asks.max_age.is_some_and(|max| age > max);
        let too_close = asks.min_fresh.is_some_and(|min| left < min);
        if too_old || too_close {
            return forward(Forward::Request, Some(answer), false);
        }
        return Decision::Serve {
            answer,
            stale: false,
        };
    }
    // Stale. The client may take it (`max-stale`), unless the answer
    // forbids (§4.2.4) or the client's own `max-age` does not allow its age.
    let stale_for = age.saturating_sub(answer.lifetime());
    let client_takes_stale = asks.max_stale.is_some_and(|max| stale_for <= max)
        && !answer.forbids_stale()
        && asks.max_age.is_none_or(|max| age <= max);
    if client_takes_stale {
        return Decision::Serve {
            answer,
            stale: true,
        };
    }
    // A client's `max-age` or `min-fresh` refuses stale copies too.
    let picky = asks.max_age.is_some() || asks.min_fresh.is_some_and(|min| min > Duration::ZERO);
    match freshness {
        Freshness::Fresh => unreachable!("returned above"),
        // Backing off after a failed refresh: the stale copy, at once, and
        // the origin left alone.
        Freshness::Revalidate | Freshness::IfError if !picky && !answer.may_refresh(now) => {
            Decision::Serve {
                answer,
                stale: true,
            }
        }
        // Nothing goes to the origin for `only-if-cached`, not even a
        // background refresh.
        Freshness::Revalidate if !picky && asks.only_if_cached => Decision::Serve {
            answer,
            stale: true,
        },
        Freshness::Revalidate if !picky => Decision::Refresh(answer),
        Freshness::Revalidate | Freshness::IfError => {
            let if_error = answer.serves_on_error(now);
            forward(Forward::Stale, Some(answer), if_error)
        }
        Freshness::Expired => forward(Forward::Stale, Some(answer), false),
    }
}
