//! `dssmr-operator`: the command line of the operator for `DSSMRCluster` resources.
//!
//! `crd` writes the CustomResourceDefinition into `crds/`; `render -f cluster.yaml` prints the
//! objects the operator builds for a cluster. The controller itself (`run`) is not in this
//! version yet (see the project's open issue).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Kubernetes operator for DSSMRCluster resources (dssmr.io/v1alpha1).
#[derive(Parser)]
#[command(name = "dssmr-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CustomResourceDefinition as YAML into DIR (default `crds/`).
    Crd {
        /// Target directory (created if missing).
        #[arg(long, default_value = "crds")]
        dir: PathBuf,
    },
    /// Print the objects (ConfigMap, and per group a headless Service, a StatefulSet and a
    /// PodDisruptionBudget) the operator would apply for the DSSMRCluster in FILE.
    Render {
        /// A DSSMRCluster manifest (YAML); `-` reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The replica image when the spec names none.
        #[arg(long, default_value = dssmr_operator::validate::DEFAULT_IMAGE)]
        replica_image: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Crd { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("--dir: cannot create {}: {e}", dir.display()))?;
            let path = dir.join("dssmr.io_dssmrclusters.yaml");
            std::fs::write(&path, dssmr_operator::crd::crd_yaml())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        Command::Render {
            file,
            replica_image,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("-f: cannot read {}: {e}", file.display()))?
            };
            print!("{}", dssmr_operator::render(&text, &replica_image)?);
        }
    }
    Ok(())
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
