#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use runner_core::*;
pub use runner_macros::{main, test};
