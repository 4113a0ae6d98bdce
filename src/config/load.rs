//! Reading the settings: flags, then environment variables (and their aliases), then the
//! TOML file, merged into [`Options`] as the user gave them; what clap refuses becomes a
//! config problem like any other.

use clap::Parser;

use super::{ConfigError, Options, Problem, Settings, SETTING};

impl Options {
    /// Parses the process's arguments and environment and merges the TOML file if one is
    /// named: every setting as the user gave it, not yet validated.
    pub fn load() -> Result<Options, ConfigError> {
        let options = match Options::try_parse() {
            Ok(o) => o,
            // Help and version are answers, not errors: printed as clap prints them.
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => return Err(ConfigError { problems: vec![parse_problem(&e)] }),
        };
        Self::load_with(options, |name| std::env::var(name).ok())
    }

    /// As [`Options::load`], from parsed options and an environment lookup (for tests).
    pub fn load_with(mut options: Options, env: impl Fn(&str) -> Option<String>) -> Result<Options, ConfigError> {
        options.read_env_aliases(&env);
        if let Some(path) = options.config.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| single(SETTING.config.to_string(), format!("cannot read {}: {e}", path.display())))?;
            let command = options.command.take();
            options = options
                .merge_file(&text)
                .map_err(|e| single(SETTING.config.to_string(), format!("{}: {e}", path.display())))?;
            options.command = command;
        }
        Ok(options)
    }

    /// Merges a TOML file's settings under these (flags and environment win).
    pub fn merge_file(self, text: &str) -> Result<Options, String> {
        let file: Options = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        // Merge field by field through JSON values, so that adding a setting needs no
        // change here: a value given on the command line or in the environment (not null,
        // not false, not empty) wins over the file's.
        let mut merged = serde_json::to_value(&file).map_err(|e| e.to_string())?;
        let ours = serde_json::to_value(&self).map_err(|e| e.to_string())?;
        if let (Some(merged), serde_json::Value::Object(ours)) = (merged.as_object_mut(), ours) {
            for (name, value) in ours {
                let given = match &value {
                    serde_json::Value::Null | serde_json::Value::Bool(false) => false,
                    serde_json::Value::Array(a) => !a.is_empty(),
                    _ => true,
                };
                if given {
                    merged.insert(name, value);
                }
            }
        }
        let mut out: Options = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        out.config = self.config;
        Ok(out)
    }
}

/// A flag or environment value clap could not take (a port that is not a number, an
/// unknown flag…), as a problem like any other: the setting named as flag and environment
/// variable, on one line, so that start-up fails the same way (exit 64) whatever is wrong.
fn parse_problem(e: &clap::Error) -> Problem {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    // "--port <PORT>": the flag is its first word.
    let flag = context(ContextKind::InvalidArg).and_then(|a| a.split_whitespace().next().map(str::to_owned));
    let setting = match &flag {
        // A flag that is no setting (a subcommand's, or a misspelt one) is named as given.
        Some(flag) => match Settings::ALL.iter().find(|s| s.flag() == *flag) {
            Some(setting) => setting.to_string(),
            None => flag.clone(),
        },
        None => "command line".to_owned(),
    };
    let value = context(ContextKind::InvalidValue).unwrap_or_default();
    let message = match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => match std::error::Error::source(e) {
            Some(cause) => format!("invalid value {value:?}: {cause}"),
            None => format!("invalid value {value:?}"),
        },
        ErrorKind::MissingRequiredArgument => "required".to_owned(),
        ErrorKind::UnknownArgument => match context(ContextKind::SuggestedArg) {
            Some(suggested) => format!("no such setting (did you mean {suggested}? sluice --help lists them all)"),
            None => "no such setting (sluice --help lists them all)".to_owned(),
        },
        // Anything else: clap's own first line, without its "error: ".
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    };
    Problem { setting, message }
}

fn single(setting: String, message: String) -> ConfigError {
    ConfigError { problems: vec![Problem { setting, message }] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn parse(args: &[&str]) -> Options {
        let mut all = vec!["sluice"];
        all.extend_from_slice(args);
        Options::try_parse_from(all).expect("arguments parse")
    }

    #[test]
    fn quix_settings_have_flags_environment_and_file_keys() {
        let o = parse(&["--quix-portal-api", "http://portal"])
            .merge_file(
                "quix_sdk_token = \"from-file\"\nquix_workspace_id = \"ws\"\nquix_portal_api = \"http://file\"\n",
            )
            .unwrap();
        assert_eq!(o.quix_sdk_token.as_ref().map(Secret::expose), Some("from-file"));
        assert_eq!(o.quix_workspace_id.as_deref(), Some("ws"));
        assert_eq!(o.quix_portal_api.as_deref(), Some("http://portal"));
        assert!(!format!("{o:?}").contains("from-file"), "the token reached Debug");
    }

    #[test]
    fn file_values_apply_under_flags() {
        let o = parse(&["--port", "9000"])
            .merge_file("port = 1234\ninput = \"t\"\nbrokers = \"k:9092\"\ndemo = false\nqueue_capacity = 7\n")
            .unwrap();
        assert_eq!(o.port, Some(9000));
        assert_eq!(o.input.as_deref(), Some("t"));
        assert_eq!(o.queue_capacity, Some(7));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = Options::default().merge_file("prot = 80\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn the_broker_alias_stands_in_for_its_variable_under_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "brokers = \"file:9092\"\ninput = \"t\"\n").unwrap();
        let o = Options { config: Some(path), ..Options::default() };
        let env = |name: &str| (name == "KAFKA_BROKERS").then(|| "alias:9092".to_owned());
        let o = Options::load_with(o, env).unwrap();
        assert_eq!(o.brokers.as_deref(), Some("alias:9092"));
        assert_eq!(o.input.as_deref(), Some("t"));
    }
}
