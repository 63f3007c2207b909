//! The crate's one error type.
//!
//! A benchmark fails for a reason a person must read (a scenario, what it
//! was doing, what the kernel or a peer said), so every variant names the
//! operation and keeps its source.

use std::time::Duration;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown scenario {name:?} (known: {known})")]
    UnknownScenario { name: String, known: String },
    #[error("no samples to summarise (asked for {asked}, warm-up {warmup})")]
    NoSamples { asked: usize, warmup: usize },
    #[error("cannot create a histogram")]
    Histogram(#[source] hdrhistogram::CreationError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Shmem {
        what: String,
        #[source]
        source: dipc_shmem::Error,
    },
    #[error("{what}")]
    Tcp {
        what: String,
        #[source]
        source: dipc_transport_tcp::Error,
    },
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Data read back was not what was written: the number measured would
    /// describe a broken protocol, so it is not reported.
    #[error("wrong data: {detail}")]
    WrongData { detail: String },
    /// An agent process answered with an error or not at all.
    #[error("agent on node {node}: {detail}")]
    Agent { node: usize, detail: String },
    /// The embedded referee or a node failed to start, join or stop.
    #[error("cluster: {detail}")]
    Cluster { detail: String },
    /// A floor whose tool is missing on this machine: skipped, not failed.
    #[error("skipped: {what}")]
    Unavailable { what: String },
    #[error("cannot draw the plot {path}: {detail}")]
    Plot { path: String, detail: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn shmem(what: impl Into<String>, source: dipc_shmem::Error) -> Error {
        Error::Shmem {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn tcp(what: impl Into<String>, source: dipc_transport_tcp::Error) -> Error {
        Error::Tcp {
            what: what.into(),
            source,
        }
    }
}
