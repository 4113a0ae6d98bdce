//! A scenario's figures: printed for people, appended as one JSON line for the summary,
//! and checked (harness failures, not speed: no figure is ever asserted).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Map, Value};

pub struct Report {
    pub scenario: String,
    metrics: Vec<(String, f64)>,
    notes: Vec<String>,
    /// What went wrong with the harness itself (lost records with no slow clients, …).
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(scenario: impl Into<String>) -> Report {
        Report { scenario: scenario.into(), metrics: Vec::new(), notes: Vec::new(), problems: Vec::new() }
    }

    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.push((name.to_owned(), value));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records a harness problem when `bad`.
    pub fn check(&mut self, bad: bool, problem: impl FnOnce() -> String) {
        if bad {
            self.problems.push(problem());
        }
    }

    pub fn print(&self) {
        println!("== {}", self.scenario);
        let width = self.metrics.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &self.metrics {
            println!("  {name:<width$}  {}", format_value(*value));
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
        for p in &self.problems {
            println!("  PROBLEM: {p}");
        }
    }

    pub fn append_json(&self, path: &Path) -> Result<()> {
        let metrics: Map<String, Value> = self.metrics.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
        let line = json!({
            "scenario": self.scenario,
            "metrics": metrics,
            "notes": self.notes,
            "problems": self.problems,
        });
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{line}")?;
        Ok(())
    }
}

pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
