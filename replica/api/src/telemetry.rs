//! Tracing setup for the `dssmr` binary and tests: one place, `RUST_LOG` filter, stderr.

/// Installs a stderr subscriber filtered by `RUST_LOG` (default `warn`). Safe to call twice.
pub fn init() {
    init_with_default("warn");
}

/// As [`init`], but by default silences openraft, whose warnings about peers that tests crash
/// on purpose would drown the test output (`RUST_LOG` still overrides).
pub fn init_for_tests() {
    init_with_default("warn,openraft=off");
}

/// As [`init`], with `default` as the filter when `RUST_LOG` is not set.
pub fn init_with(default: &str) {
    init_with_default(default);
}

fn init_with_default(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
