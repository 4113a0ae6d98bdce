//! The README's settings table, held to the declarations: a setting declared but missing
//! from the table, a row naming no setting, or environment names that differ fail here.

use std::collections::BTreeMap;

use super::Settings;

const README: &str = include_str!("../../README.md");
const HEADER: &str = "| flag | environment | default | meaning |";

/// A setting's environment names: its own, and its alias if it has one.
#[derive(Debug, PartialEq, Eq)]
struct EnvNames {
    env: String,
    alias: Option<String>,
}

/// The backticked words of a table cell, each with whether the word `alias` precedes it.
fn quoted(cell: &str) -> Vec<(&str, bool)> {
    let parts: Vec<&str> = cell.split('`').collect();
    (1..parts.len()).step_by(2).map(|i| (parts[i], parts[i - 1].trim_end().ends_with("alias"))).collect()
}

/// flag → environment names, as the table's rows give them. A row may hold several
/// settings (`--tls-cert`, `--tls-key` | `SLUICE_TLS_CERT`, `SLUICE_TLS_KEY`): flags and
/// variables pair up in order.
fn table() -> BTreeMap<String, EnvNames> {
    let start = README.find(HEADER).expect("the README has a settings table");
    let mut rows = BTreeMap::new();
    // Past the header and its `| --- |` line, up to the first line that is not a row.
    for row in README[start..].lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').collect();
        let (flags, envs) = (quoted(cells[1]), quoted(cells[2]));
        let flags: Vec<&str> = flags.iter().map(|(w, _)| *w).filter(|w| w.starts_with("--")).collect();
        // Words such as `;` in "(`;`-separated)" are no variable.
        let envs: Vec<(&str, bool)> =
            envs.into_iter().filter(|(w, _)| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).collect();
        let (aliases, own): (Vec<_>, Vec<_>) = envs.into_iter().partition(|(_, alias)| *alias);
        assert_eq!(flags.len(), own.len(), "flags and variables do not pair up in: {row}");
        assert!(aliases.is_empty() || flags.len() == 1, "an alias in a row of several settings: {row}");
        for (flag, (env, _)) in flags.iter().zip(&own) {
            let names = EnvNames { env: env.to_string(), alias: aliases.first().map(|(a, _)| a.to_string()) };
            assert!(rows.insert(flag.to_string(), names).is_none(), "{flag} has two rows");
        }
    }
    rows
}

#[test]
fn the_readme_settings_table_lists_every_setting_with_its_environment_names() {
    let table = table();
    let declared: BTreeMap<String, EnvNames> = Settings::ALL
        .iter()
        .map(|s| (s.flag(), EnvNames { env: s.env.to_owned(), alias: s.env_alias.map(str::to_owned) }))
        .collect();
    let missing: Vec<_> = declared.keys().filter(|flag| !table.contains_key(*flag)).collect();
    assert!(missing.is_empty(), "declared but not in the README's settings table: {missing:?}");
    let unknown: Vec<_> = table.keys().filter(|flag| !declared.contains_key(*flag)).collect();
    assert!(unknown.is_empty(), "in the README's settings table but not declared: {unknown:?}");
    for (flag, names) in &declared {
        assert_eq!(&table[flag], names, "{flag}: the README's environment names differ from the declaration");
    }
}

#[test]
fn table_rows_pair_flags_with_their_variables_and_aliases() {
    let table = table();
    assert_eq!(table["--tls-key"], EnvNames { env: "SLUICE_TLS_KEY".into(), alias: None });
    assert_eq!(
        table["--brokers"],
        EnvNames { env: "Quix__Broker__Address".into(), alias: Some("KAFKA_BROKERS".into()) }
    );
    assert_eq!(table["--kafka-property"], EnvNames { env: "KAFKA_PROPERTIES".into(), alias: None });
}
