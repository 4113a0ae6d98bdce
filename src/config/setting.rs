//! What a setting is — its flag, environment name(s), TOML key, default and help — and the
//! `settings!` macro that turns one table of them (in `options.rs`) into everything else.

use std::fmt;

/// One setting, as users spell it. The flag and the TOML key are the field's name, the way
/// clap and serde derive them (`ws_username`: `--ws-username`, `ws_username = …`); a test
/// holds the flag and environment name to what clap parses.
#[derive(Clone, Copy)]
pub struct Setting {
    /// The field of [`Options`](super::Options), and the key in the TOML file.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Another environment variable read when `env` is unset: a name deployments already use.
    pub env_alias: Option<&'static str>,
    /// The help, one doc-comment line each.
    pub doc: &'static [&'static str],
    /// What it is when nobody sets it.
    pub unset: Unset,
}

/// What a setting is when it is given nowhere: the `[default: …]` of its help.
#[derive(Clone, Copy)]
pub enum Unset {
    /// Nothing: off, or empty.
    Nothing,
    /// This value, with an optional note on what it means. The accessor of the setting's
    /// name applies it (`options.port()`).
    Value(&'static dyn fmt::Display, Option<&'static str>),
    /// Worked out by validation, from other settings or from the machine; shown as written.
    Described(&'static str),
}

impl Setting {
    /// `--ws-username`: the field's name in kebab case, as clap derives the long flag.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    /// The help `sluice --help` shows: the doc comment as one paragraph, with the alias and
    /// the default at its end.
    pub fn help(&self) -> String {
        // As clap joins a doc comment's lines.
        let mut text = self.doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ");
        if let Some(alias) = self.env_alias {
            let end = text.strip_suffix('.').unwrap_or(&text).len();
            text.insert_str(end, &format!(" (alias: {alias})"));
        }
        match self.unset {
            // clap drops a doc comment's closing period; a default follows the sentence.
            Unset::Nothing => {
                if text.ends_with('.') && !text.ends_with("..") {
                    text.pop();
                }
                text
            }
            Unset::Value(value, None) => format!("{text} [default: {value}]"),
            Unset::Value(value, Some(note)) => format!("{text} [default: {value}, {note}]"),
            Unset::Described(default) => format!("{text} [default: {default}]"),
        }
    }
}

/// `--port / PORT`: how every config error names the setting.
impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {}", self.flag(), self.env)
    }
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Declares every setting once. Each entry is a doc comment (the help), `#[arg(long, env =
/// …)]` with any further clap attributes, then optionally `#[env_alias = "…"]`,
/// `#[default(value)]` or `#[default(value, "note")]` (applied by an accessor of the
/// setting's name) or `#[default = "…"]` (described only: validation works it out), and
/// `#[serde(…)]`; then the field. From that table come:
///
/// - `Options`, the struct clap parses from flags and environment and serde reads from the
///   TOML file, with the subcommand and the settings Quix discovery fills in;
/// - `SETTING`, each setting's [`Setting`] by field (`SETTING.port` is `--port / PORT`),
///   and `Settings::ALL`, all of them in the order `--help` lists them;
/// - the accessors of the settings with a default value (`&str` for text, the value
///   itself otherwise), and the reading of aliases.
///
/// Field types are spelled `Name` or `Name<Inner>`: clap and serde must see the type
/// itself, not a macro fragment standing for it.
macro_rules! settings {
    (@option) => { None };
    (@option $value:literal) => { Some($value) };

    (@unset [] []) => { $crate::config::setting::Unset::Nothing };
    (@unset [$value:expr $(, $note:literal)?] []) => {
        $crate::config::setting::Unset::Value(&$value, settings!(@option $($note)?))
    };
    (@unset [] [$described:literal]) => { $crate::config::setting::Unset::Described($described) };

    (@accessor $name:ident [] $($ty:tt)*) => {};
    (@accessor $name:ident [$value:expr] Option<String>) => {
        #[doc = concat!("`", stringify!($name), "` as given, else its default.")]
        pub fn $name(&self) -> &str {
            self.$name.as_deref().unwrap_or($value)
        }
    };
    (@accessor $name:ident [$value:expr] Option<$inner:ident>) => {
        #[doc = concat!("`", stringify!($name), "` as given, else its default.")]
        pub fn $name(&self) -> $inner {
            self.$name.unwrap_or($value)
        }
    };

    (
        #[command($($command:tt)*)]
        $(
            $(#[doc = $doc:literal])*
            #[arg(long, env = $env:literal $(, $($arg:tt)*)?)]
            $(#[env_alias = $alias:literal])?
            $(#[default($value:expr $(, $note:literal)?)])?
            $(#[default = $described:literal])?
            $(#[serde($($serde:tt)*)])?
            $name:ident: $outer:ident $(<$inner:ident>)?,
        )*
    ) => {
        /// Every setting, as the user gave it. Flags and environment come from clap; the same
        /// field names are the keys of the TOML file. All are optional here: defaults are
        /// applied when the options are validated, after the file is merged, so that a file
        /// value is never shadowed by a default.
        #[derive(clap::Parser, serde::Serialize, serde::Deserialize, Default, Debug, Clone)]
        #[command($($command)*)]
        #[serde(default, deny_unknown_fields)]
        pub struct Options {
            /// A task other than serving (`sluice token …`); none runs the gateway.
            #[command(subcommand)]
            #[serde(skip)]
            pub command: Option<Command>,
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, help = SETTING.$name.help() $(, $($arg)*)?)]
                $(#[serde($($serde)*)])?
                pub $name: $outer $(<$inner>)?,
            )*
            /// librdkafka properties fetched from the Quix portal, not given by the user: they
            /// apply under every Kafka setting, so an explicit one always wins.
            #[arg(skip)]
            #[serde(skip)]
            pub discovered_kafka: Vec<(String, KafkaValue)>,
        }

        /// Each setting's names, default and help, under its field's name.
        #[derive(Clone, Copy, Debug)]
        pub struct Settings {
            $(pub $name: $crate::config::setting::Setting,)*
        }

        /// Every setting, by field: `SETTING.port` is `--port / PORT`.
        pub const SETTING: Settings = Settings {
            $(
                $name: $crate::config::setting::Setting {
                    key: stringify!($name),
                    env: $env,
                    env_alias: settings!(@option $($alias)?),
                    doc: &[$($doc),*],
                    unset: settings!(@unset [$($value $(, $note)?)?] [$($described)?]),
                },
            )*
        };

        impl Settings {
            /// Every setting, in the order `--help` lists them.
            pub const ALL: &'static [$crate::config::setting::Setting] = &[$(SETTING.$name),*];
        }

        impl Options {
            $(settings!(@accessor $name [$($value)?] $outer $(<$inner>)?);)*

            /// Takes each setting that has an alias from it, when neither the flag nor the
            /// setting's own variable gave it.
            pub(super) fn read_env_aliases(&mut self, env: &impl Fn(&str) -> Option<String>) {
                $($(
                    if self.$name.is_none() {
                        self.$name = env($alias).filter(|v| !v.trim().is_empty()).map(Into::into);
                    }
                )?)*
            }
        }
    };
}

pub(super) use settings;
