//! Summaries over rounds, the gates of bench/targets.toml, the table and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bench::Sample;

/// One round's samples by workload id.
pub type Round = BTreeMap<String, Sample>;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub desc: String,
    pub unit: String,
    pub rounds: usize,
    pub rate: f64,
    pub yardstick: Option<String>,
    pub yardstick_rate: Option<f64>,
    /// Median of per-round ratios to the yardstick, and the range.
    pub ratio: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub cpu_us_per_op: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub extra: BTreeMap<String, f64>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

pub struct RowInfo<'a> {
    pub id: &'a str,
    pub desc: &'a str,
    pub unit: &'a str,
    pub yardstick: Option<&'a str>,
}

pub fn summarize(row: &RowInfo<'_>, rounds: &[Round]) -> Option<Summary> {
    let samples: Vec<&Sample> = rounds.iter().filter_map(|r| r.get(row.id)).collect();
    if samples.is_empty() {
        return None;
    }
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let mut v: Vec<f64> = samples.iter().filter_map(|s| f(s)).collect();
        median(&mut v)
    };
    let mut ratios: Vec<f64> = Vec::new();
    let mut yard_rates: Vec<f64> = Vec::new();
    if let Some(y) = row.yardstick {
        for round in rounds {
            if let (Some(w), Some(ys)) = (round.get(row.id), round.get(y)) {
                yard_rates.push(ys.rate);
                if ys.rate > 0.0 {
                    ratios.push(w.rate / ys.rate);
                }
            }
        }
    }
    // Workloads run once (after the rounds) compare with the yardstick's median over rounds.
    let mut once_ratio = None;
    if ratios.is_empty() {
        if let Some(y) = row.yardstick {
            yard_rates = rounds
                .iter()
                .filter_map(|r| r.get(y))
                .map(|s| s.rate)
                .collect();
            let mut w: Vec<f64> = samples.iter().map(|s| s.rate).collect();
            if let (Some(w), Some(y)) = (median(&mut w), median(&mut yard_rates.clone())) {
                if y > 0.0 {
                    once_ratio = Some(w / y);
                }
            }
        }
    }
    ratios.extend(once_ratio);
    let mut extra = BTreeMap::new();
    let keys: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.extra.keys()).collect();
    for key in keys {
        if let Some(v) = med(&|s| s.extra.get(key).copied()) {
            extra.insert(key.clone(), v);
        }
    }
    Some(Summary {
        id: row.id.to_string(),
        desc: row.desc.to_string(),
        unit: row.unit.to_string(),
        rounds: samples.len(),
        rate: med(&|s| Some(s.rate)).unwrap_or(0.0),
        yardstick: row.yardstick.map(str::to_string),
        yardstick_rate: median(&mut yard_rates),
        ratio_min: ratios.iter().copied().reduce(f64::min),
        ratio_max: ratios.iter().copied().reduce(f64::max),
        ratio: median(&mut ratios),
        cpu_us_per_op: med(&|s| s.cpu_us_per_op),
        p50_ms: med(&|s| Some(s.p50_us)).unwrap_or(0.0) / 1000.0,
        p99_ms: med(&|s| Some(s.p99_us)).unwrap_or(0.0) / 1000.0,
        errors: samples.iter().map(|s| s.errors).sum(),
        first_error: samples.iter().find_map(|s| s.first_error.clone()),
        extra,
    })
}

