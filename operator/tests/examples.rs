//! Every example manifest renders: it is a valid DSSMRCluster, the operator builds its objects
//! (`dssmr-operator render -f FILE`), and those objects pass `kubernetes-validate --strict`
//! (the Kubernetes OpenAPI schemas; unknown fields fail). CI must have kubernetes-validate
//! (`e2e/prepare.sh` installs it); elsewhere the schema check is skipped with a message.

use std::path::PathBuf;
use std::process::Command;

/// Kubernetes version of the schemas (the oldest kubernetes-validate 1.37 carries).
const SCHEMA_VERSION: &str = "1.25.0";

fn examples() -> Vec<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("manifests/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_example_renders_to_objects_the_api_schemas_accept() {
    let paths = examples();
    assert!(paths.len() >= 3, "examples missing");
    let validator = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    let have_validator = validator.is_ok_and(|o| o.status.success());
    if !have_validator {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate missing (pip install kubernetes-validate); CI must have it"
        );
        eprintln!("kubernetes-validate not installed: rendered objects not schema-checked");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable");
        let out = dssmr_operator::render(&text, "dssmr:test")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(out.contains("kind: StatefulSet"), "{}", path.display());
        if have_validator {
            let rendered = dir.path().join(path.file_name().expect("file name"));
            std::fs::write(&rendered, &out).expect("write");
            let v = Command::new("kubernetes-validate")
                .args(["--strict", "-k", SCHEMA_VERSION])
                .arg(&rendered)
                .output()
                .expect("run kubernetes-validate");
            assert!(
                v.status.success(),
                "{}: rendered objects fail the {SCHEMA_VERSION} schemas:\n{}{}",
                path.display(),
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            );
        }
    }
}
