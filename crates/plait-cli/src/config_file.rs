//! The config file of `plait serve` and `plait worker` (`--config FILE`, or `PLAIT_CONFIG`):
//! TOML, `version = 1`, a `[serve]` and a `[worker]` table of kebab-case keys, each named like
//! its command-line flag. A setting comes from, highest first: the flag, its `PLAIT_*`
//! environment variable, the file, the default. `plait.example.toml` lists every key at its
//! default.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::exit::BadInput;

/// `--config` and `--print-config`, as `serve` and `worker` take them.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Read settings from this config file (its `[serve]` or `[worker]` table; see
    /// plait.example.toml); flags and `PLAIT_*` variables override it.
    #[arg(long, env = "PLAIT_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the settings in effect as a config file (tokens hidden), and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The file format's version; a file must say `version = 1` before anything else is read.
pub const VERSION: i64 = 1;

/// Options that a command takes from flags, the environment and the file alike: every field
/// is optional, and a higher source's value wins.
pub trait Layered: Sized + Default + DeserializeOwned {
    /// Each field of `self`, or else `lower`'s.
    fn or(self, lower: Self) -> Self;
    /// Every field at its default (`None` where there is none).
    fn defaults() -> Self;
}

/// Implements [`Layered::or`] field by field.
macro_rules! layered_or {
    ($($field:ident),* $(,)?) => {
        fn or(self, lower: Self) -> Self {
            // Every field must be listed: one left out does not compile.
            Self { $($field: self.$field.or(lower.$field),)* }
        }
    };
}
pub(crate) use layered_or;

/// The `[section]` table of the config file at `path`; its defaults if there is no file.
pub fn section<T: Layered>(path: Option<&Path>, section: &str) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read config file {}: {e}", path.display())))?;
    parse_section(&text, section).map_err(|e| BadInput(format!("{}: {e}", path.display())).into())
}

/// The `[section]` table of a config file's text, after its version is checked.
pub fn parse_section<T: Layered>(text: &str, section: &str) -> Result<T, String> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    match table.remove("version") {
        Some(toml::Value::Integer(VERSION)) => {}
        Some(other) => {
            return Err(format!(
                "version = {other}: this Plait reads config files of version {VERSION}"
            ))
        }
        None => return Err(format!("no `version = {VERSION}` at the top")),
    }
    if let Some(key) = table
        .keys()
        .find(|k| !["serve", "worker"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key `{key}`: a config file has `version`, `[serve]` and `[worker]`"
        ));
    }
    // Read again from the text, so that an error points at its line and key.
    #[derive(serde::Deserialize)]
    struct File<S, W> {
        #[serde(rename = "version")]
        _version: i64,
        serve: Option<S>,
        worker: Option<W>,
    }
    let values = match section {
        "serve" => toml::from_str::<File<T, toml::Value>>(text).map(|f| f.serve),
        "worker" => toml::from_str::<File<toml::Value, T>>(text).map(|f| f.worker),
        other => unreachable!("no [{other}] section"),
    };
    match values {
        Ok(values) => Ok(values.unwrap_or_default()),
        Err(e) => Err(format!("[{section}]: {}", e.to_string().trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{serve::ServeOptions, worker::WorkerOptions};

    const EXAMPLE: &str = include_str!("../../../plait.example.toml");

    #[test]
    fn the_shipped_example_holds_every_default() {
        let serve: ServeOptions = parse_section(EXAMPLE, "serve").unwrap();
        assert_eq!(serve, ServeOptions::defaults());
        let worker: WorkerOptions = parse_section(EXAMPLE, "worker").unwrap();
        assert_eq!(worker, WorkerOptions::defaults());
        // And the example names every key there is: uncommented, each key parses.
        let uncommented = EXAMPLE
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = "))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all: ServeOptions = parse_section(&uncommented, "serve").unwrap();
        let every = serde_json::to_value(&all).unwrap();
        let nulls: Vec<_> = every
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        assert!(nulls.is_empty(), "the example lacks serve keys {nulls:?}");
        let all: WorkerOptions = parse_section(&uncommented, "worker").unwrap();
        let every = serde_json::to_value(&all).unwrap();
        assert!(
            every.as_object().unwrap().values().all(|v| !v.is_null()),
            "{every}"
        );
    }

    #[test]
    fn the_version_is_checked_first_and_unknown_keys_are_named() {
        let err = |text: &str| parse_section::<ServeOptions>(text, "serve").unwrap_err();
        assert_eq!(
            err("[serve]\nlease-seconds = 5"),
            "no `version = 1` at the top"
        );
        assert!(
            err("version = 2\n[serve]\nleese-seconds = 5").starts_with("version = 2: "),
            "a newer file is refused for its version, not its keys"
        );
        let unknown = err("version = 1\n[serve]\nleese-seconds = 5");
        assert!(
            unknown.contains("unknown field `leese-seconds`") && unknown.contains("line 3"),
            "{unknown}"
        );
        assert!(err("version = 1\nserver = 1").contains("unknown key `server`"));
        assert!(err("version = 1\n[serve]\nlease-seconds = \"soon\"").contains("lease-seconds"));
        // A section that is absent is all defaults.
        let none: ServeOptions = parse_section("version = 1", "serve").unwrap();
        assert_eq!(none, ServeOptions::default());
    }
}
