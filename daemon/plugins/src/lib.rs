//! # lrid-plugins
//!
//! The plugin host. In: a plugins folder of `.so` files built with `lrid-plugin`. Out: loaded
//! plugins by name and kind ([`PluginHost::rule`], [`PluginHost::classifier`]), learning-rule
//! instances ([`RuleInstance`]) and classifier data and models ([`ClassifierData`],
//! [`ClassifierModel`]) with safe interfaces, and a listing with why a file was refused
//! ([`PluginHost::list`]).
//!
//! Loading: every `.so` is hashed; a new or changed file is checked to be a whole ELF shared
//! library for this machine (the dynamic loader trusts the headers, and a file still being
//! copied in would crash it), copied to a unique path in the host's cache folder, loaded from
//! there, and the copy is unlinked as soon as it is mapped (the mapping keeps it alive): the
//! original can be replaced at any time, and a process killed later leaves no copy on disk. Its
//! ABI version symbol (any of `MIN_ABI_VERSION..=ABI_VERSION`), kind and stated torch version
//! (a plugin that links no libtorch states none and is not tied to one) are checked before
//! anything else is called. A changed file is loaded beside the old one: work already using the
//! old version keeps it (each [`RuleInstance`], [`ClassifierData`] and [`ClassifierModel`]
//! holds its plugin), new work gets the new one.
//! Libraries are never unloaded (unloading code that libtorch or the Rust runtime may still
//! reference is not safe), so a version costs its mapping until the process exits. A broken or
//! refused file is reported and skipped; it never takes the host down. [`PluginHost::rescan`]
//! is idempotent, so file-system events are only hints to call it ([`PluginHost::watch`]).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_void};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lrid_plugin::{
    ABI_VERSION, ABI_VERSION_SYMBOL, C_tensor, ENTRY_SYMBOL, ErrorBuf, KIND_CLASSIFIER,
    KIND_LEARNING_RULE, LayerSpec, MAX_EXTRA, MIN_ABI_VERSION, PluginInfo, RuleVTable, STATUS_OK,
    STATUS_UNSUPPORTED, TORCH_VERSION,
};

mod classifier;
pub use classifier::{ClassifierData, ClassifierModel, argmax};
use tch::Tensor;

/// `[plugins]` of `lrid.toml`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder of plugin libraries (`*.so`), watched while the daemon runs; unset: `plugins/` in
    /// the data folder.
    pub dir: Option<PathBuf>,
    /// Folder of the built-in plugins, loaded besides `dir` (a plugin of the same name in `dir`
    /// takes precedence); unset: `lib/lrid/plugins` of an installed layout, beside the
    /// binary's `bin/` folder, when it exists ([`installed_builtin_dir`]).
    pub builtin_dir: Option<PathBuf>,
}

impl PluginsConfig {
    /// The folder, given the store's data folder.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("plugins"))
    }

    /// The built-in plugins' folder: the configured one, else the installed layout's.
    pub fn builtin_dir(&self) -> Option<PathBuf> {
        self.builtin_dir.clone().or_else(installed_builtin_dir)
    }
}

/// Where an installed layout (`make install PREFIX=…`) keeps the built-in plugins:
/// `<prefix>/lib/lrid/plugins` for the binary `<prefix>/bin/lrid`; `None` when that folder
/// does not exist (a build tree).
pub fn installed_builtin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("lib/lrid/plugins");
    dir.is_dir().then_some(dir)
}

