//! Reroutes the router asks for, carried out by the sender's adapter.
//!
//! The router cannot read identity data, so when a clock or a rejection calls for moving a case
//! to the alternate agency it records a `reroute_requested` event on the referral. The sender's
//! adapter sees it among the referrals its agency sent, and does what the agency itself would
//! do: creates the linked child referral (re-sealing the identity for the new recipient) and
//! records the reroute on the original. A sender adapter that is down delays the reroute (the
//! `reroute_pending` clock then escalates it) but loses nothing: at start the adapter looks for
//! every reroute still pending.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use refbus_bus::{Item, subjects};
use refbus_core::ids::OperatorId;
use refbus_core::{Change, Referral, RequestId};

use crate::Adapter;

/// The operator recorded on what the adapter does by itself.
pub const AUTOMATIC_OPERATOR: &str = "refbus-adapter:reroute";

/// How long to wait before looking again after the bus failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl Adapter {
    /// Carries out requested reroutes of this agency's referrals until `shutdown` completes.
    /// Started by [`crate::run`] only: a deployment that serves an agency always carries out
    /// its reroutes.
    pub(crate) async fn carry_out_reroutes(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                result = self.follow_reroute_requests() => {
                    if let Err(err) = result {
                        tracing::warn!(agency = %self.inner.agency, "following reroute requests: {err}; trying again");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// Reroutes still pending, then new requests as they are recorded.
    async fn follow_reroute_requests(&self) -> Result<(), refbus_bus::ReadError> {
        let bus = &self.inner.bus;
        let sent = subjects::sent_by(&self.inner.agency);
        // Watch from the current end first, then look back, so nothing falls in between
        // (a reroute seen twice is carried out once: its request id is fixed).
        let end = bus.last_sequence().await?;
        let verifier = &self.inner.verifier;
        // Only reroute requests are decoded and checked: every create and command this adapter
        // writes comes back on these subjects, and checking each (a signature verified) would
        // cost as much CPU as writing it.
        let mut requests = bus
            .watch_changes(verifier, vec![sent.clone()], end, "reroute_requested")
            .await?;
        let mut latest = bus.latest_checked(verifier, vec![sent]).await?;
        while let Some(stored) = latest.next().await {
            let state = stored?.record.state;
            if is_pending(&state) {
                self.reroute_for_router(&state).await;
            }
        }
        while let Some(item) = requests.next().await {
            if let Item::Event(stored) = item?
                && let Change::RerouteRequested { .. } = stored.record.event.change
            {
                self.reroute_for_router(&stored.record.state).await;
            }
        }
        Ok(())
    }

    async fn reroute_for_router(&self, original: &Referral) {
        let Some(reroute) = original.reroute.as_ref().filter(|r| r.child.is_none()) else {
            return;
        };
        // A referral is rerouted at most once, so its id names the request.
        let (Ok(request_id), Ok(operator)) = (
            RequestId::new(format!("reroute-{}", original.id)),
            OperatorId::new(AUTOMATIC_OPERATOR),
        ) else {
            return;
        };
        match self
            .reroute_to(
                crate::write::Caller {
                    operator,
                    system: None,
                },
                &request_id,
                &original.id,
                &reroute.to,
                (None, None),
                crate::write::EndToEnd::default(),
            )
            .await
        {
            Ok(done) => tracing::info!(
                referral = %original.id,
                child = %done.child.state.id,
                to = %reroute.to,
                "rerouted as the router asked"
            ),
            Err(status) => tracing::error!(
                referral = %original.id,
                to = %reroute.to,
                "could not carry out the reroute the router asked for: {}",
                status.message()
            ),
        }
    }
}

fn is_pending(state: &Referral) -> bool {
    state
        .reroute
        .as_ref()
        .is_some_and(|reroute| reroute.child.is_none())
}
