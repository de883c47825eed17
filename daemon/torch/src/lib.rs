//! # lrid-torch
//!
//! libtorch as the process sees it. In: nothing but the process (libtorch is linked through
//! `tch`; its folder is in the binary's run path, set at build time). Out: a [`TorchRuntime`]
//! saying which libtorch was loaded, its version, and whether CUDA is usable.
//!
//! The linker drops `libtorch_cuda.so` under `--as-needed` because no symbol of it is used
//! directly; without it libtorch never registers its CUDA backend. [`init`] therefore opens
//! `libtorch_cuda.so` from the folder of the loaded `libtorch_cpu.so`, when it exists, before
//! anything asks for a device. Call it first thing in `main`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libtorch version this build was compiled against (tch 0.24 pairs with PyTorch 2.11.0).
pub const BUILD_TORCH_VERSION: &str = "2.11.0";

/// Errors of the libtorch runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CUDA was requested but is not usable: {0}")]
    CudaUnavailable(String),
    #[error("unknown device '{0}': expected cpu, cuda, cuda:N or auto")]
    UnknownDevice(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What became of the CUDA part of libtorch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaLibrary {
    /// `libtorch_cuda.so` was opened from this path.
    Loaded(PathBuf),
    /// This libtorch has no CUDA part (a CPU-only build).
    Absent,
    /// It exists but could not be opened (missing CUDA libraries, …).
    Failed(String),
}

/// The libtorch this process runs on.
#[derive(Debug, Clone)]
pub struct TorchRuntime {
    /// Folder of the loaded `libtorch_cpu.so`.
    pub lib_dir: Option<PathBuf>,
    /// Version of the loaded libtorch (e.g. `2.11.0+cu130`), from its `version.py`.
    pub version: String,
    pub cuda_library: CudaLibrary,
    /// CUDA devices visible to libtorch (0 when CUDA is not usable).
    pub cuda_devices: usize,
}

impl TorchRuntime {
    pub fn cuda_usable(&self) -> bool {
        self.cuda_devices > 0
    }

    /// One line for `--version` and logs.
    pub fn cuda_summary(&self) -> String {
        match (&self.cuda_library, self.cuda_devices) {
            (_, n) if n > 0 => format!("usable ({n} device(s))"),
            (CudaLibrary::Loaded(_), _) => {
                "not usable (libtorch has CUDA support, but no CUDA device or driver is present)"
                    .into()
            }
            (CudaLibrary::Absent, _) => "not usable (this libtorch was built without CUDA)".into(),
            (CudaLibrary::Failed(why), _) => {
                format!("not usable (libtorch_cuda.so could not be loaded: {why})")
            }
        }
    }

    /// Resolves a device name: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when usable).
    pub fn device(&self, name: &str) -> Result<tch::Device> {
        match name {
            "cpu" => Ok(tch::Device::Cpu),
            "auto" if self.cuda_usable() => Ok(tch::Device::Cuda(0)),
            "auto" => Ok(tch::Device::Cpu),
            "cuda" | "gpu" => self.cuda_device(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => self.cuda_device(i),
                _ => Err(Error::UnknownDevice(other.into())),
            },
        }
    }

    fn cuda_device(&self, index: usize) -> Result<tch::Device> {
        if index < self.cuda_devices {
            Ok(tch::Device::Cuda(index))
        } else if self.cuda_usable() {
            Err(Error::CudaUnavailable(format!(
                "device cuda:{index} does not exist ({} device(s))",
                self.cuda_devices
            )))
        } else {
            Err(Error::CudaUnavailable(self.cuda_summary()))
        }
    }
}

static RUNTIME: OnceLock<TorchRuntime> = OnceLock::new();

/// Loads the CUDA part of libtorch (once) and describes the runtime.
pub fn init() -> &'static TorchRuntime {
    RUNTIME.get_or_init(|| {
        let lib_dir = loaded_libtorch_dir();
        let cuda_library = match &lib_dir {
            Some(dir) => load_cuda(dir),
            None => CudaLibrary::Failed("the folder of libtorch_cpu.so was not found".into()),
        };
        let version = lib_dir
            .as_deref()
            .and_then(read_version)
            .unwrap_or_else(|| format!("{BUILD_TORCH_VERSION} (build-time)"));
        let cuda_devices = if tch::Cuda::is_available() {
            tch::Cuda::device_count().max(0) as usize
        } else {
            0
        };
        let rt = TorchRuntime {
            lib_dir,
            version,
            cuda_library,
            cuda_devices,
        };
        tracing::debug!(?rt, "libtorch runtime");
        rt
    })
}

/// The folder of the `libtorch_cpu.so` mapped into this process.
fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .or_else(|| option_env!("LRID_LIBTORCH_BUILD_DIR").map(PathBuf::from))
}

fn load_cuda(dir: &Path) -> CudaLibrary {
    let path = dir.join("libtorch_cuda.so");
    if !path.exists() {
        return CudaLibrary::Absent;
    }
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: libtorch_cuda.so is the CUDA half of the libtorch already loaded; its
    // initialisers only register the CUDA backend with it.
    match unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            // Never unloaded: libtorch keeps pointers into it for the life of the process.
            std::mem::forget(lib);
            CudaLibrary::Loaded(path)
        }
        Err(e) => CudaLibrary::Failed(e.to_string()),
    }
}

/// `__version__` from `torch/version.py` beside `torch/lib`.
fn read_version(lib_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lib_dir.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loaded_libtorch_and_its_version() {
        let rt = init();
        let dir = rt.lib_dir.as_ref().expect("libtorch_cpu.so is mapped");
        assert!(dir.join("libtorch_cpu.so").exists());
        assert!(
            rt.version.starts_with(BUILD_TORCH_VERSION),
            "built for {BUILD_TORCH_VERSION}, runs {}",
            rt.version
        );
        // A real tensor operation works.
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        assert_eq!(t.sum(tch::Kind::Float).double_value(&[]), 6.0);
    }

    #[test]
    fn devices_resolve_or_say_why_not() {
        let rt = init();
        assert_eq!(rt.device("cpu").unwrap(), tch::Device::Cpu);
        assert!(
            rt.device("tpu")
                .unwrap_err()
                .to_string()
                .contains("unknown device 'tpu'")
        );
        if rt.cuda_usable() {
            assert_eq!(rt.device("auto").unwrap(), tch::Device::Cuda(0));
        } else {
            assert_eq!(rt.device("auto").unwrap(), tch::Device::Cpu);
            let e = rt.device("cuda").unwrap_err().to_string();
            assert!(e.starts_with("CUDA was requested but is not usable"), "{e}");
        }
    }
}
