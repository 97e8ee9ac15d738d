//! The gateway's global allocator: the system allocator (glibc's malloc),
//! except that it keeps one spare block for large payloads.
//!
//! Why: a large tool result (10 MiB) is read into one buffer. glibc serves
//! the first such buffer with `mmap`, then raises its mmap threshold above
//! it, so later ones come from the heap of the worker thread that asks,
//! and each freed one stays in that thread's arena. With two workers the
//! gateway held 3.3 payloads at its peak for one call in flight
//! (`cargo bench --bench large`, docs/benchmarks.md). A fixed threshold
//! (every large block mapped and unmapped) held 1.25 but faulted 10 MiB of
//! fresh pages on every call: the gateway's p50 went from 14.6 to 22.1 ms.
//!
//! So: [`install`] fixes glibc's threshold at [`LARGE`] (a large block is
//! mapped, and unmapped when freed: no arena keeps one), and [`Gateway`]
//! keeps the last freed large block as a spare and hands it to the next
//! large allocation it fits. One call at a time reuses the same pages;
//! calls at once map their own and give them back when done. What is kept
//! at rest is one block, at most the largest message the gateway took.
//!
//! [`install`] also caps glibc's arenas at one per [`CPUS_PER_ARENA`] CPUs
//! (`M_ARENA_MAX`; one on this 2-core box). glibc gives each new thread an
//! arena of its own on its first allocation, up to 8 per core, and each
//! keeps what was freed on it: peak RSS under the 64-client load was
//! 15.3–16.1 MB with an arena per thread, 14.1–14.2 MB with one (14.0–14.2
//! with the audit log), CPU per call the same within this machine's noise:
//! small blocks come from each thread's cache (tcache) without the arena's
//! lock (docs/benchmarks.md, "One malloc arena"). More CPUs get more
//! arenas, so more workers do not queue on one lock (not measured here: this
//! machine has two). An operator who sets `arena_max`
//! (`GLIBC_TUNABLES=glibc.malloc.arena_max=N`, or `MALLOC_ARENA_MAX=N`) keeps
//! that.
//!
//! Only on 64-bit Linux with glibc; elsewhere it is the system allocator, untouched.
//!
//! The crate denies `unsafe_code`; an allocator cannot be written without
//! it, so this module is the second named exception (ARCHITECTURE.md).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Blocks of this size or more are mapped on their own and may become the
/// spare: far above what a call's ordinary buffers need (hyper's read
/// buffer stops at 400 KiB), far below a large tool result.
pub const LARGE: usize = 4 << 20;

/// CPUs per malloc arena (see the module docs): hosts of up to four CPUs
/// get one.
pub const CPUS_PER_ARENA: usize = 4;

/// The system allocator and one spare large block (see the module docs).
#[derive(Debug)]
pub struct Gateway {
    spare: AtomicPtr<u8>,
}