/// Errors of the plugin host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: cannot be loaded as a library: {reason}")]
    Load { file: PathBuf, reason: String },
    #[error("{file}: not an lrid plugin: it does not export '{symbol}'")]
    NotAPlugin { file: PathBuf, symbol: String },
    #[error(
        "{file}: built for plugin ABI version {found}, this lrid speaks versions {min} to {max}; rebuild it against this lrid's lrid-plugin crate"
    )]
    Abi {
        file: PathBuf,
        found: u32,
        min: u32,
        max: u32,
    },
    #[error(
        "{file}: plugin '{plugin}' is of kind {kind}, which this lrid does not know (known: 1 = learning rule, 2 = classifier{v1})"
    )]
    Kind {
        file: PathBuf,
        plugin: String,
        kind: u32,
        v1: &'static str,
    },
    #[error(
        "{file}: learning rule '{plugin}' states no torch version; a learning rule links libtorch and must state the one it was built against"
    )]
    NoTorch { file: PathBuf, plugin: String },
    #[error(
        "{file}: plugin '{plugin}' was built against torch {built}, this lrid runs torch {running}; tensors cannot cross between them — rebuild it against torch {running}"
    )]
    Torch {
        file: PathBuf,
        plugin: String,
        built: String,
        running: String,
    },
    #[error("{file}: plugin name '{name}' is already provided by {other}")]
    DuplicateName {
        file: PathBuf,
        name: String,
        other: PathBuf,
    },
    #[error("no learning rule named '{name}' is loaded (loaded: {loaded})")]
    UnknownRule { name: String, loaded: String },
    #[error("no classifier named '{name}' is loaded (loaded: {loaded})")]
    UnknownClassifier { name: String, loaded: String },
    #[error("learning rule '{plugin}' failed in {call}: {message}")]
    Rule {
        plugin: String,
        call: &'static str,
        message: String,
    },
    #[error("classifier '{plugin}' failed in {call}: {message}")]
    Classifier {
        plugin: String,
        call: &'static str,
        message: String,
    },
    #[error("classifier '{plugin}' does not support {call}")]
    Unsupported { plugin: String, call: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One loaded version of a plugin file.
pub struct Plugin {
    pub name: String,
    pub version: String,
    /// [`KIND_LEARNING_RULE`], [`KIND_CLASSIFIER`].
    pub kind: u32,
    /// The file in the plugins folder it came from.
    pub file: PathBuf,
    /// The private copy it was loaded from (unlinked once mapped).
    pub loaded_from: PathBuf,
    pub content_hash: u64,
    info: &'static PluginInfo,
    // Never dropped: see the crate documentation.
    _library: std::mem::ManuallyDrop<libloading::Library>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

// The info and vtable are immutable static data of a library that is never unloaded.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

/// A row of `lrid plugins`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub name: String,
    pub kind: &'static str,
    pub version: String,
    pub file: PathBuf,
    pub content_hash: u64,
}

#[derive(Default)]
struct State {
    /// Current plugin of each file in the folder.
    by_file: BTreeMap<PathBuf, Arc<Plugin>>,
    /// Files refused at the last scan, with why (re-tried when their content changes).
    refused: BTreeMap<PathBuf, (u64, String)>,
    /// Built-in files whose plugin name a file of the plugins folder provides: (hash, name).
    shadowed: BTreeMap<PathBuf, (u64, String)>,
}

/// What one [`PluginHost::rescan`] changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScanReport {
    pub loaded: Vec<String>,
    pub removed: Vec<PathBuf>,
    pub refused: Vec<String>,
}

