//! The local leader of a share-mode flight that spans replicas: it takes its
//! turn in the cluster before (or instead of) calling the service.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::lead::{lead, Lead, Led};
use crate::{
    policy::LeaderHeaders,
    redis::{
        flight::{Ticket, Turn},
        share::{self, Published},
    },
    shared::{BufferedResponse, SharedOutcome},
};

/// Leads the flight for this replica: the cluster leader's answer if another
/// replica leads, else the service's, published for the other replicas when
/// this one leads.
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
    match ticket.turn().await {
        Turn::Answer(answer) => {
            let Some(Published {
                status,
                headers,
                body,
            }) = Published::read(&answer)
            else {
                return lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work)
                    .await;
            };
            let (mut parts, ()) = Response::new(()).into_parts();
            parts.status = status;
            parts.headers = headers;
            let answer = BufferedResponse::new(parts, body, None, &leader_headers);
            Led::shared(SharedOutcome::Response(Arc::new(answer)))
        }
        Turn::Lead(lease) => {
            work.for_cluster = true;
            let led =
                lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await;
            share::publish(lease, &led.outcome, max_body).await;
            led
        }
        Turn::Alone => {
            lead::<S, ReqB, ResB, K, _>(service.call(request), leader_headers, work).await
        }
    }
}
