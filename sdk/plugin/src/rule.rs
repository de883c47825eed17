//! Learning-rule plugins (kind [`KIND_LEARNING_RULE`](crate::KIND_LEARNING_RULE)): the
//! [`RuleVTable`], the [`LearningRule`] trait and [`export_rule!`](crate::export_rule).
//!
//! Tensors cross the boundary as libtorch tensor handles (`*mut C_tensor` of `torch-sys`): host
//! and plugin link the same libtorch, and the plugin states the torch version it was built
//! against ([`TORCH_VERSION`]); the host refuses a mismatch. A handle passed *in* is borrowed
//! (the plugin takes a shallow clone); a handle passed *out* is owned by the receiver.

use std::ffi::{c_char, c_void};

use tch::Tensor;
pub use torch_sys::C_tensor;

pub use crate::ops::plain_forward;
use crate::{ErrorBuf, guard};

/// The libtorch version plugins built with this crate link (tch 0.24 ↔ PyTorch 2.11.0).
pub const TORCH_VERSION: &str = "2.11.0";
/// [`TORCH_VERSION`] for [`PluginInfo::torch_version`](crate::PluginInfo::torch_version).
pub const TORCH_VERSION_C: &std::ffi::CStr = c"2.11.0";

/// How an observed layer computes (the op is the rule's to route gradients through).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Index among the network's observed layers.
    pub index: u32,
    pub kind: LayerKind,
    pub stride: [i64; 2],
    /// Zero padding before (top, left) — and after, plus `padding_extra`.
    pub padding: [i64; 2],
    /// Extra zero padding after (bottom, right): TF "SAME" pads asymmetrically (e.g. a 4×4
    /// kernel at stride 1 pads 1 before and 2 after). Usually 0.
    pub padding_extra: [i64; 2],
}

impl LayerSpec {
    /// A dense layer.
    pub const fn dense(index: u32) -> Self {
        Self {
            index,
            kind: LayerKind::Dense,
            stride: [1, 1],
            padding: [0, 0],
            padding_extra: [0, 0],
        }
    }

    /// A conv layer with symmetric padding.
    pub const fn conv(index: u32, stride: i64, padding: i64) -> Self {
        Self {
            index,
            kind: LayerKind::Conv,
            stride: [stride, stride],
            padding: [padding, padding],
            padding_extra: [0, 0],
        }
    }
}

#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `y = x Wᵀ + b`, W `[out, in]` (tch layout).
    Dense = 0,
    /// `y = conv2d(x, W) + b`, W OIHW.
    Conv = 1,
}

/// Most extra tensors a rule keeps per layer.
pub const MAX_EXTRA: usize = 4;

/// A per-layer call of the vtable (`forward`, `local_loss`): the layer's input `x`, kernel,
/// nullable bias and extra tensors in; one owned tensor handle (or null) out.
pub type LayerFn = unsafe extern "C-unwind" fn(
    state: *mut c_void,
    spec: *const LayerSpec,
    x: *mut C_tensor,
    weight: *mut C_tensor,
    bias: *mut C_tensor,
    extra: *const *mut C_tensor,
    n_extra: usize,
    out: *mut *mut C_tensor,
    err: *mut ErrorBuf,
) -> i32;

/// The learning-rule vtable. `state` is the rule instance made by `create`.
#[repr(C)]
#[allow(missing_debug_implementations)] // raw pointers and function pointers of the ABI
pub struct RuleVTable {
    /// `config`: NUL-terminated JSON (hyperparameters). Writes the instance to `out`.
    pub create: unsafe extern "C-unwind" fn(
        config: *const c_char,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32,
    pub destroy: unsafe extern "C-unwind" fn(state: *mut c_void),
    /// A layer's extra trainable tensors (e.g. feedback weights), made from its kernel `weight`:
    /// up to [`MAX_EXTRA`] owned handles written to `out`, their number to `n`.
    pub init_layer: unsafe extern "C-unwind" fn(
        state: *mut c_void,
        spec: *const LayerSpec,
        weight: *mut C_tensor,
        out: *mut *mut C_tensor,
        n: *mut usize,
        err: *mut ErrorBuf,
    ) -> i32,
    /// The layer's output before its activation (bias included); `bias` may be null.
    pub forward: LayerFn,
    /// The layer's local loss for this training step (a scalar), or null in `out` for none.
    pub local_loss: LayerFn,
    /// Updates `params` in place from their gradients; the same order on every call.
    pub step: unsafe extern "C-unwind" fn(
        state: *mut c_void,
        params: *const *mut C_tensor,
        n: usize,
        lr: f64,
        err: *mut ErrorBuf,
    ) -> i32,
}

/// A learning rule, written in safe Rust; [`export_rule!`] turns it into a plugin.
pub trait LearningRule: Send + Sized {
    fn new(config: &serde_json::Value) -> Result<Self, String>;

