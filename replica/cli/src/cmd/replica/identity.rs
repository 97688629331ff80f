//! Which replica of which group this process is: from flags, or from the name Kubernetes gives
//! a StatefulSet pod.
//!
//! The operator names the StatefulSets `<cluster>-oracle` and `<cluster>-p<N>` (partition N,
//! the config's `partitions[N-1]`), and a pod is `<statefulset>-<ordinal>`. So `POD_NAME`
//! `chirper-p2-1` in cluster `chirper` is replica 1 of partition 2. Flags win over the pod name.
//! Pure functions: no I/O, every error names the flag or variable it is about.

use dssmr_engine::ids::{GroupId, ORACLE};

/// A group as written on the command line: `oracle`, `p<N>` or `<N>` (partition N, from 1).
pub(crate) fn parse_group(text: &str) -> Result<GroupId, String> {
    if text == "oracle" {
        return Ok(ORACLE);
    }
    let digits = text.strip_prefix('p').unwrap_or(text);
    match digits.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(GroupId(n)),
        _ => Err(format!(
            "{text:?} is not a group (expected oracle, or a partition as p1, p2, ... or 1, 2, ...)"
        )),
    }
}

/// Group and ordinal of pod `pod` of cluster `cluster`.
pub(crate) fn parse_pod_name(cluster: &str, pod: &str) -> Result<(GroupId, usize), String> {
    let shape = || {
        format!(
            "{pod:?} is not a pod of cluster {cluster:?} \
             (expected {cluster}-oracle-<ordinal> or {cluster}-p<N>-<ordinal>)"
        )
    };
    let rest = pod
        .strip_prefix(cluster)
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(shape)?;
    let (set, ordinal) = rest.rsplit_once('-').ok_or_else(shape)?;
    let ordinal: usize = ordinal.parse().map_err(|_| shape())?;
    if set != "oracle" && !set.starts_with('p') {
        return Err(shape());
    }
    let group = parse_group(set).map_err(|_| shape())?;
    Ok((group, ordinal))
}

/// Resolves the replica's identity: `group` and `ordinal` flags first, then `pod_name`.
pub(crate) fn resolve(
    cluster: &str,
    group: Option<&str>,
    ordinal: Option<usize>,
    pod_name: Option<&str>,
) -> Result<(GroupId, usize), String> {
    let from_pod = match pod_name.filter(|p| !p.is_empty()) {
        Some(pod) if group.is_none() || ordinal.is_none() => {
            Some(parse_pod_name(cluster, pod).map_err(|e| format!("POD_NAME: {e}"))?)
        }
        _ => None,
    };
    let group = match group {
        Some(g) => parse_group(g).map_err(|e| format!("--group: {e}"))?,
        None => match from_pod {
            Some((g, _)) => g,
            None => return Err("--group: required when POD_NAME is not set".into()),
        },
    };
    let ordinal = match (ordinal, from_pod) {
        (Some(o), _) => o,
        (None, Some((_, o))) => o,
        (None, None) => return Err("--ordinal: required when POD_NAME is not set".into()),
    };
    Ok((group, ordinal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_in_every_spelling() {
        assert_eq!(parse_group("oracle"), Ok(ORACLE));
        assert_eq!(parse_group("p2"), Ok(GroupId(2)));
        assert_eq!(parse_group("3"), Ok(GroupId(3)));
        assert!(parse_group("p0").is_err());
        assert!(parse_group("primary").is_err());
    }

    #[test]
    fn pod_names_give_group_and_ordinal() {
        assert_eq!(parse_pod_name("demo", "demo-oracle-2"), Ok((ORACLE, 2)));
        assert_eq!(parse_pod_name("demo", "demo-p1-0"), Ok((GroupId(1), 0)));
        assert_eq!(
            parse_pod_name("my-app", "my-app-p12-4"),
            Ok((GroupId(12), 4))
        );
        for bad in [
            "other-p1-0",
            "demo-p1",
            "demo-x1-0",
            "demo-p1-a",
            "demo-oracle",
        ] {
            let e = parse_pod_name("demo", bad).unwrap_err();
            assert!(e.contains("expected demo-oracle-<ordinal>"), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_win_over_the_pod_name_and_errors_name_their_source() {
        assert_eq!(
            resolve("demo", Some("p2"), Some(1), Some("demo-p1-0")),
            Ok((GroupId(2), 1))
        );
        assert_eq!(
            resolve("demo", None, Some(2), Some("demo-p1-0")),
            Ok((GroupId(1), 2))
        );
        assert_eq!(
            resolve("demo", Some("oracle"), Some(0), None),
            Ok((ORACLE, 0))
        );
        assert!(resolve("demo", None, None, None)
            .unwrap_err()
            .starts_with("--group:"));
        assert!(resolve("demo", Some("p1"), None, None)
            .unwrap_err()
            .starts_with("--ordinal:"));
        assert!(resolve("demo", None, None, Some("web-0"))
            .unwrap_err()
            .starts_with("POD_NAME:"));
        assert!(resolve("demo", Some("x"), Some(0), None)
            .unwrap_err()
            .starts_with("--group:"));
    }
}
