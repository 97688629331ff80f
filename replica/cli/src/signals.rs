//! SIGINT and SIGTERM for the subcommands that serve until stopped (`dssmr local`,
//! `dssmr replica`) and for `dssmr bench`, which ends its runs early on them. This module only listens; what stopping means is the caller's.

/// SIGINT and SIGTERM, listened to from installation on.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: from now on neither signal kills the process.
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal and names it.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
