//! `ReferralService`: one thin method per RPC; the work is in `write` and `read`.

use refbus_core::ids::OperatorId;
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::convert;
use refbus_proto::v1::referral_service_server::ReferralService;
use refbus_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::peer::Peer;
use crate::read::InboxStream;
use crate::write::Caller;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
use crate::{Adapter, status};

/// Who acts: the system the check before the call authenticated (see `peer`), and the
/// operator it names in the request metadata. The name the adapter records on its own reroutes
/// cannot be claimed.
fn operator<T>(request: &Request<T>) -> Result<Caller, Status> {
    let peer = request
        .extensions()
        .get::<Peer>()
        .ok_or_else(status::no_peer)?;
    let header = request
        .metadata()
        .get(OPERATOR_METADATA_KEY)
        .map(|value| value.to_str().unwrap_or_default())
        .unwrap_or_default();
    let operator: OperatorId = convert::operator(header).map_err(|err| status::field(&err))?;
    if operator.as_str() == crate::AUTOMATIC_OPERATOR {
        return Err(status::reserved_operator(operator.as_str()));
    }
    Ok(Caller {
        operator,
        system: peer.system(),
    })
}

/// RPCs that run a command on an existing referral and answer with the state and the event.
macro_rules! command_rpcs {
    ($($method:ident($request:ty) -> $response:ident;)*) => {
        $(
            // Written out as `#[async_trait]` would expand it: the attribute does not reach
            // methods that a macro produces inside the impl.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                request: Request<$request>,
            ) -> BoxFuture<'async_trait, Result<Response<$response>, Status>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let operator = operator(&request)?;
                    let written = self.execute(operator, request.get_ref()).await;
                    log_outcome(stringify!($method), &written);
                    let written = written?;
                    Ok(Response::new($response {
                        referral: Some(self.view(&written.state)),
                        event: Some(self.event_view(&written.event)),
                    }))
                })
            }
        )*
    };
}

/// Anything that answers a write: where it landed and whether it was a retry.
trait Landed {
    fn landed(&self) -> (u64, bool);
}

impl Landed for crate::write::Written {
    fn landed(&self) -> (u64, bool) {
        (self.seq, self.replayed)
    }
}

impl Landed for crate::write::Created {
    fn landed(&self) -> (u64, bool) {
        self.written.landed()
    }
}

impl Landed for crate::write::Rerouted {
    fn landed(&self) -> (u64, bool) {
        self.original.landed()
    }
}

fn log_outcome(method: &str, outcome: &Result<impl Landed, Status>) {
    match outcome {
        Ok(written) => {
            let (seq, replayed) = written.landed();
            tracing::debug!(method, seq, replayed, "recorded");
        }
        Err(err) if status::is_retryable(err) => {
            tracing::warn!(method, code = ?err.code(), "{}", err.message())
        }
        Err(err) => tracing::info!(method, code = ?err.code(), "refused: {}", err.message()),
    }
}

#[tonic::async_trait]
impl ReferralService for Adapter {
    async fn create_referral(
        &self,
        request: Request<CreateReferralRequest>,
    ) -> Result<Response<CreateReferralResponse>, Status> {
        let operator = operator(&request)?;
        let created = self.create(operator, request.get_ref()).await;
        log_outcome("create_referral", &created);
        let crate::write::Created {
            written,
            sealed_here,
        } = created?;
        let watch = self.stopwatch();
        let responding = watch.now();
        let mut state = written.state;
        // The state stored on the bus omits the identity; the create's answer shows it back.
        if let refbus_core::Change::Created(creation) = &written.event.change {
            state.creation.identity = creation.identity.clone();
            state.creation.note = creation.note.clone();
        }
        let opener = crate::keys::opener_knowing(&self.inner.keyring, state.id, &sealed_here);
        let response = CreateReferralResponse {
            referral: Some(self.view_opening(&state, &opener)),
            event: Some(convert::event_view(&written.event, &opener)),
        };
        watch.lap(crate::Stage::Response, responding);
        Ok(Response::new(response))
    }

    command_rpcs! {
        confirm_receipt(ConfirmReceiptRequest) -> ConfirmReceiptResponse;
        accept_referral(AcceptReferralRequest) -> AcceptReferralResponse;
        reject_referral(RejectReferralRequest) -> RejectReferralResponse;
        start_referral(StartReferralRequest) -> StartReferralResponse;
        schedule_appointment(ScheduleAppointmentRequest) -> ScheduleAppointmentResponse;
        record_no_show(RecordNoShowRequest) -> RecordNoShowResponse;
        add_note(AddNoteRequest) -> AddNoteResponse;
        put_on_hold(PutOnHoldRequest) -> PutOnHoldResponse;
        resume_referral(ResumeReferralRequest) -> ResumeReferralResponse;
        request_cancellation(RequestCancellationRequest) -> RequestCancellationResponse;
        confirm_cancellation(ConfirmCancellationRequest) -> ConfirmCancellationResponse;
        decline_cancellation(DeclineCancellationRequest) -> DeclineCancellationResponse;
        cancel_referral(CancelReferralRequest) -> CancelReferralResponse;
        complete_referral(CompleteReferralRequest) -> CompleteReferralResponse;
        fail_referral(FailReferralRequest) -> FailReferralResponse;
        enter_in_error(EnterInErrorRequest) -> EnterInErrorResponse;
        acknowledge_escalation(AcknowledgeEscalationRequest) -> AcknowledgeEscalationResponse;
    }

    async fn reroute_referral(
        &self,
        request: Request<RerouteReferralRequest>,
    ) -> Result<Response<RerouteReferralResponse>, Status> {
        let operator = operator(&request)?;
        let rerouted = self.reroute(operator, request.get_ref()).await;
        log_outcome("reroute_referral", &rerouted);
        let rerouted = rerouted?;
        Ok(Response::new(RerouteReferralResponse {
            referral: Some(self.view(&rerouted.original.state)),
            event: Some(self.event_view(&rerouted.original.event)),
            child_referral: Some(self.view(&rerouted.child.state)),
            child_event: Some(self.event_view(&rerouted.child.event)),
        }))
    }

    async fn get_referral(
        &self,
        request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        operator(&request)?;
        let id = convert::get_referral(request.get_ref()).map_err(|err| status::field(&err))?;
        Ok(Response::new(GetReferralResponse {
            referral: Some(self.riding_through(|| self.get(&id)).await?),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<GetReceiptRequest>,
    ) -> Result<Response<GetReceiptResponse>, Status> {
        operator(&request)?;
        let (id, event_seq) =
            convert::get_receipt(request.get_ref()).map_err(|err| status::field(&err))?;
        // Not ridden through: its UNAVAILABLE also means "no checkpoint covers it yet" or
        // "no notary answers", which retrying for half a minute would only hide.
        Ok(Response::new(self.receipt(&id, event_seq).await?))
    }

    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        operator(&request)?;
        let query =
            convert::list_referrals(request.get_ref()).map_err(|err| status::field(&err))?;
        Ok(Response::new(
            self.riding_through(|| self.list(&query)).await?,
        ))
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(
        &self,
        request: Request<WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        operator(&request)?;
        Ok(Response::new(self.watch(&request.get_ref().cursor).await?))
    }
}
