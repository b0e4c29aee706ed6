//! The floor of this architecture: a bare tonic unary handler that publishes the message an
//! adapter would publish for a create, waits for JetStream's acknowledgement, and answers.
//!
//! It implements the refbus contract's `CreateReferral` and nothing else (every other method
//! answers UNIMPLEMENTED). The request is decoded by tonic as the adapter's is, then ignored:
//! the handler takes the next of the messages prepared before the phase (the same payload,
//! headers, message id and expected subject sequence as the adapter's `Bus::append`), publishes
//! it, awaits the acknowledgement, and answers an empty `CreateReferralResponse`. What it does
//! not do is everything refbus adds: validation, the core's decision, hashing, signing,
//! sealing, building the answer's views. Any per-call gRPC service writing to JetStream on this
//! machine pays at least this.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, message::PublishMessage};
use refbus_proto::v1;
use refbus_proto::v1::referral_service_server::{ReferralService, ReferralServiceServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::BenchError;
use crate::harness::{Layout, Runtimes};

/// The floor's handler: prepared messages and a JetStream context.
pub struct Floor {
    js: jetstream::Context,
    messages: Mutex<VecDeque<(String, PublishMessage)>>,
    answered: Arc<AtomicU64>,
}

impl Floor {
    /// Publishes the next prepared message and answers once JetStream has acknowledged it.
    async fn create(
        &self,
        request: Request<v1::CreateReferralRequest>,
    ) -> Result<Response<v1::CreateReferralResponse>, Status> {
        drop(request);
        let next = self
            .messages
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .pop_front();
        let (subject, message) =
            next.ok_or_else(|| Status::resource_exhausted("the floor has no message left"))?;
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        if ack.duplicate {
            return Err(Status::internal(format!(
                "message {} was a duplicate: the stream was not fresh",
                ack.sequence
            )));
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(v1::CreateReferralResponse::default()))
    }
}

/// The service: `CreateReferral`, and UNIMPLEMENTED for every other method (the attribute is
/// applied after the methods are written out, so `async_trait` sees them all).
macro_rules! floor_service {
    ($($method:ident: $request:ident => $response:ident;)*) => {
        #[tonic::async_trait]
        impl ReferralService for Floor {
            async fn create_referral(
                &self,
                request: Request<v1::CreateReferralRequest>,
            ) -> Result<Response<v1::CreateReferralResponse>, Status> {
                self.create(request).await
            }

            $(
                async fn $method(
                    &self,
                    _request: Request<v1::$request>,
                ) -> Result<Response<v1::$response>, Status> {
                    Err(Status::unimplemented("the floor serves CreateReferral only"))
                }
            )*

            type WatchInboxStream =
                futures::stream::Empty<Result<v1::WatchInboxResponse, Status>>;

            async fn watch_inbox(
                &self,
                _request: Request<v1::WatchInboxRequest>,
            ) -> Result<Response<Self::WatchInboxStream>, Status> {
                Err(Status::unimplemented("the floor serves CreateReferral only"))
            }
        }
    };
}

floor_service! {
    confirm_receipt: ConfirmReceiptRequest => ConfirmReceiptResponse;
    accept_referral: AcceptReferralRequest => AcceptReferralResponse;
    reject_referral: RejectReferralRequest => RejectReferralResponse;
    start_referral: StartReferralRequest => StartReferralResponse;
    schedule_appointment: ScheduleAppointmentRequest => ScheduleAppointmentResponse;
    record_no_show: RecordNoShowRequest => RecordNoShowResponse;
    add_note: AddNoteRequest => AddNoteResponse;
    put_on_hold: PutOnHoldRequest => PutOnHoldResponse;
    resume_referral: ResumeReferralRequest => ResumeReferralResponse;
    request_cancellation: RequestCancellationRequest => RequestCancellationResponse;
    confirm_cancellation: ConfirmCancellationRequest => ConfirmCancellationResponse;
    decline_cancellation: DeclineCancellationRequest => DeclineCancellationResponse;
    cancel_referral: CancelReferralRequest => CancelReferralResponse;
    complete_referral: CompleteReferralRequest => CompleteReferralResponse;
    fail_referral: FailReferralRequest => FailReferralResponse;
    enter_in_error: EnterInErrorRequest => EnterInErrorResponse;
    acknowledge_escalation: AcknowledgeEscalationRequest => AcknowledgeEscalationResponse;
    reroute_referral: RerouteReferralRequest => RerouteReferralResponse;
    get_referral: GetReferralRequest => GetReferralResponse;
    get_receipt: GetReceiptRequest => GetReceiptResponse;
    list_referrals: ListReferralsRequest => ListReferralsResponse;
}

/// A floor serving on `addr`.
pub struct RunningFloor {
    pub addr: SocketAddr,
    answered: Arc<AtomicU64>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningFloor {
    /// Creates answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Runtimes {
    /// Starts the floor on a free loopback port, on the adapter's runtime, its NATS connection
    /// placed as an adapter's would be in `layout`; it will publish `messages` in order. The
    /// events stream must exist. With `tls` it serves the adapter's TLS transport (the same
    /// acceptor, handshakes asking for a client certificate) but checks no certificate per
    /// call: that check is refbus's work, measured against this floor.
    pub fn start_floor(
        &self,
        nats_url: &str,
        layout: Layout,
        messages: Vec<(String, PublishMessage)>,
        tls: Option<refbus_tls::ServerTls>,
    ) -> Result<RunningFloor, BenchError> {
        let nats_runtime = match layout {
            Layout::Measured => &self.nats_io,
            Layout::AsDeployed => &self.adapter,
        };
        let (js, _) = nats_runtime.block_on(crate::raw::jetstream(nats_url))?;
        let answered = Arc::new(AtomicU64::new(0));
        let floor = Floor {
            js,
            messages: Mutex::new(messages.into()),
            answered: answered.clone(),
        };
        let listener = self
            .adapter
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let stop = async {
            let _ = stop.await;
        };
        // As the adapter serves: TCP_NODELAY, tonic's server with default settings.
        let router =
            tonic::transport::Server::builder().add_service(ReferralServiceServer::new(floor));
        let task = match tls {
            Some(tls) => {
                // `incoming` spawns its accept loop: on the adapter's runtime, as the adapter's.
                let incoming = self.adapter.block_on(async { tls.incoming(listener) });
                self.adapter
                    .spawn(router.serve_with_incoming_shutdown(incoming, stop))
            }
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                self.adapter
                    .spawn(router.serve_with_incoming_shutdown(incoming, stop))
            }
        };
        Ok(RunningFloor {
            addr,
            answered,
            shutdown,
            task,
        })
    }

    /// Stops the floor and waits for it to finish its calls.
    pub fn stop_floor(&self, running: RunningFloor) -> Result<(), BenchError> {
        let _ = running.shutdown.send(());
        self.adapter
            .block_on(running.task)
            .map_err(|err| BenchError::Setup(format!("the floor task failed: {err}")))?
            .map_err(|err| BenchError::Setup(format!("the floor failed: {err}")))
    }
}
