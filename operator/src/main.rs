//! `dssmr-operator`: the Kubernetes operator for `DSSMRCluster` resources.
//!
//! Skeleton only: the CRD, controller, rendering and metrics arrive with the operator issue.
//! Until then the binary says so and exits with an error instead of pretending to reconcile.

use clap::Parser;
use std::process::ExitCode;

/// Kubernetes operator for DSSMRCluster resources (not implemented yet).
#[derive(Parser)]
#[command(name = "dssmr-operator", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("dssmr-operator: the controller is not implemented yet (skeleton crate)");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