    /// Extra trainable tensors of a layer (none by default).
    fn init_layer(&mut self, _spec: &LayerSpec, _weight: &Tensor) -> Result<Vec<Tensor>, String> {
        Ok(Vec::new())
    }

    /// The layer's output before its activation; plain backprop by default.
    fn forward(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        _extra: &[Tensor],
    ) -> Result<Tensor, String> {
        plain_forward(spec, x, weight, bias)
    }

    /// A local loss added to the task loss (none by default).
    fn local_loss(
        &mut self,
        _spec: &LayerSpec,
        _x: &Tensor,
        _weight: &Tensor,
        _bias: Option<&Tensor>,
        _extra: &[Tensor],
    ) -> Result<Option<Tensor>, String> {
        Ok(None)
    }

    /// Updates every parameter (kernels, biases, extra tensors, …) from its `.grad`.
    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String>;
}

/// The borrowed inputs of a [`LayerFn`] call.
#[derive(Debug, Clone, Copy)]
pub struct LayerArgs {
    pub state: *mut c_void,
    pub spec: *const LayerSpec,
    pub x: *mut C_tensor,
    pub weight: *mut C_tensor,
    pub bias: *mut C_tensor,
    pub extra: *const *mut C_tensor,
    pub n_extra: usize,
}

/// The body of a [`LayerFn`] for rule type `R`: borrows the tensors, runs `f` under [`guard`],
/// hands the result out (null for `None`).
///
/// # Safety
/// `args` must hold a live `R` instance and live handles; `out` and `err` must be valid.
pub unsafe fn layer_call<R>(
    args: LayerArgs,
    out: *mut *mut C_tensor,
    err: *mut ErrorBuf,
    f: impl FnOnce(
        &mut R,
        &LayerSpec,
        &Tensor,
        &Tensor,
        Option<&Tensor>,
        &[Tensor],
    ) -> Result<Option<Tensor>, String>,
) -> i32 {
    unsafe {
        guard(err, || {
            let rule = &mut *(args.state as *mut R);
            let result = f(
                rule,
                &*args.spec,
                &borrow_tensor(args.x),
                &borrow_tensor(args.weight),
                borrow_optional(args.bias).as_ref(),
                &borrow_all(args.extra, args.n_extra),
            )?;
            *out = result.map_or(std::ptr::null_mut(), into_handle);
            Ok(())
        })
    }
}

/// A layer's first extra tensor: the feedback weights of FA-style rules.
pub fn feedback_weights<'a>(spec: &LayerSpec, extra: &'a [Tensor]) -> Result<&'a Tensor, String> {
    extra.first().ok_or_else(|| {
        format!(
            "layer {}: no feedback weights (init_layer was not called)",
            spec.index
        )
    })
}

/// A borrowed handle as a tensor (a shallow clone; the caller keeps its own).
///
/// # Safety
/// `p` must be a live tensor handle.
pub unsafe fn borrow_tensor(p: *mut C_tensor) -> Tensor {
    unsafe { Tensor::clone_from_ptr(p) }
}

/// A nullable borrowed handle.
///
/// # Safety
/// `p` must be null or a live tensor handle.
pub unsafe fn borrow_optional(p: *mut C_tensor) -> Option<Tensor> {
    (!p.is_null()).then(|| unsafe { borrow_tensor(p) })
}

/// `n` borrowed handles.
///
/// # Safety
/// `p` must point to `n` live tensor handles (or `n` must be 0).
pub unsafe fn borrow_all(p: *const *mut C_tensor, n: usize) -> Vec<Tensor> {
    if n == 0 {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(p, n) }
        .iter()
        .map(|&t| unsafe { borrow_tensor(t) })
        .collect()
}

/// Hands a tensor to the other side: the receiver owns the returned handle.
pub fn into_handle(mut t: Tensor) -> *mut C_tensor {
    let p = t.as_mut_ptr();
    std::mem::forget(t);
    p
}

