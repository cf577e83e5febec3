//! Prometheus metrics, rendered as the text exposition format at `/metrics`: requests by outcome,
//! request and queue durations, batch sizes and requests in flight, labelled by model and version.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Cumulative counts per bucket bound.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, bound) in self.buckets.iter_mut().zip(bounds) {
            if v <= *bound {
                *b += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        for (k, bound) in bounds.iter().enumerate() {
            let n = self.buckets.get(k).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Clone, Default)]
struct ModelMetrics {
    success: u64,
    failure: BTreeMap<&'static str, u64>,
    request: Histogram,
    queue: Histogram,
    batch: Histogram,
    in_flight: i64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    models: Mutex<BTreeMap<(String, String), ModelMetrics>>,
    /// Inference requests refused before they reached a model, by reason.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// (model name, version).
pub type Label = (String, String);

impl Metrics {
    fn with(&self, label: &Label, f: impl FnOnce(&mut ModelMetrics)) {
        if let Ok(mut m) = self.models.lock() {
            f(m.entry(label.clone()).or_default());
        }
    }

    /// A request started.
    pub fn start(&self, label: &Label) {
        self.with(label, |m| m.in_flight += 1);
    }

    /// A request ended: `Ok` or the reason it failed (`bad_request`, `overloaded`...).
    pub fn finish(&self, label: &Label, outcome: Result<(), &'static str>, took: Duration) {
        self.with(label, |m| {
            m.in_flight -= 1;
            match outcome {
                Ok(()) => m.success += 1,
                Err(reason) => *m.failure.entry(reason).or_default() += 1,
            }
            m.request.observe(&DURATION_BUCKETS, took.as_secs_f64());
        });
    }

    /// A request refused before a model was chosen: no or a wrong token (on any path), or an
    /// inference request past the in-flight limit, while draining, with a body too large, too
    /// slow or unreadable, or for no such model.
    pub fn refuse(&self, reason: &'static str) {
        if let Ok(mut r) = self.refused.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }

    pub fn observe_queue(&self, label: &Label, waited: Duration) {
        self.with(label, |m| {
            m.queue.observe(&DURATION_BUCKETS, waited.as_secs_f64())
        });
    }

    pub fn observe_batch(&self, label: &Label, size: usize) {
        self.with(label, |m| m.batch.observe(&BATCH_BUCKETS, size as f64));
    }

    /// The requests in flight, over every model.
    pub fn in_flight(&self) -> i64 {
        self.models
            .lock()
            .map(|m| m.values().map(|v| v.in_flight).sum())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let models = self.models.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let labels = |(n, v): &Label| format!("model=\"{}\",version=\"{}\"", esc(n), esc(v));
        out.push_str("# HELP mdeploy_requests_total Inference requests by outcome.\n");
        out.push_str("# TYPE mdeploy_requests_total counter\n");
        for (label, m) in &models {
            let l = labels(label);
            let _ = writeln!(
                out,
                "mdeploy_requests_total{{{l},status=\"success\"}} {}",
                m.success
            );
            for (reason, n) in &m.failure {
                let _ = writeln!(
                    out,
                    "mdeploy_requests_total{{{l},status=\"failure\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        for (name, help, pick, bounds) in [
            (
                "mdeploy_request_duration_seconds",
                "Time from a request's arrival to its answer.",
                (|m: &ModelMetrics| m.request.clone()) as fn(&ModelMetrics) -> Histogram,
                &DURATION_BUCKETS[..],
            ),
            (
                "mdeploy_queue_duration_seconds",
                "Time requests waited for a worker.",
                |m: &ModelMetrics| m.queue.clone(),
                &DURATION_BUCKETS[..],
            ),
            (
                "mdeploy_batch_size",
                "Requests run together in one engine call.",
                |m: &ModelMetrics| m.batch.clone(),
                &BATCH_BUCKETS[..],
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (label, m) in &models {
                pick(m).render(&mut out, name, &labels(label), bounds);
            }
        }
        out.push_str(
            "# HELP mdeploy_refused_requests_total Requests refused before reaching a model, by \
             reason.\n",
        );
        out.push_str("# TYPE mdeploy_refused_requests_total counter\n");
        let refused = self.refused.lock().map(|r| r.clone()).unwrap_or_default();
        for (reason, n) in &refused {
            let _ = writeln!(
                out,
                "mdeploy_refused_requests_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP mdeploy_inflight_requests Requests being served now.\n");
        out.push_str("# TYPE mdeploy_inflight_requests gauge\n");
        for (label, m) in &models {
            let _ = writeln!(
                out,
                "mdeploy_inflight_requests{{{}}} {}",
                labels(label),
                m.in_flight
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_render_as_prometheus_text() {
        let m = Metrics::default();
        let l = ("rnet".to_string(), "1.0.0".to_string());
        m.start(&l);
        m.finish(&l, Ok(()), Duration::from_millis(3));
        m.start(&l);
        m.finish(&l, Err("bad_request"), Duration::from_millis(30));
        m.observe_batch(&l, 4);
        m.refuse("unauthorized");
        m.refuse("unauthorized");
        let text = m.render();
        assert!(text.contains("mdeploy_refused_requests_total{reason=\"unauthorized\"} 2"));
        assert!(text.contains(
            "mdeploy_requests_total{model=\"rnet\",version=\"1.0.0\",status=\"success\"} 1"
        ));
        assert!(text.contains("status=\"failure\",reason=\"bad_request\"} 1"));
        assert!(text.contains(
            "mdeploy_request_duration_seconds_bucket{model=\"rnet\",version=\"1.0.0\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "mdeploy_request_duration_seconds_bucket{model=\"rnet\",version=\"1.0.0\",le=\"0.05\"} 2"
        ));
        assert!(
            text.contains("mdeploy_batch_size_bucket{model=\"rnet\",version=\"1.0.0\",le=\"4\"} 1")
        );
        assert!(text.contains("mdeploy_inflight_requests{model=\"rnet\",version=\"1.0.0\"} 0"));
        assert_eq!(m.in_flight(), 0);
    }
}
