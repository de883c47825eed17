//! # lrid-plugin
//!
//! The plugin ABI of lrid, and what makes writing a plugin short. In: a type that implements
//! [`LearningRule`] (feature `torch`, on by default) or [`Classifier`]. Out: a `cdylib`
//! exporting two C symbols — the ABI version ([`ABI_VERSION_SYMBOL`]) and an entry point
//! ([`ENTRY_SYMBOL`]) returning a [`PluginInfo`] — that `lrid` loads from its plugins folder.
//!
//! The ABI is kind-neutral: [`PluginInfo`] carries a plain integer kind ([`KIND_LEARNING_RULE`],
//! [`KIND_CLASSIFIER`]) and one pointer to the vtable of that kind ([`RuleVTable`],
//! [`ClassifierVTable`]). A host reads `kind` as an integer and refuses kinds it does not know;
//! it accepts every ABI version from [`MIN_ABI_VERSION`] to [`ABI_VERSION`] (version 1 had the
//! same [`PluginInfo`] layout and only learning rules). A plugin that links libtorch states the
//! torch version it was built against ([`PluginInfo::torch_version`]; the host refuses a
//! mismatch); one that does not (a classifier on plain Arrow arrays) leaves it null and is not
//! tied to any torch version — build it with `default-features = false`.
//!
//! Every vtable function is `extern "C-unwind"`, runs the plugin's code inside `catch_unwind`
//! ([`guard`]), and reports a panic or an error as status [`STATUS_ERROR`] with the message in an
//! [`ErrorBuf`]: a failing plugin fails the call, never the daemon.
//!
//! ```ignore
//! struct Sgdm(lrid_plugin::SgdMomentum);
//! impl lrid_plugin::LearningRule for Sgdm {
//!     fn new(config: &serde_json::Value) -> Result<Self, String> { … }
//!     fn step(&mut self, params: &[tch::Tensor], lr: f64) -> Result<(), String> {
//!         self.0.step(params, lr)
//!     }
//! }
//! lrid_plugin::export_rule!(Sgdm, name = "sgdm", version = "1.0.0");
//! ```

use std::ffi::{c_char, c_void};

pub mod classifier;
pub use classifier::{
    CAP_IMPORTANCES, CAP_SAVE, Classifier, ClassifierVTable, FeatureLayout, Matrix, OwnedMatrix,
};

#[cfg(feature = "torch")]
mod ops;
#[cfg(feature = "torch")]
mod optim;
#[cfg(feature = "torch")]
mod rule;
#[cfg(feature = "torch")]
pub use ops::{draw_like, fa_forward, information_alignment_loss};
#[cfg(feature = "torch")]
pub use optim::{Adam, SgdMomentum};
#[cfg(feature = "torch")]
pub use rule::*;
#[cfg(feature = "torch")]
pub use tch;

pub use arrow;
pub use serde_json;

/// Version of this ABI. Version 2 made the ABI kind-neutral (integer kind, one vtable pointer)
/// and added classifiers; a version-1 library (a learning rule) has the same [`PluginInfo`]
/// layout and still loads.
pub const ABI_VERSION: u32 = 2;
/// The oldest ABI version a host built with this crate loads.
pub const MIN_ABI_VERSION: u32 = 1;
/// Exported `u32` static holding the plugin's [`ABI_VERSION`].
pub const ABI_VERSION_SYMBOL: &[u8] = b"lrid_plugin_abi_version";
/// Exported `extern "C-unwind" fn() -> *const PluginInfo`.
pub const ENTRY_SYMBOL: &[u8] = b"lrid_plugin_entry";

/// Status of a vtable call: done.
pub const STATUS_OK: i32 = 0;
/// Status of a vtable call: failed (or panicked); the message is in the [`ErrorBuf`].
pub const STATUS_ERROR: i32 = 1;
/// Status of a vtable call: the plugin does not offer this optional operation.
pub const STATUS_UNSUPPORTED: i32 = 2;

/// [`PluginInfo::kind`]: a learning rule; `vtable` points to a `RuleVTable`.
pub const KIND_LEARNING_RULE: u32 = 1;
/// [`PluginInfo::kind`]: a classifier; `vtable` points to a [`ClassifierVTable`].
pub const KIND_CLASSIFIER: u32 = 2;