/// Loads the plugins of one folder (and the built-in ones) and keeps them current.
pub struct PluginHost {
    dir: PathBuf,
    builtin: Option<PathBuf>,
    cache: PathBuf,
    state: Mutex<State>,
    copies: AtomicU64,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn c_str(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Checks that `bytes` are a whole ELF shared library for this machine, before the dynamic
/// loader sees them. The loader trusts the file's headers: a truncated file (one still being
/// copied into the watched folder, say) either crashes the process with SIGBUS when a mapped
/// page lies past its end, or loads with code missing.
fn check_library(bytes: &[u8]) -> std::result::Result<(), String> {
    use object::elf;
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader};
    let file = ElfFile64::<object::Endianness>::parse(bytes).map_err(|e| {
        format!(
            "not a whole 64-bit ELF file ({e}): not a library, truncated, or still being written"
        )
    })?;
    let endian = file.endian();
    let header = file.elf_header();
    let kind = header.e_type(endian);
    if kind != elf::ET_DYN {
        return Err(format!("an ELF file of type {kind}, not a shared library"));
    }
    let machine = header.e_machine(endian);
    let ours = match std::env::consts::ARCH {
        "x86_64" => Some(elf::EM_X86_64),
        "aarch64" => Some(elf::EM_AARCH64),
        _ => None,
    };
    if ours.is_some_and(|ours| ours != machine) {
        return Err(format!(
            "built for ELF machine {machine}, not for this machine ({})",
            std::env::consts::ARCH
        ));
    }
    let cut = |what: &str, i: usize| {
        format!(
            "{what} {i} runs past the end of the file ({} bytes): truncated, or still being written",
            bytes.len()
        )
    };
    for (i, segment) in file.elf_program_headers().iter().enumerate() {
        segment
            .data(endian, bytes)
            .map_err(|()| cut("segment", i))?;
    }
    for (i, section) in file.elf_section_table().iter().enumerate() {
        section.data(endian, bytes).map_err(|_| cut("section", i))?;
    }
    Ok(())
}

/// `2.11.0+cu130` → `2.11.0`: local build tags (CPU, CUDA flavour) share the C++ ABI.
fn release(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}

impl PluginHost {
    /// A host for `dir` (created if missing) that copies libraries into `cache` before loading.
    /// Loads nothing yet: call [`PluginHost::rescan`].
    pub fn new(dir: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Result<Self> {
        let (dir, cache) = (dir.into(), cache.into());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::create_dir_all(&cache).map_err(io(&cache))?;
        Ok(Self {
            dir,
            builtin: None,
            cache,
            state: Mutex::new(State::default()),
            copies: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Also load the plugins of `dir` (the built-in ones), unless it is the plugins folder
    /// itself or does not exist. A plugin of the plugins folder shadows a built-in one of the
    /// same name (and the built-in one returns when that file goes).
    pub fn with_builtin_dir(mut self, dir: Option<PathBuf>) -> Self {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        self.builtin = dir.filter(|d| d.is_dir() && !same(d, &self.dir));
        self
    }

    /// The built-in plugins' folder, when one is loaded.
    pub fn builtin_dir(&self) -> Option<&Path> {
        self.builtin.as_deref()
    }

    fn is_builtin(&self, file: &Path) -> bool {
        self.builtin.as_ref().is_some_and(|b| file.starts_with(b))
    }

    /// Loads new and changed files, forgets removed ones; refusals are logged and listed.
    pub fn rescan(&self) -> Result<ScanReport> {
        let list = |dir: &Path| -> Result<Vec<PathBuf>> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "so") && p.is_file())
                .collect();
            files.sort();
            Ok(files)
        };
        // The plugins folder first: its names shadow the built-in ones.
        let mut files = list(&self.dir)?;
        if let Some(b) = &self.builtin {
            files.extend(list(b).unwrap_or_default());
        }
        let mut report = ScanReport::default();
        let mut state = self.state.lock().expect("plugin host lock");
        let gone: Vec<PathBuf> = state
            .by_file
            .keys()
            .filter(|f| !files.contains(f))
            .cloned()
            .collect();
        for f in gone {
            state.by_file.remove(&f);
            tracing::info!(file = %f.display(), "plugin file removed; runs using it keep it");
            report.removed.push(f);
        }
        state.refused.retain(|f, _| files.contains(f));
        state.shadowed.retain(|f, _| files.contains(f));
        let provided_by_folder = |state: &State, name: &str| {
            state
                .by_file
                .iter()
                .any(|(f, p)| p.name == name && !self.is_builtin(f))
        };
        for file in files {
            let builtin = self.is_builtin(&file);
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    report.refused.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            let hash = content_hash(&bytes);
            if state
                .by_file
                .get(&file)
                .is_some_and(|p| p.content_hash == hash)
                || state.refused.get(&file).is_some_and(|(h, _)| *h == hash)
            {
                continue;
            }
            if builtin
                && let Some((h, name)) = state.shadowed.get(&file)
                && *h == hash
                && provided_by_folder(&state, name)
            {
                continue;
            }
            match self.load(&file, &bytes, hash, &state) {
                Ok(plugin) if builtin && provided_by_folder(&state, &plugin.name) => {
                    tracing::info!(name = %plugin.name, file = %file.display(), "built-in plugin shadowed by the plugins folder's");
                    state.by_file.remove(&file);
                    state.shadowed.insert(file, (hash, plugin.name.clone()));
                }
                Ok(plugin) => {
                    if !builtin {
                        let shadowed: Vec<PathBuf> = state
                            .by_file
                            .iter()
                            .filter(|(f, p)| p.name == plugin.name && self.is_builtin(f))
                            .map(|(f, _)| f.clone())
                            .collect();
                        for f in shadowed {
                            let p = state.by_file.remove(&f).expect("listed");
                            tracing::info!(name = %p.name, file = %f.display(), "built-in plugin shadowed by the plugins folder's");
                            state.shadowed.insert(f, (p.content_hash, p.name.clone()));
                        }
                    }
                    state.shadowed.remove(&file);
                    tracing::info!(
                        name = %plugin.name,
                        version = %plugin.version,
                        file = %file.display(),
                        "plugin loaded"
                    );
                    report.loaded.push(plugin.name.clone());
                    state.refused.remove(&file);
                    state.by_file.insert(file, Arc::new(plugin));
                }
                Err(e) => {
                    tracing::warn!("plugin refused: {e}");
                    report.refused.push(e.to_string());
                    state.refused.insert(file, (hash, e.to_string()));
                }
            }
        }
        Ok(report)
    }

    fn load(&self, file: &Path, bytes: &[u8], hash: u64, state: &State) -> Result<Plugin> {
        check_library(bytes).map_err(|reason| Error::Load {
            file: file.to_path_buf(),
            reason,
        })?;
        // A private copy: the original may be rewritten while (or after) it is mapped.
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        let n = self.copies.fetch_add(1, Ordering::Relaxed);
        let copy = self
            .cache
            .join(format!("{stem}-{hash:016x}-{}-{n}.so", std::process::id()));
        std::fs::write(&copy, bytes).map_err(io(&copy))?;
        let library = unsafe { libloading::Library::new(&copy) };
        // Mapped (or refused): the file itself is not needed any more.
        if let Err(e) = std::fs::remove_file(&copy) {
            tracing::warn!(copy = %copy.display(), "cannot remove a plugin's private copy: {e}");
        }
        let library = library.map_err(|e| Error::Load {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        let missing = |symbol: &[u8]| Error::NotAPlugin {
            file: file.to_path_buf(),
            symbol: String::from_utf8_lossy(symbol).into_owned(),
        };
        let abi = unsafe { library.get::<*const u32>(ABI_VERSION_SYMBOL) }
            .map_err(|_| missing(ABI_VERSION_SYMBOL))?;
        let found = unsafe { **abi };
        if !(MIN_ABI_VERSION..=ABI_VERSION).contains(&found) {
            return Err(Error::Abi {
                file: file.to_path_buf(),
                found,
                min: MIN_ABI_VERSION,
                max: ABI_VERSION,
            });
        }
        let entry = unsafe {
            library.get::<unsafe extern "C-unwind" fn() -> *const PluginInfo>(ENTRY_SYMBOL)
        }
        .map_err(|_| missing(ENTRY_SYMBOL))?;
        let info: &'static PluginInfo = unsafe { &*entry() };
        let name = c_str(info.name);
        // Version 1 knew learning rules only (the same layout, the kind as a 1).
        let known = match found {
            1 => info.kind == KIND_LEARNING_RULE,
            _ => lrid_plugin::kind_name(info.kind).is_some(),
        };
        if !known || info.vtable.is_null() {
            return Err(Error::Kind {
                file: file.to_path_buf(),
                plugin: name,
                kind: info.kind,
                v1: if found == 1 {
                    "; ABI version 1 had learning rules only"
                } else {
                    ""
                },
            });
        }
        if info.torch_version.is_null() {
            if info.kind == KIND_LEARNING_RULE {
                return Err(Error::NoTorch {
                    file: file.to_path_buf(),
                    plugin: name,
                });
            }
        } else {
            let built = c_str(info.torch_version);
            let running = lrid_torch::init().version.clone();
            if release(&built) != release(&running) || release(&built) != TORCH_VERSION {
                return Err(Error::Torch {
                    file: file.to_path_buf(),
                    plugin: name,
                    built,
                    running,
                });
            }
        }
        if let Some((other, _)) = state.by_file.iter().find(|(f, p)| {
            p.name == name && f.as_path() != file && self.is_builtin(f) == self.is_builtin(file)
        }) {
            return Err(Error::DuplicateName {
                file: file.to_path_buf(),
                name,
                other: other.clone(),
            });
        }
        Ok(Plugin {
            name,
            version: c_str(info.version),
            kind: info.kind,
            file: file.to_path_buf(),
            loaded_from: copy,
            content_hash: hash,
            info,
            _library: std::mem::ManuallyDrop::new(library),
        })
    }

    /// Everything loaded, by name.
    pub fn list(&self) -> Vec<Listing> {
        let state = self.state.lock().expect("plugin host lock");
        let mut rows: Vec<Listing> = state
            .by_file
            .values()
            .map(|p| Listing {
                name: p.name.clone(),
                kind: lrid_plugin::kind_name(p.kind).unwrap_or("unknown"),
                version: p.version.clone(),
                file: p.file.clone(),
                content_hash: p.content_hash,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Files refused at the last scan, with why.
    pub fn refused(&self) -> Vec<(PathBuf, String)> {
        let state = self.state.lock().expect("plugin host lock");
        state
            .refused
            .iter()
            .map(|(f, (_, why))| (f.clone(), why.clone()))
            .collect()
    }

    /// The current version of learning rule `name`.
    pub fn rule(&self, name: &str) -> Result<Arc<Plugin>> {
        self.find(name, KIND_LEARNING_RULE)
            .map_err(|loaded| Error::UnknownRule {
                name: name.to_string(),
                loaded,
            })
    }

    /// The current version of classifier `name`.
    pub fn classifier(&self, name: &str) -> Result<Arc<Plugin>> {
        self.find(name, KIND_CLASSIFIER)
            .map_err(|loaded| Error::UnknownClassifier {
                name: name.to_string(),
                loaded,
            })
    }

    /// Every loaded plugin of `kind`, by name.
    pub fn of_kind(&self, kind: u32) -> Vec<Arc<Plugin>> {
        let state = self.state.lock().expect("plugin host lock");
        let mut found: Vec<Arc<Plugin>> = state
            .by_file
            .values()
            .filter(|p| p.kind == kind)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// The plugin `name` of `kind`, or the names of that kind that are loaded.
    fn find(&self, name: &str, kind: u32) -> std::result::Result<Arc<Plugin>, String> {
        if let Some(p) = self.of_kind(kind).into_iter().find(|p| p.name == name) {
            return Ok(p);
        }
        let loaded: Vec<String> = self.of_kind(kind).iter().map(|p| p.name.clone()).collect();
        Err(if loaded.is_empty() {
            "none".into()
        } else {
            loaded.join(", ")
        })
    }

    /// Re-scans whenever the folder changes (events are hints; every scan compares content),
    /// until the returned watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<notify::RecommendedWatcher> {
        use notify::Watcher;
        let host = Arc::downgrade(self);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading a file to hash it is itself an access event: reacting to those
                // would rescan forever. A file closed after writing is the one access that
                // counts: its content is whole now.
                use notify::event::{AccessKind, AccessMode, EventKind};
                match event {
                    Ok(e)
                        if !matches!(e.kind, EventKind::Access(_))
                            || e.kind
                                == EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
                    _ => return,
                }
                if let Some(host) = host.upgrade() {
                    // A file being written shows several events; scanning again is harmless.
                    if let Err(e) = host.rescan() {
                        tracing::warn!("plugin rescan failed: {e}");
                    }
                }
            })
            .map_err(|e| Error::Load {
                file: self.dir.clone(),
                reason: format!("cannot watch the plugins folder: {e}"),
            })?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| Error::Load {
                file: self.dir.clone(),
                reason: format!("cannot watch the plugins folder: {e}"),
            })?;
        Ok(watcher)
    }
}

impl Plugin {
    /// The learning-rule vtable; only for a plugin of that kind (checked when loaded).
    fn vtable(&self) -> &'static RuleVTable {
        assert_eq!(self.kind, KIND_LEARNING_RULE, "not a learning rule");
        unsafe { &*(self.info.vtable as *const RuleVTable) }
    }

    /// The name of this plugin's kind.
    pub fn kind_name(&self) -> &'static str {
        lrid_plugin::kind_name(self.kind).unwrap_or("unknown")
    }

    /// A new instance of this learning rule with JSON hyperparameters.
    pub fn instantiate(self: &Arc<Self>, config: &serde_json::Value) -> Result<RuleInstance> {
        let text = CString::new(config.to_string()).expect("JSON has no NUL");
        let mut state: *mut c_void = std::ptr::null_mut();
        call(&self.name, "create", |err| unsafe {
            (self.vtable().create)(text.as_ptr(), &mut state, err)
        })?;
        Ok(RuleInstance {
            plugin: self.clone(),
            state,
        })
    }
}

/// Calls a learning rule's vtable function with an error buffer; a failure becomes
/// [`Error::Rule`].
fn call(plugin: &str, name: &'static str, f: impl FnOnce(*mut ErrorBuf) -> i32) -> Result<()> {
    call_with(f).map_err(|message| Error::Rule {
        plugin: plugin.to_string(),
        call: name,
        message: message.unwrap_or_else(|| "not supported".into()),
    })
}

/// Calls a vtable function with an error buffer: `Err(Some(message))` when it failed,
/// `Err(None)` when it answered [`STATUS_UNSUPPORTED`].
fn call_with(f: impl FnOnce(*mut ErrorBuf) -> i32) -> std::result::Result<(), Option<String>> {
    let mut bytes = vec![0u8; 4096];
    let mut err = ErrorBuf {
        buf: bytes.as_mut_ptr(),
        cap: bytes.len(),
        len: 0,
    };
    match f(&mut err) {
        STATUS_OK => Ok(()),
        STATUS_UNSUPPORTED => Err(None),
        _ => {
            let message = String::from_utf8_lossy(&bytes[..err.len.min(bytes.len())]);
            Err(Some(if message.is_empty() {
                "failed without a message".into()
            } else {
                message.into_owned()
            }))
        }
    }
}

fn handle(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}

fn optional_handle(t: Option<&Tensor>) -> *mut C_tensor {
    t.map_or(std::ptr::null_mut(), handle)
}

/// One instance of a learning rule (one per training run); holds its plugin version loaded.
pub struct RuleInstance {
    plugin: Arc<Plugin>,
    state: *mut c_void,
}

// The instance is used by one training loop at a time (&mut self for every call).
unsafe impl Send for RuleInstance {}

impl std::fmt::Debug for RuleInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleInstance")
            .field("plugin", &self.plugin.name)
            .field("version", &self.plugin.version)
            .finish()
    }
}

