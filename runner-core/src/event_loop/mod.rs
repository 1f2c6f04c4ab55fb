//! The event loop. Layers, each file importing only from those above it in this list: `handle`
//! (`LoopHandle`), `api` (the loop and its methods), `builder` (building it, and its driver),
//! `run` (running it), `shutdown` (closing it).

pub(crate) mod api;
pub(crate) mod builder;
pub(crate) mod handle;
pub(crate) mod run;
pub(crate) mod shutdown;
