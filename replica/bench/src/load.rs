//! The clock and counters of one closed-loop run: [`Load`] is what the clients update,
//! [`drive`] runs warm-up and measured window (sampling every second and moving the progress
//! bar), [`join_clients`] stops the clients, and [`Window::measure`] turns what was seen into a
//! [`Measurement`].
//!
//! This module counts and times; it starts no cluster and issues no command.

use crate::stats::Latencies;
use crate::Result;
use dssmr_engine::client::proxy::{ProxyStats, StatsSnapshot};
use dssmr_engine::client::ProxyError;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the closed-loop clients of one run share: whether to stop, whether the measured window
/// is open, and how many commands completed or failed.
#[derive(Debug, Default)]
pub struct Load {
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Commands completed since the load started.
    done: AtomicU64,
    /// Commands completed in the measured window.
    measured_done: AtomicU64,
    /// Commands that failed (rejected or unknown outcome) in the measured window.
    measured_errors: AtomicU64,
    /// Commands with an unknown outcome in the measured window.
    measured_indeterminate: AtomicU64,
}

impl Load {
    /// Whether clients should keep issuing commands.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Tells the clients to stop after their command in flight.
    pub fn stop(&self) {
        self.measuring.store(false, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Counts one command that took `elapsed`; in the measured window a completed command's
    /// latency goes into `lat`.
    pub fn count<T>(
        &self,
        outcome: &Result<T, ProxyError>,
        elapsed: Duration,
        lat: &mut Latencies,
    ) {
        let measuring = self.measuring.load(Ordering::Relaxed);
        match outcome {
            Ok(_) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                if measuring {
                    lat.record(elapsed);
                    self.measured_done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if measuring => {
                self.measured_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, ProxyError::Indeterminate(_)) {
                    self.measured_indeterminate.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {}
        }
    }

    /// Counts the outcome of one command of closed-loop client `client` ([`Load::count`]):
    /// a configuration error ends the client (returned); any other failure is logged as a
    /// failed `what` and the client carries on.
    pub fn tally<T>(
        &self,
        outcome: &Result<T, ProxyError>,
        elapsed: Duration,
        lat: &mut Latencies,
        client: usize,
        what: &str,
    ) -> Result<(), ProxyError> {
        self.count(outcome, elapsed, lat);
        match outcome {
            Ok(_) => Ok(()),
            Err(ProxyError::Config(m)) => Err(ProxyError::Config(m.clone())),
            Err(e) => {
                tracing::debug!(client, error = %e, "{what} failed");
                Ok(())
            }
        }
    }
}

/// One second of load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the second, in seconds since the load started (warm-up included).
    pub t_s: f64,
    /// Whether the second lies in the measured window.
    pub measured: bool,
    /// Commands completed per second.
    pub throughput_cps: f64,
    /// Variables moved per second.
    pub moves_per_s: f64,
    /// Retry replies per second.
    pub retries_per_s: f64,
    /// Commands run spread over several partitions per second.
    #[serde(default)]
    pub spreads_per_s: f64,
}

/// What one run measured, common to every closed-loop benchmark (serialised flat into the
/// benchmark's record).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Commands completed per second in the measured window.
    pub throughput_cps: f64,
    /// Median command latency.
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Variables moved per second (DS-SMR).
    pub moves_per_s: f64,
    /// Retry replies per second (DS-SMR).
    pub retries_per_s: f64,
    /// Commands run spread over several partitions per second (DS-SMR, affinity policy).
    #[serde(default)]
    pub spreads_per_s: f64,
    /// Oracle consults per second (DS-SMR).
    pub consults_per_s: f64,
    /// Share of commands whose variables were all in the location cache (DS-SMR).
    pub cache_hit_ratio: f64,
    /// Commands that fell back to S-SMR in the measured window.
    pub fallbacks: u64,
    /// Commands completed in the measured window.
    pub commands: u64,
    /// Commands that failed in the measured window (rejected or with unknown outcome).
    pub errors: u64,
    /// Of those, commands whose outcome is unknown (`info` in the history).
    pub indeterminate: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Per-second series from the start of the load (warm-up included).
    pub series: Vec<Sample>,
}

/// What [`drive`] saw of the measured window.
#[derive(Debug)]
pub struct Window {
    seconds: f64,
    start: StatsSnapshot,
    end: StatsSnapshot,
    series: Vec<Sample>,
}

impl Window {
    /// The measurement of the window, with the latencies the clients recorded in it.
    pub fn measure(self, load: &Load, lat: &Latencies) -> Measurement {
        let Window {
            seconds,
            start,
            end,
            series,
        } = self;
        let per_s = |n: u64| n as f64 / seconds;
        let hits = end.cache_hits - start.cache_hits;
        let lookups = hits + (end.cache_misses - start.cache_misses);
        let commands = load.measured_done.load(Ordering::Relaxed);
        Measurement {
            throughput_cps: per_s(commands),
            p50_ms: lat.quantile_ms(0.50),
            p95_ms: lat.quantile_ms(0.95),
            p99_ms: lat.quantile_ms(0.99),
            moves_per_s: per_s(end.moves - start.moves),
            retries_per_s: per_s(end.retries - start.retries),
            spreads_per_s: per_s(end.spreads - start.spreads),
            consults_per_s: per_s(end.consults - start.consults),
            cache_hit_ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
            fallbacks: end.fallbacks - start.fallbacks,
            commands,
            errors: load.measured_errors.load(Ordering::Relaxed),
            indeterminate: load.measured_indeterminate.load(Ordering::Relaxed),
            duration_s: seconds,
            series,
        }
    }
}

/// Stops the clients of a run and merges their latencies; the first client error, if any,
/// fails the run.
pub async fn join_clients(
    load: &Load,
    bar: &ProgressBar,
    tasks: Vec<tokio::task::JoinHandle<Result<Latencies, ProxyError>>>,
) -> Result<Latencies> {
    load.stop();
    bar.set_message("waiting for commands in flight");
    let mut lat = Latencies::default();
    let mut fatal = None;
    for t in tasks {
        match t.await? {
            Ok(l) => lat.merge(&l),
            Err(e) => fatal = Some(e),
        }
    }
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(lat),
    }
}

/// Set once the process was asked to stop (SIGTERM, e.g. `kubectl delete` of a bench pod, or
/// Ctrl-C): the running run ends its window at once and later runs end right after their
/// setup, so results, history and checks are still written.
static STOP_EARLY: AtomicBool = AtomicBool::new(false);

/// Ends the running run (and any later one) now, as if its duration were over.
pub fn stop_early() {
    STOP_EARLY.store(true, Ordering::Relaxed);
}

/// Whether [`stop_early`] was called.
pub fn stopping_early() -> bool {
    STOP_EARLY.load(Ordering::Relaxed)
}

/// Runs the clock of a run whose clients update `load`: `warmup` unmeasured, then `duration`
/// measured, sampling every second and updating the progress bar. Closes the window when done
/// or when [`stop_early`] is called (the caller stops the clients).
pub async fn drive(
    warmup: Duration,
    duration: Duration,
    load: &Load,
    stats: &ProxyStats,
    bar: &ProgressBar,
) -> Window {
    let total = warmup + duration;
    bar.set_length(total.as_millis().max(1) as u64);
    bar.set_position(0);
    let begin = Instant::now();
    let mut window_start: Option<(Instant, StatsSnapshot)> = None;
    if warmup.is_zero() {
        load.measuring.store(true, Ordering::Relaxed);
        window_start = Some((begin, stats.snapshot()));
    }
    let mut series = Vec::new();
    let mut last = (begin, 0u64, stats.snapshot());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let elapsed = now - begin;
        if window_start.is_none() && elapsed >= warmup {
            load.measuring.store(true, Ordering::Relaxed);
            window_start = Some((now, stats.snapshot()));
        }
        let finished = elapsed >= total || stopping_early();
        if now - last.0 >= Duration::from_secs(1) || finished {
            let done = load.done.load(Ordering::Relaxed);
            let snap = stats.snapshot();
            let secs = (now - last.0).as_secs_f64().max(1e-3);
            let sample = Sample {
                t_s: elapsed.as_secs_f64(),
                measured: window_start.is_some_and(|(t, _)| t < now),
                throughput_cps: (done - last.1) as f64 / secs,
                moves_per_s: (snap.moves - last.2.moves) as f64 / secs,
                retries_per_s: (snap.retries - last.2.retries) as f64 / secs,
                spreads_per_s: (snap.spreads - last.2.spreads) as f64 / secs,
            };
            bar.set_message(format!(
                "{}{:.0} cmd/s, {:.0} moves/s",
                if window_start.is_some() {
                    ""
                } else {
                    "warm-up: "
                },
                sample.throughput_cps,
                sample.moves_per_s
            ));
            series.push(sample);
            last = (now, done, snap);
        }
        bar.set_position(elapsed.as_millis().min(total.as_millis()) as u64);
        if finished {
            break;
        }
    }
    load.measuring.store(false, Ordering::Relaxed);
    let end = stats.snapshot();
    let (t0, start) = window_start.unwrap_or((begin, end));
    Window {
        seconds: t0.elapsed().as_secs_f64().max(1e-3),
        start,
        end,
        series,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dssmr_engine::client::ClientError;

    pub(crate) fn unknown() -> ProxyError {
        ProxyError::Indeterminate(ClientError::Unavailable {
            group: dssmr_engine::ids::GroupId(1),
            last: "test".into(),
        })
    }

    #[test]
    fn load_counts_only_the_measured_window() {
        let load = Load::default();
        let mut lat = Latencies::default();
        let ms = Duration::from_millis(2);
        load.count(&Ok::<_, ProxyError>(()), ms, &mut lat);
        load.measuring.store(true, Ordering::Relaxed);
        load.count(&Ok::<_, ProxyError>(()), ms, &mut lat);
        load.count(&Err::<(), _>(unknown()), ms, &mut lat);
        load.count(
            &Err::<(), _>(ProxyError::Rejected("x".into())),
            ms,
            &mut lat,
        );
        assert!(load.running());
        load.stop();
        assert!(!load.running());
        let window = Window {
            seconds: 2.0,
            start: StatsSnapshot::default(),
            end: StatsSnapshot {
                moves: 4,
                cache_hits: 3,
                cache_misses: 1,
                ..StatsSnapshot::default()
            },
            series: Vec::new(),
        };
        let m = window.measure(&load, &lat);
        assert_eq!((m.commands, m.errors, m.indeterminate), (1, 2, 1));
        assert_eq!(lat.count(), 1);
        assert_eq!((m.throughput_cps, m.moves_per_s), (0.5, 2.0));
        assert_eq!(m.cache_hit_ratio, 0.75);
    }
}
