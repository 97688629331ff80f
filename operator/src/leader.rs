//! Leader election among the operator's processes: when the chart runs two or more, exactly
//! one reconciles and the others stand by. The leader holds a `coordination.k8s.io/v1` Lease
//! (through `kube-leader-election`) and renews it every [`ElectionConfig::renew_every`].
//!
//! The Lease is not fenced (its updates do not carry a resource version), so two candidates
//! that find it expired at the same moment may both write themselves into it; only one write
//! survives. A candidate therefore counts as leader only once a second renewal, one period
//! later, still finds its own name in the Lease. A leader that cannot renew before the lease
//! could have expired in the others' eyes (`ttl - renew_every` since its last renewal), or that
//! finds another holder, gives up: the process exits and Kubernetes restarts it as a candidate,
//! so no state of a past leadership survives. On SIGTERM the leader releases the Lease, so a
//! standby takes over within one renewal period instead of one lease time.

use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use std::time::{Duration, Instant};

/// Where the Lease is and who competes for it.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Namespace of the Lease (the operator's own: `POD_NAMESPACE`).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This process's identity in the Lease (its pod name).
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// How often the leader renews and a standby retries.
    pub renew_every: Duration,
}

impl ElectionConfig {
    /// Lease of 15 s renewed every 2 s (client-go's defaults are 15 s and 2 s retries).
    pub fn new(namespace: String, lease_name: String, holder: String) -> Self {
        ElectionConfig {
            namespace,
            lease_name,
            holder,
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Why a leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LostLease {
    /// Another process holds the Lease now.
    #[error("lease {lease} is now held by {holder:?}")]
    TakenBy {
        /// The Lease.
        lease: String,
        /// Its holder.
        holder: String,
    },
    /// Renewals failed for too long; the lease may have expired for the others.
    #[error("could not renew lease {lease} for {for_secs:.1} s: {last_error}")]
    NotRenewed {
        /// The Lease.
        lease: String,
        /// Since the last successful renewal.
        for_secs: f64,
        /// The last failure.
        last_error: String,
    },
}

/// One process's part in the election.
pub struct Election {
    lock: LeaseLock,
    config: ElectionConfig,
}

impl Election {
    /// A candidate for `config.lease_name`; nothing is written until [`Election::acquire`].
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        let lock = LeaseLock::new(
            client,
            &config.namespace,
            LeaseLockParams {
                lease_name: config.lease_name.clone(),
                holder_id: config.holder.clone(),
                lease_ttl: config.ttl,
            },
        );
        Election { lock, config }
    }

    /// Waits until this process holds the Lease, confirmed by a second renewal one period
    /// after the first acquisition. API errors are logged and retried.
    pub async fn acquire(&self) {
        let mut confirmed_once = false;
        loop {
            match self.lock.try_acquire_or_renew().await {
                Ok(LeaseLockResult::Acquired(_)) if confirmed_once => {
                    tracing::info!(
                        lease = %self.config.lease_name,
                        holder = %self.config.holder,
                        "leading: this operator reconciles"
                    );
                    return;
                }
                Ok(LeaseLockResult::Acquired(_)) => confirmed_once = true,
                Ok(LeaseLockResult::NotAcquired(lease)) => {
                    if confirmed_once {
                        tracing::info!(holder = %holder_of(&lease), "lost the race for the lease");
                    }
                    confirmed_once = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.config.lease_name, "lease not reachable");
                    confirmed_once = false;
                }
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }

    /// Renews the Lease every period; returns when leadership is lost.
    pub async fn hold(&self) -> LostLease {
        let lease = self.config.lease_name.clone();
        let give_up_after = self.config.ttl.saturating_sub(self.config.renew_every);
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.lock.try_acquire_or_renew().await {
                Ok(LeaseLockResult::Acquired(_)) => last_renewal = Instant::now(),
                Ok(LeaseLockResult::NotAcquired(l)) => {
                    return LostLease::TakenBy {
                        lease,
                        holder: holder_of(&l),
                    }
                }
                Err(e) => {
                    let since = last_renewal.elapsed();
                    tracing::warn!(error = %e, since_s = since.as_secs_f64(), "lease renewal failed");
                    if since >= give_up_after {
                        return LostLease::NotRenewed {
                            lease,
                            for_secs: since.as_secs_f64(),
                            last_error: e.to_string(),
                        };
                    }
                }
            }
        }
    }

    /// Releases the Lease (if this process holds it), so a standby takes over at once.
    pub async fn step_down(&self) {
        match self.lock.step_down().await {
            Ok(()) => tracing::info!(lease = %self.config.lease_name, "released the lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease"),
        }
    }
}

fn holder_of(lease: &k8s_openapi::api::coordination::v1::Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}