/// Exports a [`LearningRule`] as a plugin: the ABI version symbol, the entry point, the vtable.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty, name = $name:literal, version = $version:literal) => {
        mod __lrid_plugin_export {
            use super::*;
            use std::ffi::{c_char, c_void};
            use $crate::{C_tensor, ErrorBuf, LayerSpec, LearningRule};

            #[unsafe(no_mangle)]
            pub static lrid_plugin_abi_version: u32 = $crate::ABI_VERSION;

            unsafe extern "C-unwind" fn create(
                config: *const c_char,
                out: *mut *mut c_void,
                err: *mut ErrorBuf,
            ) -> i32 {
                unsafe {
                    $crate::guard(err, || {
                        let value = $crate::parse_config(config, "rule")?;
                        let rule = <$rule as LearningRule>::new(&value)?;
                        *out = Box::into_raw(Box::new(rule)) as *mut c_void;
                        Ok(())
                    })
                }
            }

            unsafe extern "C-unwind" fn destroy(state: *mut c_void) {
                if !state.is_null() {
                    let _ = std::panic::catch_unwind(|| unsafe {
                        drop(Box::from_raw(state as *mut $rule))
                    });
                }
            }

            unsafe extern "C-unwind" fn init_layer(
                state: *mut c_void,
                spec: *const LayerSpec,
                weight: *mut C_tensor,
                out: *mut *mut C_tensor,
                n: *mut usize,
                err: *mut ErrorBuf,
            ) -> i32 {
                unsafe {
                    $crate::guard(err, || {
                        let rule = &mut *(state as *mut $rule);
                        let extra = rule.init_layer(&*spec, &$crate::borrow_tensor(weight))?;
                        if extra.len() > $crate::MAX_EXTRA {
                            return Err(format!(
                                "a rule keeps at most {} extra tensors per layer; this one made {}",
                                $crate::MAX_EXTRA,
                                extra.len()
                            ));
                        }
                        *n = extra.len();
                        for (i, t) in extra.into_iter().enumerate() {
                            *out.add(i) = $crate::into_handle(t);
                        }
                        Ok(())
                    })
                }
            }

            unsafe extern "C-unwind" fn forward(
                state: *mut c_void,
                spec: *const LayerSpec,
                x: *mut C_tensor,
                weight: *mut C_tensor,
                bias: *mut C_tensor,
                extra: *const *mut C_tensor,
                n_extra: usize,
                out: *mut *mut C_tensor,
                err: *mut ErrorBuf,
            ) -> i32 {
                let args = $crate::LayerArgs {
                    state,
                    spec,
                    x,
                    weight,
                    bias,
                    extra,
                    n_extra,
                };
                unsafe {
                    $crate::layer_call::<$rule>(args, out, err, |r, s, x, w, b, e| {
                        r.forward(s, x, w, b, e).map(Some)
                    })
                }
            }

            unsafe extern "C-unwind" fn local_loss(
                state: *mut c_void,
                spec: *const LayerSpec,
                x: *mut C_tensor,
                weight: *mut C_tensor,
                bias: *mut C_tensor,
                extra: *const *mut C_tensor,
                n_extra: usize,
                out: *mut *mut C_tensor,
                err: *mut ErrorBuf,
            ) -> i32 {
                let args = $crate::LayerArgs {
                    state,
                    spec,
                    x,
                    weight,
                    bias,
                    extra,
                    n_extra,
                };
                unsafe {
                    $crate::layer_call::<$rule>(args, out, err, |r, s, x, w, b, e| {
                        r.local_loss(s, x, w, b, e)
                    })
                }
            }

            unsafe extern "C-unwind" fn step(
                state: *mut c_void,
                params: *const *mut C_tensor,
                n: usize,
                lr: f64,
                err: *mut ErrorBuf,
            ) -> i32 {
                unsafe {
                    $crate::guard(err, || {
                        let rule = &mut *(state as *mut $rule);
                        rule.step(&$crate::borrow_all(params, n), lr)
                    })
                }
            }

            static VTABLE: $crate::RuleVTable = $crate::RuleVTable {
                create,
                destroy,
                init_layer,
                forward,
                local_loss,
                step,
            };

            static INFO: $crate::PluginInfo = $crate::PluginInfo {
                abi_version: $crate::ABI_VERSION,
                kind: $crate::KIND_LEARNING_RULE,
                name: concat!($name, "\0").as_ptr() as *const c_char,
                version: concat!($version, "\0").as_ptr() as *const c_char,
                torch_version: $crate::TORCH_VERSION_C.as_ptr(),
                vtable: &VTABLE as *const $crate::RuleVTable as *const c_void,
            };

            #[unsafe(no_mangle)]
            pub extern "C-unwind" fn lrid_plugin_entry() -> *const $crate::PluginInfo {
                &INFO
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_two_spellings_of_the_torch_version_agree() {
        assert_eq!(
            super::TORCH_VERSION_C.to_str().unwrap(),
            super::TORCH_VERSION
        );
    }
}
