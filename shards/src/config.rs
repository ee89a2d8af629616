//! Runtime configuration: [`Config`], the backend choice ([`Backend`]) and what was actually
//! chosen ([`BackendKind`]).
//!
//! The only environment variable read is `SER_IO_BACKEND` (`auto`, `io_uring`/`uring`,
//! `portable`), and only when the caller asks for it ([`Config::from_env`],
//! [`Config::apply_env`]): an operator's escape hatch for kernels where io_uring misbehaves.
//! Nothing here touches sockets.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The environment variable that overrides [`Config::backend`].
pub const BACKEND_ENV: &str = "SER_IO_BACKEND";

/// How to start a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Number of shards (threads); 0 means one per available core.
    pub shards: usize,
    /// Addresses to listen on; every shard gets one socket per address. IPv6 sockets are
    /// `IPV6_V6ONLY`, so list `0.0.0.0:p` and `[::]:p` to serve both.
    pub listen: Vec<SocketAddr>,
    /// Stream (TCP) listen addresses; every shard gets its own `SO_REUSEPORT` listener on
    /// each, with socket ids after the datagram sockets' (`listen.len() + i`).
    pub stream_listen: Vec<SocketAddr>,
    /// Most stream connections open at once, all shards together; past it accepted
    /// connections are closed at once and outgoing ones refused (both counted).
    pub max_connections: usize,
    /// True: all shards share each address through `SO_REUSEPORT` (the kernel spreads peers by
    /// a hash of the 4-tuple). False: each shard binds its own socket per address (with port 0,
    /// a distinct ephemeral port per shard: the load generator's mode).
    pub reuse_port: bool,
    /// Which I/O backend to use.
    pub backend: Backend,
    /// Pin shard `i` to core `i` (modulo the core count). Failure to pin is not fatal.
    pub pin: bool,
    /// `SO_RCVBUF` for every socket; `None` keeps the system default.
    pub recv_buffer: Option<usize>,
    /// Largest datagram accepted; larger ones are dropped and counted as truncated.
    pub max_datagram: usize,
    /// Threads in the blocking pool shared by all shards (at least one is started).
    pub blocking_threads: usize,
    /// Thread name prefix: shard threads are `<name>-shard-<i>`, pool threads `<name>-blocking-<i>`.
    pub name: String,
    /// Coalesced wake-ups (the load generator's mode): a shard that just had work waits at
    /// least this long, counted from its last wake-up, before it handles more, so that one
    /// wake-up handles many datagrams (fewer context switches, less CPU per message; timers
    /// still fire on time). `None` (the default, a server's choice): wake on every completion.
    pub batch: Option<std::time::Duration>,
    /// Every socket stamps datagrams with the kernel's receive time (`SO_TIMESTAMPNS`), given
    /// to the handler as [`Inbound::at`](crate::Inbound::at): what a generator measuring
    /// response times wants, as the time it gets to a datagram (its own wake-up, a batch)
    /// is not when the datagram came.
    pub stamp: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            shards: 0,
            listen: Vec::new(),
            stream_listen: Vec::new(),
            max_connections: 2048,
            reuse_port: true,
            backend: Backend::Auto,
            pin: true,
            recv_buffer: None,
            max_datagram: 65_535,
            blocking_threads: 4,
            name: "ser".to_owned(),
            batch: None,
            stamp: false,
        }
    }
}

impl Config {
    /// The defaults, with `SER_IO_BACKEND` applied.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Override [`Config::backend`] from `SER_IO_BACKEND` when it is set (and not empty).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Some(b) = Backend::from_env()? {
            self.backend = b;
        }
        Ok(())
    }

    /// The number of shards this configuration starts (resolves `shards == 0`).
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// The backend requested in [`Config::backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring when the kernel offers and allows it, else the portable backend.
    #[default]
    Auto,
    /// io_uring or an error from `Runtime::start`.
    IoUring,
    /// `recvmmsg`/`sendmmsg` + `epoll`.
    Portable,
}

impl Backend {
    /// Reads `SER_IO_BACKEND`; `Ok(None)` when unset or empty.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ConfigError::Backend("<not unicode>".into()))
            }
        }
    }
}

impl FromStr for Backend {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "io_uring" | "io-uring" | "uring" | "iouring" => Ok(Self::IoUring),
            "portable" | "epoll" => Ok(Self::Portable),
            _ => Err(ConfigError::Backend(s.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::IoUring => "io_uring",
            Self::Portable => "portable",
        })
    }
}

/// The backend a running [`Runtime`](crate::Runtime) actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    IoUring,
    Portable,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IoUring => "io_uring",
            Self::Portable => "portable",
        })
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown I/O backend {0:?} (expected auto, io_uring or portable)")]
    Backend(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        assert_eq!("portable".parse::<Backend>(), Ok(Backend::Portable));
        assert_eq!("IO_URING".parse::<Backend>(), Ok(Backend::IoUring));
        assert_eq!(" auto ".parse::<Backend>(), Ok(Backend::Auto));
        assert!("kqueue".parse::<Backend>().is_err());
    }

    #[test]
    fn shard_count_resolves_zero() {
        let cfg = Config::default();
        assert!(cfg.shard_count() >= 1);
        let cfg = Config {
            shards: 3,
            ..Config::default()
        };
        assert_eq!(cfg.shard_count(), 3);
    }
}
