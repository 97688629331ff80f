//! Reads a replica's HTTP endpoints: `/readyz` and the values of `/metrics`.

use crate::fabric::Fabric;
use crate::layout::{Layout, ReplicaRef};
use crate::wait_for;
use dssmr_engine::ids::GroupId;
use std::collections::BTreeMap;
use std::time::Duration;

/// The replica of `g` (but `skip`) that says it leads, if one answers.
pub fn leader(
    f: &dyn Fabric,
    layout: &Layout,
    g: GroupId,
    skip: Option<&ReplicaRef>,
) -> Option<ReplicaRef> {
    layout
        .group(g)
        .into_iter()
        .filter(|r| Some(r) != skip)
        .find(|r| {
            metrics(&f.http(r))
                .map(|m| sum(&m, "dssmr_raft_is_leader", &[]) == 1.0)
                .unwrap_or(false)
        })
}

/// Waits until every replica of `rs` is ready.
pub fn all_ready(f: &dyn Fabric, rs: &[ReplicaRef], timeout: Duration) -> anyhow::Result<()> {
    wait_for("replicas ready", timeout, Duration::from_millis(50), || {
        for r in rs {
            ready(&f.http(r)).map_err(|e| format!("{r}: {e}"))?;
        }
        Ok(())
    })
}

/// GET `url`: the status code and body (`Err` when nothing answers).
pub fn get(url: &str) -> Result<(u16, String), String> {
    // A stopped container's address does not refuse connections, it drops them: give up
    // quickly, the callers poll.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(150))
        .timeout(Duration::from_millis(800))
        .build();
    match agent.get(url).call() {
        Ok(r) => {
            let code = r.status();
            Ok((code, r.into_string().map_err(|e| e.to_string())?))
        }
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the replica at `base` (`http://host:port`) says it is ready; `Err` gives why not.
pub fn ready(base: &str) -> Result<(), String> {
    match get(&format!("{base}/readyz"))? {
        (200, _) => Ok(()),
        (code, body) => Err(format!("{code} {}", body.trim())),
    }
}

/// The samples of `/metrics`: `name{labels}` → value, for every metric named `dssmr_*`.
pub fn metrics(base: &str) -> Result<BTreeMap<String, f64>, String> {
    let (code, body) = get(&format!("{base}/metrics"))?;
    if code != 200 {
        return Err(format!("/metrics answered {code}"));
    }
    Ok(parse(&body))
}

/// Parses the Prometheus text format (only what dssmr writes: no timestamps, no escapes in
/// label values).
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("dssmr_"))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of metric `name` whose labels contain every `labels` pair.
pub fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| {
            labels
                .iter()
                .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP x\n\
            dssmr_commands_total{kind=\"access\",outcome=\"executed\",group=\"p1\"} 5\n\
            dssmr_commands_total{kind=\"access\",outcome=\"retry\",group=\"p1\"} 2\n\
            dssmr_commands_total_other 9\n\
            dssmr_raft_is_leader{group=\"p1\",replica=\"0\"} 1\n";
        let m = parse(text);
        assert_eq!(sum(&m, "dssmr_commands_total", &[]), 7.0);
        assert_eq!(
            sum(&m, "dssmr_commands_total", &[("outcome", "executed")]),
            5.0
        );
        assert_eq!(sum(&m, "dssmr_raft_is_leader", &[("group", "p1")]), 1.0);
        assert_eq!(sum(&m, "dssmr_raft_is_leader", &[("group", "p2")]), 0.0);
    }
}
