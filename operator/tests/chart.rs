//! The Helm chart `charts/dssmr-operator`, `manifests/install.yaml` and `manifests/evaluation/`.
//!
//! Each test runs one check of `charts/tests/chartcheck.py` under a deadline: lint and
//! render with the real Helm library (PyPI `helm-python-sdk`, Helm v4's Go SDK), schema
//! validation of values through Helm, `kubernetes-validate --strict` on every rendered object
//! (Prometheus Operator kinds against models generated from their CRDs), staleness of the
//! chart's CRD copy, of `manifests/install.yaml` and of the chart README's values table, the
//! example in NOTES.txt against the CRD's schema, `promtool check rules` and `test rules`,
//! and every dashboard and alert query against a real Prometheus on 127.0.0.1. A missing tool
//! fails the test with a message naming `charts/prepare.sh`, which installs them all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const PREPARE: &str = "charts/prepare.sh";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds operator/")
        .to_path_buf()
}

/// Runs `python3 charts/tests/chartcheck.py ARGS` and fails the test unless it exits 0 within
/// `deadline`; the child is killed when the deadline passes.
fn chartcheck(args: &[&str], deadline: Duration) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let script = root().join("charts/tests/chartcheck.py");
    let output = runtime.block_on(async {
        let child = tokio::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("python3 cannot be started ({e}): run {PREPARE}"));
        match tokio::time::timeout(deadline, child.wait_with_output()).await {
            Ok(out) => out.expect("python3 ran"),
            Err(_) => panic!("chartcheck.py {args:?} did not finish within {deadline:?}"),
        }
    });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "chartcheck.py {} ({:.1} s):\n{stdout}{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    match output.status.code() {
        Some(0) => stdout,
        Some(3) => panic!("a tool is missing: {stderr}(install everything with {PREPARE})"),
        _ => panic!(
            "chartcheck.py {args:?} failed ({}):\n{stdout}{stderr}",
            output.status
        ),
    }
}

#[test]
fn chart_lints_strictly_with_the_helm_library() {
    chartcheck(&["lint"], Duration::from_secs(60));
}

#[test]
fn rendered_objects_pass_kubernetes_validate_and_say_what_the_operator_needs() {
    let out = chartcheck(&["validate"], Duration::from_secs(180));
    assert!(
        out.contains("4 with the Prometheus Operator CRD models"),
        "{out}"
    );
}

#[test]
fn values_schema_rejects_bad_values_through_helm() {
    chartcheck(&["schema"], Duration::from_secs(60));
}

#[test]
fn chart_crd_copy_and_install_yaml_are_up_to_date() {
    chartcheck(&["fresh"], Duration::from_secs(60));
}

#[test]
fn chart_readme_lists_every_value_with_a_description() {
    chartcheck(&["readme"], Duration::from_secs(60));
}

#[test]
fn notes_hold_an_example_the_crd_accepts_with_apply_wait_and_scale() {
    chartcheck(&["notes"], Duration::from_secs(60));
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    chartcheck(&["rules"], Duration::from_secs(120));
}

#[test]
fn dashboard_and_rules_name_only_exported_metrics() {
    chartcheck(&["metric-names"], Duration::from_secs(30));
}

#[test]
fn a_real_prometheus_accepts_every_dashboard_and_rule_query() {
    let out = chartcheck(&["prometheus"], Duration::from_secs(180));
    assert!(out.contains("queries accepted and evaluated"), "{out}");
}

/// The paper's setup: clusters of 1, 2, 4 and 8 partitions in both modes, placed on the HP
/// SE1102 class, and a bench Job on the Dell SC1435 class reading the config the operator
/// writes for its cluster.
#[test]
fn evaluation_manifests_describe_the_papers_setup() {
    let dir = root().join("manifests/evaluation");
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut to_validate = Vec::new();
    for mode in ["dssmr", "ssmr"] {
        for partitions in [1u32, 2, 4, 8] {
            let path = dir.join(format!("cluster-{mode}-{partitions}.yaml"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let cluster: dssmr_operator::crd::DSSMRCluster =
                serde_yaml::from_str(&text).expect("a DSSMRCluster");
            let spec = &cluster.spec;
            assert_eq!(spec.partitions, partitions, "{}", path.display());
            assert_eq!(
                serde_json::to_value(spec.mode).unwrap(),
                serde_json::json!(mode)
            );
            assert_eq!(spec.app, dssmr_operator::crd::AppName::Chirper);
            assert_eq!(
                spec.placement.hardware_profile,
                dssmr_operator::crd::HardwareProfile::Paper
            );
            let rendered = dssmr_operator::render(&text, "dssmr:test")
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let groups = partitions as usize + usize::from(mode == "dssmr");
            assert_eq!(
                rendered.matches("kind: StatefulSet").count(),
                groups,
                "{}",
                path.display()
            );
            assert_eq!(
                rendered.matches("dssmr.io/hardware: hp-se1102").count(),
                groups,
                "{}: every group on the HP SE1102 class",
                path.display()
            );
            let out = scratch.path().join(format!("{mode}-{partitions}.yaml"));
            std::fs::write(&out, rendered).expect("write");
            to_validate.push(out);
        }
    }

    let job_text = std::fs::read_to_string(dir.join("bench-job.yaml")).expect("bench-job.yaml");
    let job: serde_json::Value = serde_yaml::from_str(&job_text).expect("YAML");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"]["dssmr.io/hardware"], "dell-sc1435",
        "clients on the Dell SC1435 class"
    );
    let cluster_yaml =
        std::fs::read_to_string(dir.join("cluster-dssmr-8.yaml")).expect("cluster-dssmr-8");
    let rendered = dssmr_operator::render(&cluster_yaml, "dssmr:test").expect("renders");
    let config_map = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("the cluster's ConfigMap is mounted");
    assert!(
        rendered.contains(&format!("name: {config_map}")),
        "bench-job.yaml mounts {config_map}, which the operator does not write for paper-dssmr-8"
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    assert_eq!(
        &args[..4],
        ["bench", "chirper", "--cluster", "/etc/dssmr/cluster.yaml"]
    );
    // Every flag is one of `dssmr bench chirper`'s (clap derives --a-b from field a_b).
    let cli = rust_sources(&root().join("replica/cli/src"));
    for flag in args.iter().filter_map(|a| a.strip_prefix("--")) {
        let field = format!("    {}: ", flag.replace('-', "_"));
        assert!(
            cli.contains(&field),
            "bench-job.yaml: --{flag} is not a flag of dssmr bench chirper"
        );
    }
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"], "/etc/dssmr",
        "the config is mounted where --cluster reads it"
    );
    to_validate.push(dir.join("bench-job.yaml"));
    to_validate.push(dir.join("nodes-example.yaml"));

    let mut args = vec!["validate-files"];
    let paths: Vec<String> = to_validate
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    chartcheck(&args, Duration::from_secs(180));
}

/// The text of every `.rs` file under `dir` (the `dssmr` CLI keeps a file per subcommand).
fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("read the CLI sources") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            text.push_str(&rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).expect("read a CLI source"));
        }
    }
    text
}
