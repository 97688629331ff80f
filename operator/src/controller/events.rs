//! events: Kubernetes Events about a `DSSMRCluster`, published through the context's
//! `Recorder` (which holds the kube client) by the steps that have something to tell: an
//! invalid spec, a skipped PodMonitor, a partition added, drained or deleted.
//!
//! Best effort: a lost Event loses no state, so a failure is logged and never fails a
//! reconcile. Must not carry anything the status does not also say, nor decide when to
//! publish (the steps do).

use super::Context;
use crate::crd::DSSMRCluster;
use kube::runtime::events::{Event, EventType};
use kube::Resource;

/// Publishes an Event about `c`: `reason` (CamelCase) while doing `action`.
pub async fn publish(
    ctx: &Context,
    c: &DSSMRCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &c.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// Publishes a Normal Event of scaling about `c`.
pub async fn scale(ctx: &Context, c: &DSSMRCluster, reason: &str, note: &str) {
    publish(ctx, c, EventType::Normal, reason, "Scale", note).await
}
