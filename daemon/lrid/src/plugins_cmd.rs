//! `lrid plugins`: what the plugins folder holds, and why a file was refused.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lrid_plugins::PluginHost;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Configuration file (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Plugins folder (default: `[plugins] dir` of the configuration, else plugins/ in the data
    /// folder).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: &PluginsArgs) -> Result<()> {
    let config = Config::load_or_embedded(args.config.as_deref())?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| config.plugins.dir_in(&config.store.data_dir));
    if !dir.is_dir() {
        anyhow::bail!("the plugins folder {} does not exist", dir.display());
    }
    lrid_torch::init();
    let cache = crate::plugin_cache("lrid-plugins-")?;
    let host = PluginHost::new(&dir, cache.path())?.with_builtin_dir(config.plugins.builtin_dir());
    let scanned = host
        .rescan()
        .with_context(|| format!("cannot scan {}", dir.display()));
    let listing = host.list();
    let refused = host.refused();
    scanned?;
    println!("{:<26} {:<14} {:<9} file", "name", "kind", "version");
    for p in &listing {
        println!(
            "{:<26} {:<14} {:<9} {}",
            p.name,
            p.kind,
            p.version,
            p.file.display()
        );
    }
    for (file, why) in &refused {
        println!("refused {}: {why}", file.display());
    }
    if listing.is_empty() && refused.is_empty() {
        println!("(no plugins in {})", dir.display());
    }
    Ok(())
}
