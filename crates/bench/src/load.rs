//! The agency system's side: CreateReferral calls over a few HTTP/2 connections, as fast as a
//! fixed number of callers can go, or at a steady rate.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::BenchError;
use crate::fixture::{Fixture, Person};
use crate::pace::{self, Pacer};

/// gRPC clients of one adapter, one HTTP/2 connection each.
#[derive(Clone)]
pub struct Clients {
    clients: Vec<ReferralServiceClient<Channel>>,
    operator: MetadataValue<Ascii>,
}

impl Clients {
    /// Over mutual TLS with `tls`, plaintext without.
    pub async fn connect(
        addr: SocketAddr,
        connections: usize,
        fixture: &Fixture,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Clients, BenchError> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
                .map_err(|err| BenchError::Setup(err.to_string()))?
                .tcp_nodelay(true);
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|err| BenchError::Setup(err.to_string()))?;
            }
            let channel = endpoint
                .connect()
                .await
                .map_err(|err| BenchError::Setup(format!("connecting to the adapter: {err}")))?;
            clients.push(ReferralServiceClient::new(channel));
        }
        let operator = fixture
            .operator
            .parse()
            .map_err(|_| BenchError::Setup("the operator is not a header value".to_owned()))?;
        Ok(Clients { clients, operator })
    }

    fn client(&self, index: usize) -> ReferralServiceClient<Channel> {
        self.clients[index % self.clients.len()].clone()
    }

    /// Creates referral `index` of `phase`; an error answer fails the benchmark.
    async fn create(
        &self,
        fixture: &Fixture,
        phase: &str,
        index: usize,
        person: Person,
    ) -> Result<(), BenchError> {
        let mut request = tonic::Request::new(fixture.create_request(phase, index, person));
        request
            .metadata_mut()
            .insert(OPERATOR_METADATA_KEY, self.operator.clone());
        self.client(index).create_referral(request).await?;
        Ok(())
    }
}

/// Creates referrals `range` with `concurrency` callers, each sending its next request when
/// its previous one is answered; returns the time taken.
pub async fn closed_loop(
    clients: &Clients,
    fixture: &Arc<Fixture>,
    phase: &'static str,
    range: Range<usize>,
    person: Person,
    concurrency: usize,
) -> Result<Duration, BenchError> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (clients, fixture, next) = (clients.clone(), fixture.clone(), next.clone());
        let end = range.end;
        callers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<(), BenchError>(());
                }
                clients.create(&fixture, phase, index, person).await?;
            }
        });
    }
    while let Some(caller) = callers.join_next().await {
        caller.map_err(|err| BenchError::Setup(err.to_string()))??;
    }
    Ok(started.elapsed())
}

/// Sends `count` creates at `rate` per second, open loop, and records the latency of every
/// answer after the first `warmup`.
pub async fn open_loop(
    clients: &Clients,
    fixture: &Arc<Fixture>,
    phase: &'static str,
    count: usize,
    person: Person,
    rate: u32,
    warmup: usize,
) -> Result<Histogram<u64>, BenchError> {
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut pacer = Pacer::new(rate);
    for index in 0..count {
        pacer.tick().await;
        let (clients, fixture, answers) = (clients.clone(), fixture.clone(), answers.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = clients
                .create(&fixture, phase, index, person)
                .await
                .map(|()| sent.elapsed());
            let _ = answers.send((index, outcome));
        });
    }
    drop(answers);
    let mut latencies = pace::histogram()?;
    while let Some((index, outcome)) = answered.recv().await {
        let latency = outcome?;
        if index >= warmup {
            pace::record(&mut latencies, latency);
        }
    }
    Ok(latencies)
}
