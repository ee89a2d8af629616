//! The shared suite on the io_uring backend forced into its single-shot receive fallback (the
//! path older kernels take), via `SER_URING_SINGLESHOT=1`. A separate test binary, so the
//! variable never leaks into the other suites.
#[macro_use]
mod common;

use ser_shards::Backend;

/// Every test starts here; setting the variable once, before any runtime reads it.
fn single_shot() -> Backend {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("SER_URING_SINGLESHOT", "1"));
    Backend::IoUring
}

backend_suite!(single_shot());
