//! What the settings say about a topic's values and keys (`--value-format`, `--key-format`,
//! `--value-schema`, `--key-schema`, `--schema-registry`), and why decoding could not be set
//! up, naming the setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::secret::Secret;

/// How a topic's values (or keys) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Verbatim: sent as they are, never looked at.
    #[default]
    Raw,
    /// JSON text; a value framed as the JSON Schema serializer frames it is accepted too.
    Json,
    /// Avro: framed with a registry schema id, or plain with a schema of the topic's own.
    Avro,
    /// Protobuf: framed with a registry schema id, or plain with a descriptor set.
    Protobuf,
    /// JSON after the schema registry's header.
    JsonSchema,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
            Format::JsonSchema => "json-schema",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = DecodeSetupError;

    fn from_str(s: &str) -> Result<Format, DecodeSetupError> {
        Ok(match s {
            "raw" => Format::Raw,
            "json" => Format::Json,
            "avro" => Format::Avro,
            "protobuf" => Format::Protobuf,
            "json-schema" => Format::JsonSchema,
            _ => return Err(DecodeSetupError::UnknownFormat(s.to_owned())),
        })
    }
}

/// Where the schema registry is, and the Basic credentials it wants.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// A schema of the topic's own, for values written without a registry: plain Avro datums,
/// or plain Protobuf messages (no header in either case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSchema {
    /// `avro:FILE.avsc`
    Avro(PathBuf),
    /// `protobuf:FILE.desc:package.Message`: a descriptor set (`protoc -o`, with
    /// `--include_imports`) and the message type the values are.
    Protobuf { descriptor_set: PathBuf, message: String },
}

impl LocalSchema {
    fn format(&self) -> Format {
        match self {
            LocalSchema::Avro(_) => Format::Avro,
            LocalSchema::Protobuf { .. } => Format::Protobuf,
        }
    }
}

impl fmt::Display for LocalSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalSchema::Avro(path) => write!(f, "avro:{}", path.display()),
            LocalSchema::Protobuf { descriptor_set, message } => {
                write!(f, "protobuf:{}:{message}", descriptor_set.display())
            }
        }
    }
}

/// `avro:FILE.avsc` or `protobuf:FILE.desc:package.Message` (what follows `TOPIC=`).
impl FromStr for LocalSchema {
    type Err = DecodeSetupError;

    fn from_str(s: &str) -> Result<LocalSchema, DecodeSetupError> {
        let wrong = || DecodeSetupError::LocalSchemaSyntax(s.to_owned());
        match s.split_once(':') {
            Some(("avro", file)) if !file.is_empty() => Ok(LocalSchema::Avro(file.into())),
            Some(("protobuf", rest)) => match rest.rsplit_once(':') {
                // The message name holds no colon; a path may.
                Some((file, message)) if !file.is_empty() && !message.is_empty() => {
                    Ok(LocalSchema::Protobuf { descriptor_set: file.into(), message: message.to_owned() })
                }
                _ => Err(wrong()),
            },
            _ => Err(wrong()),
        }
    }
}

/// How one topic's values and keys are read.
#[derive(Debug, Clone, Default)]
pub struct TopicFormats {
    pub value: Format,
    pub key: Format,
    pub value_schema: Option<LocalSchema>,
    pub key_schema: Option<LocalSchema>,
}

