//! Acting from the board: an operator acknowledges an escalation addressed to her agency.
//!
//! The dashboard holds no agency's keys and writes nothing itself. It is a registered system of
//! each agency it acts for (`refbus://<agency>/dashboard`, its own client certificate) and
//! calls that agency's adapter over mutual TLS, naming the operator in the operator header, so
//! the adapter checks, signs and records the acknowledgement like any other call, as the
//! operator of that agency through the dashboard system.

use std::collections::BTreeMap;

use refbus_core::AgencyId;
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::Viewer;

/// The dashboard's system name in its client certificates: `refbus://<agency>/dashboard`.
pub const SYSTEM: &str = "dashboard";

/// The adapters the dashboard may call, one per agency it acts for.
#[derive(Debug, Clone, Default)]
pub struct Acting {
    clients: BTreeMap<AgencyId, ReferralServiceClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActingError {
    #[error("the adapter endpoint of {agency} ({endpoint}): {reason}")]
    Endpoint {
        agency: AgencyId,
        endpoint: String,
        reason: String,
    },
}

impl Acting {
    pub fn new() -> Acting {
        Acting::default()
    }

    /// Acts for `agency` through its adapter at `endpoint` (`https://host:port`), with `tls`:
    /// the deployment's CA and the dashboard's client certificate for that agency. Connects on
    /// first use.
    pub fn agency(
        mut self,
        agency: AgencyId,
        endpoint: &str,
        tls: ClientTlsConfig,
    ) -> Result<Acting, ActingError> {
        let failed = |reason: String| ActingError::Endpoint {
            agency: agency.clone(),
            endpoint: endpoint.to_owned(),
            reason,
        };
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|err| failed(err.to_string()))?
            .tls_config(tls)
            .map_err(|err| failed(err.to_string()))?
            .connect_lazy();
        self.clients
            .insert(agency, ReferralServiceClient::new(channel));
        Ok(self)
    }

    /// Whether the dashboard can act for `agency`.
    pub fn acts_for(&self, agency: &AgencyId) -> bool {
        self.clients.contains_key(agency)
    }

    /// Acknowledges escalation `level` of `clock` on `referral` as `viewer`, through her
    /// agency's adapter: the adapter's answer, refusal included.
    pub async fn acknowledge(
        &self,
        viewer: &Viewer,
        referral: &str,
        clock: &str,
        level: u32,
    ) -> Result<(), tonic::Status> {
        let mut client = self.clients.get(&viewer.agency).cloned().ok_or_else(|| {
            tonic::Status::failed_precondition("the dashboard does not act for this agency")
        })?;
        let mut request = tonic::Request::new(v1::AcknowledgeEscalationRequest {
            // The same acknowledgement asked twice (a double click) is one request.
            request_id: format!("dashboard-ack-{referral}-{clock}-{level}"),
            referral_id: referral.to_owned(),
            clock_id: clock.to_owned(),
            level,
        });
        let operator = viewer
            .username
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the operator's name is not valid"))?;
        request
            .metadata_mut()
            .insert(OPERATOR_METADATA_KEY, operator);
        client.acknowledge_escalation(request).await?;
        Ok(())
    }
}
