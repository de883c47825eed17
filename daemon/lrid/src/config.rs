//! `lrid.toml`: the daemon's configuration. The defaults are `config/lrid.toml`, embedded.

use std::path::Path;

use anyhow::{Context, Result};
use lrid_plugins::PluginsConfig;
use lrid_server::ServerConfig;
use lrid_store::StoreConfig;
use serde::{Deserialize, Serialize};

/// The embedded default configuration file.
pub const DEFAULT_TOML: &str = include_str!("../../../config/lrid.toml");

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub plugins: PluginsConfig,
}

impl Config {
    /// The embedded defaults (`config/lrid.toml`).
    pub fn embedded() -> Config {
        toml::from_str(DEFAULT_TOML).expect("the embedded config/lrid.toml parses")
    }

    /// The file `path` when one is given ([`Config::load`]), else the embedded defaults.
    pub fn load_or_embedded(path: Option<&Path>) -> Result<Config> {
        path.map_or_else(|| Ok(Config::embedded()), Config::load)
    }

    /// Reads a configuration file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid lrid configuration", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = toml::from_str::<Config>("[server]\nlisten_on = 'x'\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }
}
