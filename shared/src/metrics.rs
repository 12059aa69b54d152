//! Prometheus metrics kept in memory, and the text exposition format
//! (version 0.0.4) that `/metrics` serves.
//!
//! A metric is a family: a name, its help, its label names, and one value
//! per set of label values. Label values must come from bounded sets (an
//! agent, a status, an RPC method), never ids. Updates take a short lock
//! and search the family's few series in place, allocating only for a new
//! series.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Bucket bounds, in seconds, for the durations of RPCs and database work.
pub const FAST_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Bucket bounds, in seconds, for the durations of attempts and of waits in the queue.
pub const SLOW_SECONDS: &[f64] =
    &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0];

/// One series per distinct set of label values.
#[derive(Debug)]
struct Series<V> {
    rows: Mutex<Vec<(Box<[String]>, V)>>,
}

impl<V: Default + Clone> Series<V> {
    fn new() -> Self {
        Self { rows: Mutex::new(Vec::new()) }
    }

    fn update(&self, labels: &[&str], change: impl FnOnce(&mut V)) {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = rows.iter().position(|(values, _)| values.iter().map(String::as_str).eq(labels.iter().copied()));
        let at = at.unwrap_or_else(|| {
            rows.push((labels.iter().map(|value| (*value).to_owned()).collect(), V::default()));
            rows.len() - 1
        });
        change(&mut rows[at].1);
    }

    fn snapshot(&self) -> Vec<(Box<[String]>, V)> {
        self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A value that only grows (`_total`).
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Series<u64>,
}

impl Counter {
    /// A counter named `name` (ending in `_total`) with these label names.
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        debug_assert!(name.ends_with("_total"), "{name}: a counter's name ends in _total");
        Self { name, help, labels, series: Series::new() }
    }

    /// Adds `by` to the series of `labels` (one value per label name).
    pub fn add(&self, labels: &[&str], by: u64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        self.series.update(labels, |value| *value += by);
    }

    /// The series of `labels`, 0 when never added to.
    pub fn get(&self, labels: &[&str]) -> u64 {
        let rows = self.series.snapshot();
        rows.iter().find(|(values, _)| values.iter().map(String::as_str).eq(labels.iter().copied())).map_or(0, |r| r.1)
    }
}

/// A value that goes up and down, set by whoever knows it.
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Series<f64>,
}

impl Gauge {
    /// A gauge named `name` with these label names.
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, series: Series::new() }
    }

    /// Sets the series of `labels`.
    pub fn set(&self, labels: &[&str], value: f64) {
        self.series.update(labels, |current| *current = value);
    }

    /// Adds `by` (negative to subtract) to the series of `labels`.
    pub fn add(&self, labels: &[&str], by: f64) {
        self.series.update(labels, |current| *current += by);
    }
}

/// Counts of observations by bucket, their sum and count.
#[derive(Debug, Clone, Default)]
struct Buckets {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A distribution of observations (`_seconds`, `_bytes`) over fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Series<Buckets>,
}

impl Histogram {
    /// A histogram named `name` with these label names and bucket upper bounds (ascending).
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{name}: bounds ascend");
        Self { name, help, labels, bounds, series: Series::new() }
    }

    /// Records `value` in the series of `labels`.
    pub fn observe(&self, labels: &[&str], value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        let width = self.bounds.len();
        self.series.update(labels, |buckets| {
            if buckets.counts.len() != width {
                buckets.counts = vec![0; width];
            }
            if let Some(count) = buckets.counts.get_mut(bucket) {
                *count += 1;
            }
            buckets.sum += value;
            buckets.count += 1;
        });
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&self, labels: &[&str], value: Duration) {
        self.observe(labels, value.as_secs_f64());
    }

    /// How many observations the series of `labels` holds.
    pub fn count(&self, labels: &[&str]) -> u64 {
        let rows = self.series.snapshot();
        rows.iter()
            .find(|(values, _)| values.iter().map(String::as_str).eq(labels.iter().copied()))
            .map_or(0, |row| row.1.count)
    }
}

/// A `/metrics` page being written, in the text exposition format.
#[derive(Debug, Default)]
pub struct Page {
    text: String,
}