/// The value or the key: which settings an error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Value,
    Key,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Value => "value",
            Side::Key => "key",
        }
    }

    /// `--value-format TOPIC=avro`
    pub fn format_setting(self, topic: &str, format: Format) -> String {
        format!("--{}-format {topic}={format}", self.name())
    }

    /// `--value-schema TOPIC=avro:FILE.avsc`
    pub fn schema_setting(self, topic: &str, schema: &LocalSchema) -> String {
        format!("--{}-schema {topic}={schema}", self.name())
    }

    /// Checks that `format` and `schema` go together.
    pub fn check(self, topic: &str, format: Format, schema: Option<&LocalSchema>) -> Result<(), DecodeSetupError> {
        match (format, schema) {
            (Format::Avro | Format::Protobuf, Some(schema)) if schema.format() == format => Ok(()),
            (_, Some(schema)) => Err(DecodeSetupError::SchemaMismatch {
                setting: self.schema_setting(topic, schema),
                format: self.format_setting(topic, format),
            }),
            (_, None) => Ok(()),
        }
    }

    /// The error of a schema format with neither a registry nor a schema of its own.
    pub fn needs_schema(self, topic: &str, format: Format) -> DecodeSetupError {
        DecodeSetupError::NeedsSchema {
            setting: self.format_setting(topic, format),
            schema: format!("--{}-schema {topic}={format}:…", self.name()),
        }
    }
}

/// Why decoding could not be set up: each message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum DecodeSetupError {
    #[error("unknown format `{0}`: expected raw, json, avro, protobuf or json-schema")]
    UnknownFormat(String),
    #[error("`{0}`: expected avro:FILE.avsc or protobuf:FILE.desc:package.Message")]
    LocalSchemaSyntax(String),
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Unreadable {
        setting: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting}: {} is not a valid {kind}: {error}", path.display())]
    InvalidSchema { setting: String, path: PathBuf, kind: &'static str, error: String },
    #[error("{setting}: {} has no message type {message}", path.display())]
    NoSuchMessage { setting: String, path: PathBuf, message: String },
    #[error("{setting}: a schema is needed: --schema-registry, or {schema}")]
    NeedsSchema { setting: String, schema: String },
    #[error("{setting} does not go with {format}")]
    SchemaMismatch { setting: String, format: String },
    #[error("--schema-registry: {0}")]
    RegistryUrl(String),
    #[error("--schema-registry: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_print_the_same() {
        for name in ["raw", "json", "avro", "protobuf", "json-schema"] {
            assert_eq!(name.parse::<Format>().unwrap().to_string(), name);
        }
        let error = "xml".parse::<Format>().unwrap_err().to_string();
        assert!(error.contains("`xml`") && error.contains("json-schema"), "{error}");
    }

    #[test]
    fn local_schemas_parse_both_forms() {
        assert_eq!("avro:s/t.avsc".parse::<LocalSchema>().unwrap(), LocalSchema::Avro("s/t.avsc".into()));
        assert_eq!(
            "protobuf:c:/d/x.desc:acme.v1.Reading".parse::<LocalSchema>().unwrap(),
            LocalSchema::Protobuf { descriptor_set: "c:/d/x.desc".into(), message: "acme.v1.Reading".into() }
        );
        for wrong in ["avro:", "protobuf:x.desc", "protobuf:x.desc:", "json:x", "x.avsc"] {
            assert!(wrong.parse::<LocalSchema>().is_err(), "{wrong}");
        }
        let schema: LocalSchema = "protobuf:x.desc:a.B".parse().unwrap();
        assert_eq!(schema.to_string(), "protobuf:x.desc:a.B");
    }

    #[test]
    fn a_schema_goes_only_with_its_own_format() {
        let avro = LocalSchema::Avro("t.avsc".into());
        assert!(Side::Value.check("t", Format::Avro, Some(&avro)).is_ok());
        assert!(Side::Value.check("t", Format::Avro, None).is_ok());
        let error = Side::Key.check("t", Format::Protobuf, Some(&avro)).unwrap_err().to_string();
        assert_eq!(error, "--key-schema t=avro:t.avsc does not go with --key-format t=protobuf");
        let error = Side::Value.check("t", Format::Raw, Some(&avro)).unwrap_err().to_string();
        assert_eq!(error, "--value-schema t=avro:t.avsc does not go with --value-format t=raw");
        let error = Side::Value.needs_schema("t", Format::Protobuf).to_string();
        assert_eq!(
            error,
            "--value-format t=protobuf: a schema is needed: --schema-registry, or --value-schema t=protobuf:…"
        );
    }
}
