//! The schema settings: a Schema Registry, and per topic how values and keys are encoded
//! (`--value-format`, `--key-format`) and the schemas that need no registry
//! (`--value-schema`, `--key-schema`). Every problem is reported with the setting it is in.

use std::collections::BTreeMap;

use crate::config::options::Options;
use crate::config::{Setting, SETTING};
use crate::decode::{Format, LocalSchema, RegistrySettings, TopicFormats};

/// What decoding the topics needs, as the settings give it.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    pub registry: Option<RegistrySettings>,
    /// The topics whose values or keys are not raw, with how to read them.
    pub topics: BTreeMap<String, TopicFormats>,
}

/// Reads and checks the schema settings against the topics streamed (`input`).
pub(super) fn schemas(o: &Options, topics: &[String], bad: &mut impl FnMut(Setting, String)) -> Schemas {
    let registry = registry(o, bad);
    let mut out: BTreeMap<String, TopicFormats> = BTreeMap::new();
    let known = |setting: Setting, topic: &str, bad: &mut dyn FnMut(Setting, String)| {
        let ok = topics.iter().any(|t| t == topic);
        if !ok {
            bad(setting, format!("names topic {topic:?}, which input does not stream"));
        }
        ok
    };
    for (setting, list, is_key) in
        [(SETTING.value_format, &o.value_format, false), (SETTING.key_format, &o.key_format, true)]
    {
        let mut seen = Vec::new();
        for item in list.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let Some((topic, format)) = item.split_once('=') else {
                bad(setting, format!("{item:?} is not TOPIC=FORMAT"));
                continue;
            };
            let (topic, format) = (topic.trim(), format.trim());
            let format = match format.parse::<Format>() {
                Ok(f) => f,
                Err(_) => {
                    bad(setting, format!("{format:?} is not raw, json, avro, protobuf or json-schema"));
                    continue;
                }
            };
            if seen.contains(&topic.to_owned()) {
                bad(setting, format!("names topic {topic:?} twice"));
                continue;
            }
            seen.push(topic.to_owned());
            if !known(setting, topic, &mut *bad) {
                continue;
            }
            let formats = formats_of(&mut out, topic);
            if is_key {
                formats.key = format;
            } else {
                formats.value = format;
            }
        }
    }
    for (setting, list, is_key) in
        [(SETTING.value_schema, &o.value_schema, false), (SETTING.key_schema, &o.key_schema, true)]
    {
        for item in list.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let Some((topic, schema)) = item.split_once('=') else {
                bad(setting, format!("{item:?} is not TOPIC=avro:FILE or TOPIC=protobuf:FILE:Message"));
                continue;
            };
            let topic = topic.trim();
            let local = match schema.trim().parse::<LocalSchema>() {
                Ok(parsed) => parsed,
                Err(why) => {
                    bad(setting, format!("{item:?}: {why}"));
                    continue;
                }
            };
            let format = match local {
                LocalSchema::Avro(_) => Format::Avro,
                LocalSchema::Protobuf { .. } => Format::Protobuf,
            };
            if !known(setting, topic, &mut *bad) {
                continue;
            }
            let formats = formats_of(&mut out, topic);
            let (current, slot) = if is_key {
                (&mut formats.key, &mut formats.key_schema)
            } else {
                (&mut formats.value, &mut formats.value_schema)
            };
            if slot.is_some() {
                bad(setting, format!("names topic {topic:?} twice"));
                continue;
            }
            // A schema file says the format; a format set as well must agree.
            match current {
                Format::Raw => *current = format,
                f if *f == format => {}
                _ => {
                    bad(setting, format!("{item:?} is not the format the format setting gives topic {topic:?}"));
                    continue;
                }
            }
            *slot = Some(local);
        }
    }
    // A format that needs schemas needs them from somewhere.
    for (topic, formats) in &out {
        for (setting, format, local) in [
            (SETTING.value_format, &formats.value, &formats.value_schema),
            (SETTING.key_format, &formats.key, &formats.key_schema),
        ] {
            if matches!(format, Format::Avro | Format::Protobuf) && local.is_none() && registry.is_none() {
                let schema =
                    if setting.key == SETTING.value_format.key { SETTING.value_schema } else { SETTING.key_schema };
                bad(
                    setting,
                    format!(
                        "topic {topic:?} is {format:?}, which needs its schemas: set {} or {}",
                        SETTING.schema_registry.env, schema.env
                    ),
                );
            }
        }
    }
    out.retain(|_, f| !(f.value == Format::Raw && f.key == Format::Raw));
    Schemas { registry, topics: out }
}

fn formats_of<'a>(out: &'a mut BTreeMap<String, TopicFormats>, topic: &str) -> &'a mut TopicFormats {
    out.entry(topic.to_owned()).or_insert_with(|| TopicFormats {
        value: Format::Raw,
        key: Format::Raw,
        value_schema: None,
        key_schema: None,
    })
}

fn registry(o: &Options, bad: &mut impl FnMut(Setting, String)) -> Option<RegistrySettings> {
    let url = super::validate::http_url(&o.schema_registry, SETTING.schema_registry, bad);
    let user = o.schema_registry_user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let password = o.schema_registry_password.clone().filter(|p| !p.expose().is_empty());
    let Some(url) = url else {
        for (setting, given) in
            [(SETTING.schema_registry_user, user.is_some()), (SETTING.schema_registry_password, password.is_some())]
        {
            if given {
                bad(setting, format!("given without {}", SETTING.schema_registry.env));
            }
        }
        return None;
    };
    if user.is_some() != password.is_some() {
        let (missing, with) = if user.is_some() {
            (SETTING.schema_registry_password, SETTING.schema_registry_user)
        } else {
            (SETTING.schema_registry_user, SETTING.schema_registry_password)
        };
        bad(missing, format!("required with {}", with.env));
    }
    Some(RegistrySettings { url: url.trim_end_matches('/').to_owned(), user: user.map(str::to_owned), password })
}
