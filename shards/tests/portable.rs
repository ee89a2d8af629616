//! The shared suite on the portable backend (epoll + recvmmsg/sendmmsg).
#[macro_use]
mod common;

use ser_shards::Backend;

backend_suite!(Backend::Portable);
