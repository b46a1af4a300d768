//! Which MaxSim kernels this process scores with, for `tessera info`,
//! `/metrics` and the benches; and the check that `TESSERA_KERNEL`, when set,
//! names one this CPU runs (made when a database opens, so that a typo is an
//! error there and never a silent fallback).

use crate::error::{Error, Result};
use tessera_kernels::{Int8Kernel, KERNEL_ENV, Kernel};

/// The kernels in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    /// The f32 kernel of f16 collections (and of int8 ones at a dim VNNI cannot take).
    pub kernel: &'static str,
    /// `TESSERA_KERNEL` or `calibration`.
    pub chosen_by: &'static str,
    /// Every f32 kernel this CPU runs (short names, as `TESSERA_KERNEL` takes them).
    pub available: Vec<&'static str>,
    /// The int8 kernel at a dim that is a multiple of 4 (others widen to f32).
    pub int8_kernel: &'static str,
}

/// The kernels this process uses (the first call runs the calibration, a few milliseconds).
///
/// # Panics
/// If `TESSERA_KERNEL` is invalid; [`check_kernel_env`] reports that as an error first.
pub fn kernel_info() -> KernelInfo {
    let chosen_by = match Kernel::from_env() {
        Ok(Some(_)) => KERNEL_ENV,
        _ => "calibration",
    };
    KernelInfo {
        kernel: Kernel::detect().name(),
        chosen_by,
        available: Kernel::available().into_iter().map(Kernel::short_name).collect(),
        int8_kernel: Int8Kernel::detect(128).name(),
    }
}

/// An error if `TESSERA_KERNEL` names no kernel this CPU can run.
pub fn check_kernel_env() -> Result<()> {
    Kernel::from_env().map(|_| ()).map_err(Error::InvalidArgument)
}
