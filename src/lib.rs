pub use runner_core::*;
