//! Test fixture: a library that claims a future plugin ABI (version 999), which the host must
//! refuse with a message naming both versions. It exports nothing else.

#[unsafe(no_mangle)]
pub static lrid_plugin_abi_version: u32 = 999;

// Keeps the crate linked against lrid-plugin like a real plugin would be.
pub const BUILT_AGAINST: u32 = lrid_plugin::ABI_VERSION;