impl Gateway {
    /// An allocator with no spare block yet.
    pub const fn new() -> Self {
        Gateway { spare: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// Whether a block for `layout` may come from, or go to, the spare:
    /// large, and aligned as malloc aligns (glibc: 16).
    fn pooled(layout: Layout) -> bool {
        glibc::ON && layout.size() >= LARGE && layout.align() <= 16
    }

    /// [`GlobalAlloc::alloc`] of a large block: the spare when it fits.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`], with [`Gateway::pooled`] true.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_large(&self, layout: Layout) -> *mut u8 {
        let spare = self.spare.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !spare.is_null() {
            // SAFETY: the spare came from System.alloc and is not freed.
            if unsafe { glibc::usable(spare) } >= layout.size() {
                return spare;
            }
            // SAFETY: as above; System.dealloc ignores the layout's size on
            // glibc (free reads its own header).
            unsafe { System.dealloc(spare, layout) };
        }
        // SAFETY: the caller's promise on `layout`.
        unsafe { System.alloc(layout) }
    }

    /// [`GlobalAlloc::dealloc`] of a large block: kept as the spare when
    /// there is none.
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`], with [`Gateway::pooled`] true.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_large(&self, ptr: *mut u8, layout: Layout) {
        if self.spare.compare_exchange(std::ptr::null_mut(), ptr, Ordering::Release, Ordering::Relaxed).is_err() {
            // SAFETY: the caller's promise: `ptr` is ours, with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

/// What the spare block needs of glibc. 64-bit only: 32-bit glibc aligns
/// to 8, and caps the mmap threshold at 512 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod glibc {
    use super::LARGE;

    unsafe extern "C" {
        fn malloc_usable_size(ptr: *mut std::ffi::c_void) -> usize;
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }

    /// Whether the spare block is kept here.
    pub(super) const ON: bool = true;

    /// How many bytes the block at `ptr` (from malloc) can hold.
    ///
    /// # Safety
    /// `ptr` came from the system allocator and is not freed.
    pub(super) unsafe fn usable(ptr: *mut u8) -> usize {
        // SAFETY: the caller's promise.
        unsafe { malloc_usable_size(ptr.cast()) }
    }

    /// Fixes the mmap threshold at [`LARGE`]; whether glibc took it.
    pub(super) fn fix_threshold() -> bool {
        /// glibc's `M_MMAP_THRESHOLD` (malloc.h).
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only sets a parameter; no allocation is under way
        // on another thread this early.
        unsafe { mallopt(M_MMAP_THRESHOLD, LARGE as std::ffi::c_int) == 1 }
    }

    /// Caps glibc's arenas (see the module docs) unless the environment
    /// sets the number; whether glibc took the cap (false when the
    /// operator's number stands).
    pub(super) fn cap_arenas() -> bool {
        let (tunables, arena_max) = (std::env::var_os("GLIBC_TUNABLES"), std::env::var_os("MALLOC_ARENA_MAX"));
        if super::arenas_chosen(tunables.as_deref(), arena_max.as_deref()) {
            return false;
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        set_arena_max(cpus.div_ceil(super::CPUS_PER_ARENA))
    }

    /// `mallopt(M_ARENA_MAX, n)`; whether glibc took it.
    pub(super) fn set_arena_max(n: usize) -> bool {
        /// glibc's `M_ARENA_MAX` (malloc.h).
        const M_ARENA_MAX: std::ffi::c_int = -8;
        let n = std::ffi::c_int::try_from(n).unwrap_or(std::ffi::c_int::MAX);
        // SAFETY: as in `fix_threshold`.
        unsafe { mallopt(M_ARENA_MAX, n) == 1 }
    }
}

/// Elsewhere: no spare block, glibc's thresholds untouched.
#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
mod glibc {
    pub(super) const ON: bool = false;

    pub(super) unsafe fn usable(_ptr: *mut u8) -> usize {
        0
    }

    pub(super) fn fix_threshold() -> bool {
        false
    }

    pub(super) fn cap_arenas() -> bool {
        false
    }
}

/// Whether the environment already says how many arenas glibc may make:
/// any value that is not blank as `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES` or as `MALLOC_ARENA_MAX`. glibc reads these with
/// `strtoul` (hex, signs and leading blanks included) and ignores what it
/// cannot use; anything the operator wrote is left to glibc rather than
/// second-guessed here, so a number glibc took is never overridden.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn arenas_chosen(tunables: Option<&std::ffi::OsStr>, arena_max: Option<&std::ffi::OsStr>) -> bool {
    let written = |v: &str| !v.trim().is_empty();
    arena_max.is_some_and(|v| written(&v.to_string_lossy()))
        || tunables.is_some_and(|t| {
            t.to_string_lossy()
                .split(':')
                .any(|kv| kv.split_once('=').is_some_and(|(k, v)| k == "glibc.malloc.arena_max" && written(v)))
        })
}

// SAFETY: every block comes from `System` and goes back to it; a spare is
// owned by nobody but the allocator until `alloc` hands it out whole, and
// the swap makes that hand-out exclusive.
unsafe impl GlobalAlloc for Gateway {
    // `alloc` and `dealloc` are never inlined: every allocation site calls
    // them as it called malloc and free. Inlined (LTO inlines everything
    // it can), the test and the spare's atomics landed in thousands of
    // drop sites: `.text` grew by 640 KB and the code resident under load
    // by 0.8 MB. Out of line they cost a jump and a compare per call.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::pooled(layout) {
            // SAFETY: the caller's promise on `layout`; it is large.
            return unsafe { self.alloc_large(layout) };
        }
        // SAFETY: the caller's promise on `layout`.
        unsafe { System.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::pooled(layout) {
            // SAFETY: the caller's promise; the block is large.
            return unsafe { self.dealloc_large(ptr, layout) };
        }
        // SAFETY: the caller's promise: `ptr` is ours, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // A spare is not zeroed; fresh mapped pages are.
        // SAFETY: the caller's promise on `layout`.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // glibc's realloc moves a mapped block with mremap; a block handed
        // out as the spare is an ordinary malloc block to it.
        // SAFETY: the caller's promise.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Fixes glibc's mmap threshold at [`LARGE`] and caps its arenas unless
/// the environment says otherwise (see the module docs); call once, first
/// thing in `main`, before any thread starts. Returns whether glibc took
/// the threshold.
pub fn install() -> bool {
    glibc::cap_arenas();
    glibc::fix_threshold()
}

#[cfg(all(test, target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).expect("layout")
    }

    #[test]
    fn an_operators_arena_number_stands() {
        let os = |s: &'static str| Some(std::ffi::OsStr::new(s));
        assert!(!arenas_chosen(None, None));
        assert!(!arenas_chosen(os("glibc.malloc.mmap_threshold=4096"), None));
        assert!(arenas_chosen(os("glibc.malloc.arena_max=2"), None));
        assert!(arenas_chosen(os("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"), None));
        assert!(!arenas_chosen(os("glibc.malloc.arena_test=2"), None));
        assert!(arenas_chosen(None, os("3")));
        // Only a blank value leaves the choice to us; whatever else the
        // operator wrote is glibc's to read (`0x10` and `+2` are numbers to
        // its strtoul).
        for blank in ["", " ", "\t"] {
            assert!(!arenas_chosen(None, Some(std::ffi::OsStr::new(blank))), "{blank:?}");
            assert!(
                !arenas_chosen(Some(std::ffi::OsStr::new(&format!("glibc.malloc.arena_max={blank}"))), None),
                "{blank:?}"
            );
        }
        for written in ["0x10", "+2", " 3", "0", "abc"] {
            assert!(arenas_chosen(None, Some(std::ffi::OsStr::new(written))), "{written:?}");
            assert!(
                arenas_chosen(Some(std::ffi::OsStr::new(&format!("glibc.malloc.arena_max={written}"))), None),
                "{written:?}"
            );
        }
    }

    #[test]
    fn glibc_takes_the_arena_cap() {
        // The test process's own malloc: a cap above its arenas now changes
        // nothing that matters here.
        assert!(glibc::set_arena_max(64));
    }

    #[test]
    fn a_freed_large_block_is_the_next_large_allocation() {
        let a = Gateway::new();
        // SAFETY: every block is written within its layout and freed once
        // with the layout it was allocated with.
        unsafe {
            let first = a.alloc(layout(LARGE + 100));
            assert!(!first.is_null());
            first.write_bytes(7, LARGE + 100);
            a.dealloc(first, layout(LARGE + 100));
            // Smaller, still large: the same block, as it was.
            let second = a.alloc(layout(LARGE));
            assert_eq!(second, first);
            assert_eq!(*second.add(LARGE - 1), 7);
            // While it is out, another large one is a block of its own.
            let third = a.alloc(layout(LARGE));
            assert!(!third.is_null() && third != second);
            a.dealloc(third, layout(LARGE));
            // The spare is now `third`; `second` goes back to the system.
            a.dealloc(second, layout(LARGE));
            assert_eq!(a.spare.load(Ordering::Relaxed), third);
            // Larger than the spare: a new block, the spare freed.
            let big = a.alloc(layout(2 * LARGE));
            assert!(!big.is_null() && big != third);
            assert!(a.spare.load(Ordering::Relaxed).is_null());
            big.write_bytes(1, 2 * LARGE);
            a.dealloc(big, layout(2 * LARGE));
        }
    }

    #[test]
    fn small_zeroed_and_overaligned_blocks_never_touch_the_spare() {
        let a = Gateway::new();
        // SAFETY: as above.
        unsafe {
            let small = a.alloc(layout(LARGE - 1));
            a.dealloc(small, layout(LARGE - 1));
            assert!(a.spare.load(Ordering::Relaxed).is_null());
            let aligned = Layout::from_size_align(LARGE, 4096).expect("layout");
            let p = a.alloc(aligned);
            assert_eq!(p as usize % 4096, 0);
            a.dealloc(p, aligned);
            assert!(a.spare.load(Ordering::Relaxed).is_null());
            let big = a.alloc(layout(LARGE));
            big.write_bytes(9, LARGE);
            a.dealloc(big, layout(LARGE));
            let zeroed = a.alloc_zeroed(layout(LARGE));
            assert_ne!(zeroed, big, "a zeroed block is never the (dirty) spare");
            assert!(std::slice::from_raw_parts(zeroed, LARGE).iter().all(|b| *b == 0));
            a.dealloc(zeroed, layout(LARGE));
        }
    }
}