/// The name of a plugin kind, as `lrid plugins` and the `plugins` table show it.
pub fn kind_name(kind: u32) -> Option<&'static str> {
    match kind {
        KIND_LEARNING_RULE => Some("learning-rule"),
        KIND_CLASSIFIER => Some("classifier"),
        _ => None,
    }
}

/// What the entry point returns; lives as long as the library (static data).
#[repr(C)]
#[allow(missing_debug_implementations)] // raw pointers of the ABI
pub struct PluginInfo {
    pub abi_version: u32,
    /// [`KIND_LEARNING_RULE`], [`KIND_CLASSIFIER`], …: says what `vtable` points to.
    pub kind: u32,
    /// NUL-terminated UTF-8.
    pub name: *const c_char,
    pub version: *const c_char,
    /// The libtorch release the plugin links (NUL-terminated), or null for a plugin that uses
    /// no libtorch.
    pub torch_version: *const c_char,
    /// The vtable of `kind` (static data).
    pub vtable: *const c_void,
}

// Static, immutable data.
unsafe impl Sync for PluginInfo {}

/// Where a failing call writes its message (UTF-8, truncated to `cap`).
#[repr(C)]
#[allow(missing_debug_implementations)] // raw pointers of the ABI
pub struct ErrorBuf {
    pub buf: *mut u8,
    pub cap: usize,
    pub len: usize,
}

impl ErrorBuf {
    /// # Safety
    /// `buf` must be valid for `cap` bytes.
    pub unsafe fn write(&mut self, message: &str) {
        let n = message.len().min(self.cap);
        // Cut on a character boundary.
        let n = (0..=n)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), self.buf, n) };
        self.len = n;
    }
}

/// A number from a plugin's JSON configuration, `default` when absent.
pub fn config_f64(config: &serde_json::Value, key: &str, default: f64) -> Result<f64, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("configuration key '{key}' must be a number; got {v}")),
    }
}

/// A boolean from a plugin's JSON configuration, `default` when absent.
pub fn config_bool(config: &serde_json::Value, key: &str, default: bool) -> Result<bool, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("configuration key '{key}' must be true or false; got {v}")),
    }
}

/// A non-negative integer from a plugin's JSON configuration, `default` when absent.
pub fn config_usize(
    config: &serde_json::Value,
    key: &str,
    default: usize,
) -> Result<usize, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            format!("configuration key '{key}' must be a non-negative integer; got {v}")
        }),
    }
}

/// A string from a plugin's JSON configuration, `default` when absent.
pub fn config_str<'a>(
    config: &'a serde_json::Value,
    key: &str,
    default: &'a str,
) -> Result<&'a str, String> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_str()
            .ok_or_else(|| format!("configuration key '{key}' must be a string; got {v}")),
    }
}

/// Refuses keys of a JSON configuration object that the plugin does not know, and a
/// configuration that is not an object.
pub fn config_known_keys(config: &serde_json::Value, known: &[&str]) -> Result<(), String> {
    let Some(object) = config.as_object() else {
        return Err(format!(
            "the configuration must be a JSON object; got {config}"
        ));
    };
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown configuration key '{key}' (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Parses a NUL-terminated JSON configuration; empty text is `{}`.
///
/// # Safety
/// `text` must be a valid NUL-terminated string.
pub unsafe fn parse_config(text: *const c_char, what: &str) -> Result<serde_json::Value, String> {
    let text = unsafe { std::ffi::CStr::from_ptr(text) }
        .to_str()
        .map_err(|e| format!("the {what}'s configuration is not UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| format!("the {what}'s configuration is not JSON: {e}"))
}

/// Runs `f`, turning an error or a panic into [`STATUS_ERROR`] with its message.
///
/// # Safety
/// `err` must be a valid [`ErrorBuf`].
pub unsafe fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<(), String>) -> i32 {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = match outcome {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(m)) => m,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("the plugin panicked: {what}")
        }
    };
    if let Some(e) = unsafe { err.as_mut() } {
        unsafe { e.write(&message) };
    }
    STATUS_ERROR
}