impl RuleInstance {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The layer's extra trainable tensors (e.g. feedback weights), made from its kernel.
    pub fn init_layer(&mut self, spec: &LayerSpec, weight: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = [std::ptr::null_mut::<C_tensor>(); MAX_EXTRA];
        let mut n = 0usize;
        call(&self.plugin.name, "init_layer", |err| unsafe {
            (self.plugin.vtable().init_layer)(
                self.state,
                spec,
                handle(weight),
                out.as_mut_ptr(),
                &mut n,
                err,
            )
        })?;
        Ok(out[..n.min(MAX_EXTRA)]
            .iter()
            .map(|&p| unsafe { Tensor::from_ptr(p) })
            .collect())
    }

    /// The layer's output before its activation, with the rule's gradient routing.
    pub fn forward(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        extra: &[Tensor],
    ) -> Result<Tensor> {
        let f = self.plugin.vtable().forward;
        let out = self.layer_call("forward", f, spec, x, weight, bias, extra)?;
        if out.is_null() {
            return Err(Error::Rule {
                plugin: self.plugin.name.clone(),
                call: "forward",
                message: "returned no tensor".into(),
            });
        }
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// The layer's local loss for this training step, if the rule has one.
    pub fn local_loss(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        extra: &[Tensor],
    ) -> Result<Option<Tensor>> {
        let f = self.plugin.vtable().local_loss;
        let out = self.layer_call("local_loss", f, spec, x, weight, bias, extra)?;
        Ok((!out.is_null()).then(|| unsafe { Tensor::from_ptr(out) }))
    }

    /// Calls a per-layer vtable function; the owned handle it returned (possibly null).
    #[allow(clippy::too_many_arguments)] // the ABI call's own arguments
    fn layer_call(
        &mut self,
        call_name: &'static str,
        f: lrid_plugin::LayerFn,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        extra: &[Tensor],
    ) -> Result<*mut C_tensor> {
        let extra: Vec<*mut C_tensor> = extra.iter().map(handle).collect();
        let mut out = std::ptr::null_mut();
        call(&self.plugin.name, call_name, |err| unsafe {
            f(
                self.state,
                spec,
                handle(x),
                handle(weight),
                optional_handle(bias),
                extra.as_ptr(),
                extra.len(),
                &mut out,
                err,
            )
        })?;
        Ok(out)
    }

    /// Updates `params` in place from their gradients.
    pub fn step(&mut self, params: &[Tensor], lr: f64) -> Result<()> {
        let params: Vec<*mut C_tensor> = params.iter().map(handle).collect();
        call(&self.plugin.name, "step", |err| unsafe {
            (self.plugin.vtable().step)(self.state, params.as_ptr(), params.len(), lr, err)
        })
    }
}

impl Drop for RuleInstance {
    fn drop(&mut self) {
        unsafe { (self.plugin.vtable().destroy)(self.state) };
    }
}
