//! [`BufRing`], a provided-buffer ring (`register_buf_ring`): the page-aligned entries the
//! kernel consumes and the buffers they point at, handed back one by one and published with
//! release ordering. Holds `unsafe` code (the leaf module's rule: every block says why it is
//! sound).

use std::alloc::{self, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// A provided-buffer ring: page-aligned entries the kernel consumes, and the buffers.
pub(super) struct BufRing {
    pub(super) entries: *mut BufRingEntry,
    layout: Layout,
    pub(super) count: u16,
    tail: u16,
    bufs: Vec<u8>,
    buf_len: usize,
}

impl BufRing {
    pub(super) fn new(count: u16, buf_len: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = Self {
            entries,
            layout,
            count,
            tail: 0,
            bufs: vec![0; count as usize * buf_len],
            buf_len,
        };
        for bid in 0..count {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Queues buffer `bid` for the kernel (visible after [`publish`](Self::publish)).
    pub(super) fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, within the allocation; the kernel only reads entries between
        // its head and the published tail, and this one is beyond the published tail.
        let e = unsafe { &mut *self.entries.add(idx) };
        // SAFETY: `bid < count`, so the offset is within `bufs`.
        let addr = unsafe { self.bufs.as_mut_ptr().add(bid as usize * self.buf_len) };
        e.set_addr(addr as u64);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    pub(super) fn publish(&self) {
        // SAFETY: `entries` is the ring base; the tail field overlays entry 0's reserved field,
        // which the kernel reads and only we write, with release ordering as the ABI requires.
        unsafe {
            let tail = BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    pub(super) fn buffer(&self, bid: u16) -> Option<&[u8]> {
        let start = bid as usize * self.buf_len;
        self.bufs.get(start..start + self.buf_len)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the owner unregistered it (or leaked us).
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) };
    }
}
