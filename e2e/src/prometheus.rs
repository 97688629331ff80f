//! A real Prometheus server (Debian's `prometheus` package) on 127.0.0.1, scraping the
//! replicas given to it every second, and queries through its HTTP API.

use crate::probe::get;
use crate::wait_for;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

/// Where the `prometheus` binary is: `$PROMETHEUS`, else `/usr/bin/prometheus`.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    path.exists().then_some(path)
}

impl Prometheus {
    /// Starts `binary` scraping `targets` (`host:port`, each with its `pod` label) every
    /// second, and waits until it answers queries.
    pub fn start(binary: &Path, targets: &[(String, String)]) -> anyhow::Result<Prometheus> {
        let mut jobs = String::from("  - job_name: dssmr\n    static_configs:\n");
        for (addr, pod) in targets {
            jobs.push_str(&format!(
                "      - targets: ['{addr}']\n        labels: {{pod: '{pod}'}}\n"
            ));
        }
        Self::with_scrape_configs(binary, &jobs)
    }

    /// Starts `binary` with the `scrape_configs` entries `jobs` (YAML list items indented by
    /// two spaces), scraping and evaluating every second, and waits until it answers queries.
    pub fn with_scrape_configs(binary: &Path, jobs: &str) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let p = Prometheus {
            child,
            url,
            _dir: dir,
        };
        wait_for(
            "Prometheus ready",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || match get(&format!("{}/-/ready", p.url))? {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            },
        )?;
        Ok(p)
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Evaluates instant query `promql`: the value of each series (empty: no series).
    pub fn query(&self, promql: &str) -> Result<Vec<f64>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url, percent_encode(promql));
        let (code, body) = get(&url)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("query {promql:?} failed: {body}"));
        }
        Ok(v["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The health of every scrape target: `(pod, up)`.
    pub fn targets_up(&self) -> Result<Vec<(String, bool)>, String> {
        let (_, body) = get(&format!("{}/api/v1/targets", self.url))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(v["data"]["activeTargets"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            t["labels"]["pod"].as_str().unwrap_or("?").to_string(),
                            t["health"] == "up",
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters stay).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::percent_encode("sum(rate(x{a=\"b\"}[5s]))"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B5s%5D%29%29"
        );
    }
}
