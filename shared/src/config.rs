//! Config layering shared by every binary: defaults in code, then an optional
//! TOML file, then environment variables, then command-line flags; each layer
//! overrides the one before. Also [`Secret`], which keeps a value out of logs.
//!
//! The loader takes its sources as arguments (the environment is a list of
//! pairs, not read here), so tests never touch the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A config that could not be loaded or is not valid; lists every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem, each naming the setting.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> Self {
        Self { problems: error.into_iter().map(|one| one.to_string()).collect() }
    }
}

/// Loads `T` from its layers and validates it with `validate`, which returns every problem.
///
/// `env_prefix` selects variables such as `HIVE_COORDINATOR__DATABASE__URL`
/// (the prefix, then the key path split by `__`); `flags` is a serializable
/// value whose `None` fields are skipped.
///
/// # Errors
/// [`ConfigError`] naming each bad setting, its layer and the file or variable it came from.
pub fn load<T>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    env_prefix: &str,
    flags: impl Serialize,
    validate: impl FnOnce(&T) -> Vec<String>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError { problems: vec![format!("config file {} does not exist", path.display())] });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let figment = figment.merge(EnvVars::new(env_prefix, env)).merge(Serialized::defaults(flags));
    let config: T = figment.extract().map_err(|first| ConfigError { problems: type_errors::<T>(&figment, first) })?;
    let problems = validate(&config);
    if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
}

/// Most bad keys reported from one load.
const MAX_TYPE_ERRORS: usize = 64;

/// Every key whose value has the wrong type or name, not only the first one
/// serde stops at: each is named with the layer it came from, then left out
/// and the rest decoded again.
fn type_errors<T: DeserializeOwned>(figment: &Figment, first: figment::Error) -> Vec<String> {
    let Ok(mut data) = figment.data().map(|mut profiles| profiles.remove(&Profile::Default).unwrap_or_default()) else {
        return ConfigError::from_figment(first).problems;
    };
    let mut problems = Vec::new();
    let mut error = first;
    while problems.len() < MAX_TYPE_ERRORS {
        let mut path = error.path.clone();
        if let figment::error::Kind::UnknownField(field, _) = &error.kind
            && path.last() != Some(field)
        {
            path.push(field.clone());
        }
        let key = path.join(".");
        let source = figment.find_metadata(&key).map_or_else(String::new, |metadata| match &metadata.source {
            Some(source) => format!(" in {source} {}", metadata.name),
            None => format!(" in {}", metadata.name),
        });
        problems.push(format!("{} for key \"{key}\"{source}", error.kind));
        if !remove(&mut data, &path) {
            break;
        }
        match Figment::from(Serialized::defaults(Value::from(data.clone()))).extract::<T>() {
            Ok(_) => break,
            Err(next) => match next.into_iter().next() {
                Some(next) => error = next,
                None => break,
            },
        }
    }
    problems
}

/// Removes the value at `path` from `dict`; `false` when there is none.
fn remove(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

/// A figment provider over an explicit list of environment variables.
struct EnvVars {
    prefix: String,
    values: Dict,
}

impl EnvVars {
    fn new(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut values = Dict::new();
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let parsed: Value = if parses_safely(&raw) {
                raw.parse().unwrap_or_else(|_| Value::from(raw.clone()))
            } else {
                Value::from(raw.clone())
            };
            insert_path(&mut values, &path, parsed);
        }
        Self { prefix: prefix.to_owned(), values }
    }
}

/// Whether figment's value parser can read `raw` without panicking: its
/// escape handling slices strings by byte and panics on a backslash among
/// multi-byte characters. Such a value is taken as the plain string it is.
fn parses_safely(raw: &str) -> bool {
    raw.is_ascii() || !raw.contains('\\')
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert_path(inner, rest, value);
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable(s) {}*", self.prefix))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// A value that must not appear in logs: `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value; call only where it is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Parses a `KEY=VALUE` list given on the command line into a map.
///
/// # Errors
/// Names the first entry without `=`.
pub fn parse_key_values(entries: &[String]) -> Result<BTreeMap<String, String>, String> {
    entries
        .iter()
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .ok_or_else(|| format!("`{entry}` is not KEY=VALUE"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_value_with_a_backslash_among_multibyte_characters_is_taken_as_text() {
        // figment's value parser panics on this text; it must stay text.
        let raw = "%:;'\u{c1c}\u{f8f}\\%{S".to_owned();
        let vars = EnvVars::new("P_", vec![("P_NAME".to_owned(), raw.clone())]);
        assert_eq!(vars.values.get("name"), Some(&Value::from(raw)));
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        name: String,
        size: u32,
        inner: Inner,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        url: String,
        on: bool,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    }

    fn no_problems(_: &Sample) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let mut file = tempfile_with("name = \"from-file\"\nsize = 1\n[inner]\nurl = \"file-url\"\n");
        file.flush().unwrap();
        let env = vec![
            ("APP__SIZE".to_owned(), "2".to_owned()),
            ("APP__INNER__ON".to_owned(), "true".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let loaded: Sample = load(Some(file.path()), env, "APP__", Flags { size: Some(3) }, no_problems).unwrap();
        assert_eq!(
            loaded,
            Sample { name: "from-file".into(), size: 3, inner: Inner { url: "file-url".into(), on: true } }
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let file = tempfile_with("nmae = \"typo\"\n");
        let err = load::<Sample>(Some(file.path()), vec![], "APP__", Flags { size: None }, no_problems).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let env = vec![("APP__SIZE".to_owned(), "lots".to_owned())];
        let err = load::<Sample>(None, env, "APP__", Flags { size: None }, no_problems).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn every_validation_problem_is_listed() {
        let err = load::<Sample>(None, vec![], "APP__", Flags { size: None }, |_| {
            vec!["first problem".into(), "second problem".into()]
        })
        .unwrap_err();
        assert_eq!(err.problems.len(), 2);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err =
            load::<Sample>(Some(Path::new("/nonexistent/x.toml")), vec![], "APP__", Flags { size: None }, no_problems)
                .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }

    fn tempfile_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }
}