impl Page {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// The page's text.
    pub fn finish(self) -> String {
        self.text
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        if !labels.is_empty() {
            self.text.push('{');
            for (at, (label, value)) in labels.iter().enumerate() {
                if at > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// Writes a counter's every series.
    pub fn counter(&mut self, counter: &Counter) {
        self.header(counter.name, counter.help, "counter");
        for (values, value) in counter.series.snapshot() {
            let labels = pairs(counter.labels, &values);
            self.sample(counter.name, "", &labels, value as f64);
        }
    }

    /// Writes an in-memory gauge's every series.
    pub fn gauge(&mut self, gauge: &Gauge) {
        self.header(gauge.name, gauge.help, "gauge");
        for (values, value) in gauge.series.snapshot() {
            let labels = pairs(gauge.labels, &values);
            self.sample(gauge.name, "", &labels, value);
        }
    }

    /// Writes a gauge read just now: one sample per row, each row's label
    /// values in the order of `labels`.
    pub fn gauge_rows<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
    ) {
        self.header(name, help, "gauge");
        for (values, value) in rows {
            let pairs: Vec<(&str, &str)> = labels.iter().copied().zip(values).collect();
            self.sample(name, "", &pairs, value);
        }
    }

    /// Writes one unlabelled gauge read just now.
    pub fn gauge_value(&mut self, name: &str, help: &str, value: f64) {
        self.gauge_rows(name, help, &[], [(Vec::new(), value)]);
    }

    /// Writes a histogram's every series: cumulative buckets, sum and count.
    pub fn histogram(&mut self, histogram: &Histogram) {
        self.header(histogram.name, histogram.help, "histogram");
        for (values, buckets) in histogram.series.snapshot() {
            let bounds: Vec<String> = histogram.bounds.iter().map(|bound| number(*bound)).collect();
            let mut labels = pairs(histogram.labels, &values);
            let mut cumulative = 0;
            for (le, count) in bounds.iter().zip(&buckets.counts) {
                cumulative += count;
                labels.push(("le", le));
                self.sample(histogram.name, "_bucket", &labels, cumulative as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf"));
            self.sample(histogram.name, "_bucket", &labels, buckets.count as f64);
            labels.pop();
            self.sample(histogram.name, "_sum", &labels, buckets.sum);
            self.sample(histogram.name, "_count", &labels, buckets.count as f64);
        }
    }
}

fn pairs<'a>(names: &[&'a str], values: &'a [String]) -> Vec<(&'a str, &'a str)> {
    names.iter().copied().zip(values.iter().map(String::as_str)).collect()
}

/// A sample value as Prometheus writes it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_writes_counters_gauges_and_cumulative_buckets() {
        let claims = Counter::new("hive_claims_total", "Tasks claimed.", &["agent"]);
        claims.add(&["echo"], 2);
        claims.add(&["say \"hi\"\n"], 1);
        claims.add(&["echo"], 3);
        let waits = Histogram::new("hive_wait_seconds", "Waits.", &["agent"], &[0.5, 1.0]);
        waits.observe(&["echo"], 0.25);
        waits.observe(&["echo"], 0.75);
        waits.observe(&["echo"], 9.0);
        let mut page = Page::new();
        page.counter(&claims);
        page.histogram(&waits);
        page.gauge_value("hive_up", "Whether it is up.", 1.0);
        let text = page.finish();
        assert_eq!(
            text,
            "# HELP hive_claims_total Tasks claimed.\n# TYPE hive_claims_total counter\n\
             hive_claims_total{agent=\"echo\"} 5\nhive_claims_total{agent=\"say \\\"hi\\\"\\n\"} 1\n\
             # HELP hive_wait_seconds Waits.\n# TYPE hive_wait_seconds histogram\n\
             hive_wait_seconds_bucket{agent=\"echo\",le=\"0.5\"} 1\nhive_wait_seconds_bucket{agent=\"echo\",le=\"1\"} 2\n\
             hive_wait_seconds_bucket{agent=\"echo\",le=\"+Inf\"} 3\nhive_wait_seconds_sum{agent=\"echo\"} 10\n\
             hive_wait_seconds_count{agent=\"echo\"} 3\n\
             # HELP hive_up Whether it is up.\n# TYPE hive_up gauge\nhive_up 1\n"
        );
        assert_eq!(claims.get(&["echo"]), 5);
        assert_eq!(waits.count(&["echo"]), 3);
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        let histogram = Histogram::new("hive_x_seconds", "x", &[], &[1.0, 2.0]);
        histogram.observe(&[], 1.0);
        let text = {
            let mut page = Page::new();
            page.histogram(&histogram);
            page.finish()
        };
        assert!(text.contains("hive_x_seconds_bucket{le=\"1\"} 1\n"), "{text}");
    }
}
