//! `lrid serve`: the daemon.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lrid_server::Server;
use lrid_store::Store;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:50051 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Folder of the Parquet tables and the write-ahead log.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Folder of plugin libraries, loaded and watched.
    #[arg(long, value_name = "DIR")]
    plugins_dir: Option<PathBuf>,
    /// Bearer token every call must carry. Prefer the environment (LRID_TOKEN) or
    /// --token-file: a command line is visible to every user of the machine.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (its content, surrounding whitespace trimmed).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Serve TLS (https://) with this certificate chain (PEM); needs --tls-key. Overrides
    /// `[server] tls_cert`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM). Overrides `[server] tls_key`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen on a non-loopback address without a token (anyone who reaches the port may
    /// record runs and read every table).
    #[arg(long)]
    insecure: bool,
    /// Keep closed Parquet files and the manifest in an object store, e.g.
    /// s3://bucket/prefix (this daemon writes under prefix/node=<id>/; the write-ahead log
    /// stays in the data folder). Overrides `[store] object_store`; credentials, region and
    /// endpoint from the AWS_* variables or `[store.object_store_options]`.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// This daemon's folder in the object store (node=<ID>/). Overrides `[store] node_id`.
    #[arg(long, value_name = "ID", requires = "store")]
    node_id: Option<String>,
    /// Serve SQL over every node's files in the object store (--store), writing nothing;
    /// files published later appear without a restart.
    #[arg(long, requires = "store", conflicts_with = "node_id")]
    read_only: bool,
}

/// The token `config` names: `token`, else the content of `token_file`.
fn resolve_token(config: &mut lrid_server::ServerConfig) -> Result<()> {
    if config.token.is_none()
        && let Some(path) = &config.token_file
    {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = text.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            path.display()
        );
        config.token = Some(token.to_string());
    }
    Ok(())
}

/// Refuses to serve on an address other machines can reach without a token, unless the
/// operator said `--insecure`.
fn check_exposure(config: &lrid_server::ServerConfig, insecure: bool) -> Result<()> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = config
        .listen
        .to_socket_addrs()
        .with_context(|| format!("'{}' is not an address to listen on", config.listen))?
        .collect();
    let exposed = addrs.iter().any(|a| !a.ip().is_loopback());
    if exposed && config.token.is_none() && !insecure {
        anyhow::bail!(
            "refusing to listen on {} without a token: anyone who can reach it could record runs and read every table. Set LRID_TOKEN or [server] token_file (or --token-file), or pass --insecure to accept that",
            config.listen
        );
    }
    if exposed && config.token.is_none() {
        tracing::warn!(listen = %config.listen, "listening beyond loopback without a token (--insecure)");
    }
    if exposed && config.tls_cert.is_none() {
        tracing::warn!(listen = %config.listen, "listening beyond loopback without TLS: tokens and data cross the network in clear ([server] tls_cert / tls_key, or --tls-cert / --tls-key)");
    }
    Ok(())
}

/// Snapshots arrive as megabyte messages, each received into a fresh buffer. By default glibc
/// serves such sizes with `mmap` and gives the pages back on free, so every message pays a
/// page fault (and the zeroing of a page) per 4 KiB. Serving them from the heap, and keeping
/// freed heap memory, reuses pages that are already mapped.
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator thresholds; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        }
    }
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let mut config = Config::load_or_embedded(args.config.as_deref())?;
    if let Some(l) = &args.listen {
        config.server.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        config.store.data_dir = d.clone();
    }
    if args.token.is_some() {
        config.server.token = args.token.clone();
    }
    if let Some(f) = &args.token_file {
        config.server.token = None;
        config.server.token_file = Some(f.clone());
    }
    if args.tls_cert.is_some() {
        config.server.tls_cert = args.tls_cert.clone();
        config.server.tls_key = args.tls_key.clone();
    }
    resolve_token(&mut config.server)?;
    check_exposure(&config.server, args.insecure)?;
    if let Some(d) = &args.plugins_dir {
        config.plugins.dir = Some(d.clone());
    }
    if let Some(url) = &args.store {
        config.store.object_store = Some(url.clone());
    }
    if let Some(id) = &args.node_id {
        config.store.node_id = Some(id.clone());
    }
    config.store.read_only |= args.read_only;
    lrid_torch::init();
    keep_large_buffers_mapped();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open(config.store.clone()).await.with_context(|| {
            match &config.store.object_store {
                Some(url) => format!(
                    "cannot open the store in {} with its files in {url}",
                    config.store.data_dir.display()
                ),
                None => format!(
                    "cannot open the store in {}",
                    config.store.data_dir.display()
                ),
            }
        })?;
        // Plugins: loaded now, re-scanned on every change of the folder. A refused file is
        // logged (and listed by `lrid plugins`); it never stops the daemon.
        // Private copies of the libraries of the last run are no longer mapped by anyone.
        let cache = store.dir().join("plugin-cache");
        std::fs::remove_dir_all(&cache).ok();
        // The built-in plugins of an installed layout load beside the folder's.
        let plugins = std::sync::Arc::new(
            lrid_plugins::PluginHost::new(config.plugins.dir_in(store.dir()), cache)?
                .with_builtin_dir(config.plugins.builtin_dir()),
        );
        let report = plugins.rescan()?;
        tracing::info!(loaded = ?report.loaded, refused = report.refused.len(), dir = %plugins.dir().display(), builtin = ?plugins.builtin_dir(), "plugins");
        let _watcher = plugins.watch()?;
        store
            .session()
            .register_table(
                "plugins",
                std::sync::Arc::new(crate::plugins_table::PluginsTable(plugins.clone())),
            )
            .context("cannot register the plugins table")?;
        // Live identification: the identifiers in the data folder, told of every point.
        let identify = lrid_identify::IdentifyService::start(store.clone(), plugins.clone())
            .await
            .context("cannot start live identification")?;
        let server = Server::bind(config.server.clone(), store.clone())
            .await?
            .with_actions(identify);
        let addr = server.local_addr();
        // The SIGTERM handler is in place before the address is announced: a script that stops
        // the daemon as soon as it reads the line gets a clean shutdown, not the default kill.
        let shutdown = shutdown_signal()?;
        // The first line on stdout: tests and scripts read the address from it.
        let mut tls = if config.server.tls_cert.is_some() {
            format!("{}, ", crate::embedded::TLS_MARK)
        } else {
            String::new()
        };
        if config.store.object_store.is_some() {
            let mode = if config.store.read_only {
                "read-only".to_string()
            } else {
                format!("node {}", store.node_id().unwrap_or_default())
            };
            tls.push_str(&format!("files in {} ({mode}), ", store.location()));
        }
        println!(
            "lrid serve listening on {addr} ({tls}data in {})",
            store.dir().display()
        );
        std::io::stdout().flush().ok();
        tracing::info!(%addr, scheme = config.server.scheme(), data = %store.dir().display(), "serving");
        server.run(shutdown).await?;
        tracing::info!("stopped; everything acknowledged is in the store");
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM; the SIGTERM handler is installed when this is called.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down: finishing calls in progress, then a checkpoint");
    })
}
