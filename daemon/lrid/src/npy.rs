//! Reading a tensor from a `.npy` file (f32 or f64, C order), with errors that say what is wrong.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::{DType, NpyFile, Order, TypeChar};

/// A tensor read from disk: its values in C order and its shape.
#[derive(Debug)]
pub enum Tensor {
    F32(Vec<f32>, Vec<usize>),
    F64(Vec<f64>, Vec<usize>),
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(_, s) | Tensor::F64(_, s) => s,
        }
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            Tensor::F32(..) => "f32",
            Tensor::F64(..) => "f64",
        }
    }
}

pub fn read(path: &Path) -> Result<Tensor> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = NpyFile::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == Order::Fortran {
        bail!(
            "{} is stored in Fortran order; save it in C order (numpy.ascontiguousarray)",
            path.display()
        );
    }
    let dtype = npy.dtype();
    let width = match &dtype {
        DType::Plain(ts) if ts.type_char() == TypeChar::Float => ts.num_bytes(),
        _ => None,
    };
    let expected: usize = shape.iter().product();
    let read_err = || {
        format!(
            "{}: cannot read the {expected} values its header announces (shape {shape:?}); is the file truncated?",
            path.display()
        )
    };
    let tensor = match width {
        Some(4) => Tensor::F32(npy.into_vec::<f32>().with_context(read_err)?, shape),
        Some(8) => Tensor::F64(npy.into_vec::<f64>().with_context(read_err)?, shape),
        _ => bail!(
            "{} holds dtype {}; lrid reads float32 or float64 arrays",
            path.display(),
            dtype.descr()
        ),
    };
    Ok(tensor)
}
