//! The shared suite on the io_uring backend (multishot receive where the kernel has it).
//! Skipped, with a note, only where io_uring is genuinely unavailable.
#[macro_use]
mod common;

use ser_shards::Backend;

backend_suite!(Backend::IoUring);
