//! Tracing setup for the `dssmr` binary and tests: one place, `RUST_LOG` filter, stderr.

/// Installs a stderr subscriber filtered by `RUST_LOG` (default `warn`). Safe to call twice.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