/// One gate of bench/targets.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Target id (T0, T1, ...).
    pub id: String,
    pub workload: String,
    #[serde(default)]
    pub note: Option<String>,
    /// Ratio to the workload's yardstick (or to `vs`) must be at least this.
    #[serde(default)]
    pub min_ratio: Option<f64>,
    #[serde(default)]
    pub stretch: Option<f64>,
    /// Compare with this row instead of the workload's own yardstick.
    #[serde(default)]
    pub vs: Option<String>,
    /// Median server CPU µs per op budget: over it WARN, over 1.5x FAIL.
    #[serde(default)]
    pub cpu_us_per_op: Option<f64>,
    /// CPU/op at most this multiple of the yardstick's CPU/op (WARN / 1.5x FAIL as above).
    #[serde(default)]
    pub max_cpu_ratio: Option<f64>,
    /// Metric compared by `max` / `max_over_vs` (default `rate`).
    #[serde(default)]
    pub metric: Option<String>,
    /// Absolute upper bound of `metric`.
    #[serde(default)]
    pub max: Option<f64>,
    /// `metric` at most the same metric of `vs` plus this.
    #[serde(default)]
    pub max_over_vs: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Targets {
    #[serde(default)]
    pub gate: Vec<Gate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Pass,
    Warn,
    Fail,
    NotMeasured,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::NotMeasured => "n/a",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    pub gate: Gate,
    pub status: Status,
    pub detail: String,
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Evaluates a gate: the ratio (median of per-round ratios) against `min_ratio`, absolute
/// bounds, and CPU budgets (over budget = WARN, over 1.5x budget = FAIL).
pub fn evaluate(
    gate: &Gate,
    summaries: &BTreeMap<String, Summary>,
    rounds: &[Round],
) -> GateResult {
    let Some(w) = summaries.get(&gate.workload) else {
        return GateResult {
            gate: gate.clone(),
            status: Status::NotMeasured,
            detail: "workload not measured (feature not built yet?)".into(),
        };
    };
    let mut status = Status::Pass;
    let mut details = Vec::new();
    let worsen = |s: &mut Status, to: Status| {
        if matches!((*s, to), (Status::Pass, _) | (Status::Warn, Status::Fail)) {
            *s = to;
        }
    };
    if w.errors > 0 {
        worsen(&mut status, Status::Fail);
        details.push(format!("{} errors", w.errors));
    }
    let vs_id = gate.vs.clone().or_else(|| w.yardstick.clone());
    if let Some(min) = gate.min_ratio {
        let ratio = if gate.vs.is_some() && gate.vs != w.yardstick {
            // Per-round ratios against another row.
            let vs = vs_id.as_deref().unwrap_or_default();
            let mut r: Vec<f64> = rounds
                .iter()
                .filter_map(|round| {
                    let (a, b) = (round.get(&gate.workload)?, round.get(vs)?);
                    (b.rate > 0.0).then(|| a.rate / b.rate)
                })
                .collect();
            median(&mut r)
        } else {
            w.ratio
        };
        match ratio {
            Some(r) => {
                if r < min {
                    worsen(&mut status, Status::Fail);
                }
                let stretch = gate
                    .stretch
                    .map(|s| format!(", stretch {s}"))
                    .unwrap_or_default();
                details.push(format!(
                    "ratio {r:.2} vs {} (gate ≥ {min}{stretch})",
                    vs_id.as_deref().unwrap_or("?")
                ));
            }
            None => {
                worsen(&mut status, Status::Fail);
                details.push("no ratio (yardstick missing)".into());
            }
        }
    }
    let metric = gate.metric.as_deref().unwrap_or("rate");
    let metric_value = |s: &Summary| match metric {
        "rate" => Some(s.rate),
        "p50_ms" => Some(s.p50_ms),
        "p99_ms" => Some(s.p99_ms),
        "cpu_us_per_op" => s.cpu_us_per_op,
        other => s.extra.get(other).copied(),
    };
    if let Some(max) = gate.max {
        match metric_value(w) {
            Some(v) => {
                if v > max {
                    worsen(&mut status, Status::Fail);
                }
                details.push(format!("{metric} {} (gate ≤ {max})", fmt_num(v)));
            }
            None => {
                worsen(&mut status, Status::Fail);
                details.push(format!("no {metric}"));
            }
        }
    }
    if let Some(over) = gate.max_over_vs {
        let base = vs_id.as_ref().and_then(|v| summaries.get(v));
        match (metric_value(w), base.and_then(metric_value)) {
            (Some(v), Some(b)) => {
                if v > b + over {
                    worsen(&mut status, Status::Fail);
                }
                details.push(format!(
                    "{metric} {} vs {} {} + {over} (gate)",
                    fmt_num(v),
                    vs_id.as_deref().unwrap_or("?"),
                    fmt_num(b)
                ));
            }
            _ => {
                worsen(&mut status, Status::Fail);
                details.push(format!("no {metric} to compare"));
            }
        }
    }
    let mut cpu_check = |budget: f64, what: String, status: &mut Status| match w.cpu_us_per_op {
        Some(cpu) => {
            let verdict = if cpu > budget * 1.5 {
                worsen(status, Status::Fail);
                ", over 1.5x: FAIL"
            } else if cpu > budget {
                worsen(status, Status::Warn);
                ", over: WARN"
            } else {
                ""
            };
            details.push(format!(
                "CPU {} µs/op ({what} = {}{verdict})",
                fmt_num(cpu),
                fmt_num(budget)
            ));
        }
        None => details.push("CPU/op not measured".into()),
    };
    if let Some(budget) = gate.cpu_us_per_op {
        cpu_check(budget, format!("budget {budget}"), &mut status);
    }
    if let Some(max_ratio) = gate.max_cpu_ratio {
        let base = vs_id
            .as_ref()
            .and_then(|v| summaries.get(v))
            .and_then(|s| s.cpu_us_per_op);
        if let Some(base) = base {
            cpu_check(
                base * max_ratio,
                format!(
                    "budget {max_ratio} × {} {}",
                    vs_id.as_deref().unwrap_or("?"),
                    fmt_num(base)
                ),
                &mut status,
            );
        }
    }
    GateResult {
        gate: gate.clone(),
        status,
        detail: details.join("; "),
    }
}

pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    out.push_str("| workload | absolute | yardstick | ratio [min..max] | server CPU/op | CPU use server / load gen | p50 / p99 | errors |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for s in summaries {
        let absolute = if s.rate > 0.0 {
            format!("{} {}", fmt_num(s.rate), s.unit)
        } else {
            String::new()
        };
        let mut absolute = absolute;
        for (k, v) in &s.extra {
            if k.ends_with("_mb")
                && (k.starts_with("peak_rss") || k == "rss_mb" || k == "rss_growth_mb")
            {
                if !absolute.is_empty() {
                    absolute.push_str(", ");
                }
                let _ = write!(absolute, "{k} {}", fmt_num(*v));
            }
        }
        let yard = match (&s.yardstick, s.yardstick_rate) {
            (Some(y), Some(r)) => format!("{y} {}", fmt_num(r)),
            (Some(y), None) => y.clone(),
            _ => String::new(),
        };
        let ratio = match (s.ratio, s.ratio_min, s.ratio_max) {
            (Some(r), Some(a), Some(b)) => format!("{r:.2} [{a:.2}..{b:.2}]"),
            _ => String::new(),
        };
        let cpu = s
            .cpu_us_per_op
            .map(|c| format!("{} µs", fmt_num(c)))
            .unwrap_or_default();
        let lat = if s.p50_ms > 0.0 {
            format!("{} / {} ms", fmt_num(s.p50_ms), fmt_num(s.p99_ms))
        } else {
            String::new()
        };
        let util = match (
            s.extra.get("server_cpu_util"),
            s.extra.get("client_cpu_util"),
        ) {
            (Some(a), Some(b)) => format!("{:.0}% / {:.0}%", a * 100.0, b * 100.0),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {absolute} | {yard} | {ratio} | {cpu} | {util} | {lat} | {} |",
            s.id, s.errors
        );
    }
    out
}

pub fn gate_table(results: &[GateResult]) -> String {
    let mut out = String::new();
    out.push_str("| target | workload | status | figures |\n| --- | --- | --- | --- |\n");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.gate.id,
            r.gate.workload,
            r.status.label(),
            r.detail
        );
    }
    out
}
