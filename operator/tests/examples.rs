//! Every example manifest renders: it is a valid DSSMRCluster and the operator builds its
//! objects (`dssmr-operator render -f FILE`).

#[test]
fn every_example_renders() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("manifests/examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            let out = dssmr_operator::render(&text, "dssmr:test")
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(out.contains("kind: StatefulSet"), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples missing");
}
