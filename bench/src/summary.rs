//! Medians over runs: reads the JSON lines scenarios appended and prints, per scenario,
//! each figure's median with its minimum and maximum, as Markdown.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::format_value;

/// One scenario's results over all runs.
#[derive(Default)]
struct Runs {
    runs: usize,
    /// Metric names in first-seen order (a results line keeps them sorted by name).
    order: Vec<String>,
    values: BTreeMap<String, Vec<f64>>,
    problems: Vec<String>,
}

pub fn print(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut by_scenario: BTreeMap<String, Runs> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).context("a results line")?;
        let name = v["scenario"].as_str().unwrap_or("?").to_owned();
        let entry = by_scenario.entry(name).or_default();
        entry.runs += 1;
        if let Some(metrics) = v["metrics"].as_object() {
            for (metric, value) in metrics {
                if !entry.values.contains_key(metric) {
                    entry.order.push(metric.clone());
                }
                entry.values.entry(metric.clone()).or_default().push(value.as_f64().unwrap_or(f64::NAN));
            }
        }
        for p in v["problems"].as_array().into_iter().flatten() {
            entry.problems.push(p.as_str().unwrap_or_default().to_owned());
        }
    }
    for (scenario, Runs { runs, order, values: metrics, problems }) in by_scenario {
        println!("### {scenario} ({runs} run{})\n", if runs == 1 { "" } else { "s" });
        println!("| figure | median | min | max |");
        println!("|---|---:|---:|---:|");
        for metric in order {
            let mut values: Vec<f64> = metrics[&metric].iter().copied().filter(|v| !v.is_nan()).collect();
            if values.is_empty() {
                println!("| {metric} | - | - | - |");
                continue;
            }
            values.sort_by(f64::total_cmp);
            let median = if values.len() % 2 == 1 {
                values[values.len() / 2]
            } else {
                (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
            };
            println!(
                "| {metric} | {} | {} | {} |",
                format_value(median),
                format_value(values[0]),
                format_value(values[values.len() - 1])
            );
        }
        for p in problems {
            println!("\nProblem in a run: {p}");
        }
        println!();
    }
    Ok(())
}
