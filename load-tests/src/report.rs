//! What a run leaves behind: a per-second timeline, a table for people, the
//! JSON for machines, and a self-contained HTML page with charts (uPlot is
//! embedded, so the page opens without internet).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::common::histogram;

/// Counts per kind and a latency histogram for each second of a run.
pub struct Timeline {
    start: Instant,
    seconds: Vec<(BTreeMap<String, u64>, Histogram<u64>)>,
}

impl Timeline {
    pub fn new(start: Instant) -> Self {
        Timeline {
            start,
            seconds: Vec::new(),
        }
    }

    fn slot(&mut self, at: Instant) -> &mut (BTreeMap<String, u64>, Histogram<u64>) {
        self.second(at.saturating_duration_since(self.start).as_secs() as usize)
    }

    fn second(&mut self, i: usize) -> &mut (BTreeMap<String, u64>, Histogram<u64>) {
        while self.seconds.len() <= i {
            self.seconds.push((BTreeMap::new(), histogram()));
        }
        &mut self.seconds[i]
    }

    /// One event of `kind` at `at`, with its latency if it has one.
    pub fn record(&mut self, at: Instant, kind: &str, micros: Option<u64>) {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        self.record_in(i, kind, micros);
    }

    /// One event of `kind` in second `i` of the run.
    pub fn record_in(&mut self, i: usize, kind: &str, micros: Option<u64>) {
        let (counts, h) = self.second(i);
        match counts.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                counts.insert(kind.to_owned(), 1);
            }
        }
        if let Some(m) = micros {
            let _ = h.record(m.max(1));
        }
    }

    pub fn merge(&mut self, other: Timeline) {
        for (i, (counts, h)) in other.seconds.into_iter().enumerate() {
            let at = other.start + std::time::Duration::from_secs(i as u64);
            let (mine, mh) = self.slot(at);
            for (k, v) in counts {
                *mine.entry(k).or_default() += v;
            }
            let _ = mh.add(h);
        }
    }

    /// How many events of `kind` each second had.
    pub fn counts(&self, kind: &str) -> Vec<u64> {
        self.seconds
            .iter()
            .map(|(c, _)| c.get(kind).copied().unwrap_or(0))
            .collect()
    }

    /// The latencies of the whole run.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = histogram();
        for (_, h) in &self.seconds {
            let _ = all.add(h);
        }
        all
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, (counts, h))| {
                let q = |q: f64| {
                    if h.is_empty() {
                        Value::Null
                    } else {
                        json!(h.value_at_quantile(q) as f64 / 1000.0)
                    }
                };
                json!({ "t": t, "counts": counts, "p50_ms": q(0.5), "p99_ms": q(0.99) })
            })
            .collect();
        Value::Array(rows)
    }
}

/// Prints the report's figures as a two-column table (the timeline aside).
pub fn print_table(report: &Value) {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "timeline" {
                        continue;
                    }
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Number(n) => {
                let s = match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{f:.2}"),
                    _ => n.to_string(),
                };
                out.push((prefix.to_owned(), s));
            }
            Value::Null => {}
            other => out.push((
                prefix.to_owned(),
                other.to_string().trim_matches('"').to_owned(),
            )),
        }
    }
    let mut rows = Vec::new();
    walk("", report, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

const UPLOT_JS: &str = include_str!("../../src/web/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../src/web/vendor/uplot/uPlot.min.css");

/// Writes `<dir>/<name>.json` and `<dir>/<name>.html`.
pub fn write(dir: &Path, name: &str, report: &Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    std::fs::write(dir.join(format!("{name}.json")), &json)?;
    // `</` cannot close the script element from inside the data.
    let data = serde_json::to_string(report)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let html = format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lychee-load: {name}</title>
<style>{UPLOT_CSS}
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 12px; border-bottom: 1px solid #eee; }}
h2 {{ margin-top: 2em; }}
</style></head><body>
<h1>lychee-load: {name}</h1>
<div id="charts"></div>
<h2>Figures</h2><table id="figures"></table>
<script>{UPLOT_JS}</script>
<script>
const report = {data};
const tl = report.timeline || [];
const xs = tl.map(r => r.t);
const kinds = [...new Set(tl.flatMap(r => Object.keys(r.counts)))];
const palette = ["#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d"];
function chart(title, names, series) {{
  const h = document.createElement("h2");
  h.textContent = title;
  document.getElementById("charts").appendChild(h);
  const div = document.createElement("div");
  document.getElementById("charts").appendChild(div);
  new uPlot({{ width: 900, height: 300,
    series: [{{ label: "s" }}, ...names.map((n, i) => ({{ label: n, stroke: palette[i % palette.length] }}))],
    axes: [{{}}, {{}}] }}, [xs, ...series], div);
}}
if (tl.length) {{
  chart("Throughput per second", kinds, kinds.map(k => tl.map(r => r.counts[k] || 0)));
  chart("Latency (ms)", ["p50", "p99"], [tl.map(r => r.p50_ms), tl.map(r => r.p99_ms)]);
}}
const table = document.getElementById("figures");
function walk(prefix, v) {{
  if (v && typeof v === "object" && !Array.isArray(v)) {{
    for (const [k, x] of Object.entries(v)) if (k !== "timeline") walk(prefix ? prefix + "." + k : k, x);
  }} else if (v !== null) {{
    const tr = table.insertRow();
    tr.insertCell().textContent = prefix;
    tr.insertCell().textContent = typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(2)) : String(v);
  }}
}}
walk("", report);
</script></body></html>
"##
    );
    std::fs::write(dir.join(format!("{name}.html")), html)
}
