//! Keeping the server's resident memory near what it holds live.
//!
//! Two glibc knobs, nothing of sugang's own: the allocator's arenas are
//! capped at two (by default glibc opens up to eight per core, one per
//! thread that allocates at once, and the journal's and tokio's blocking
//! threads are many), and freed memory is handed back to the kernel every
//! few seconds with `malloc_trim`. Both matter after a load: passivated
//! actors and drained queues free their memory, and without them glibc
//! keeps most of it. On other platforms both are no-ops.
//!
//! Built with the `mimalloc` feature, `sugang` allocates with mimalloc
//! instead (see `main.rs`) and these knobs act on a glibc heap that holds
//! little. Measured with `FEATURES=mimalloc STUDENTS=200000 COURSES=2000
//! bench/million.sh` beside glibc's run of the same (2026-12-02, a busy
//! machine): VmRSS after the load and the idle 354.9 MB vs 318.7 MB, VmHWM
//! 495 MB vs 333 MB, 2,734 vs 1,914 enrollments/s; so glibc with these knobs
//! stays the default: what is resident after a load is mostly live, not
//! retained by the allocator.

use std::time::Duration;

/// How often freed memory is returned to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Caps glibc's arenas; call before any thread is started.
pub(crate) fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called from
    // main before any other thread exists, as glibc asks for M_ARENA_MAX.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Starts a thread that returns freed memory to the kernel periodically.
pub(crate) fn trim_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim takes the allocator's own locks and
                // is safe to call from any thread at any time.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no malloc-trim thread; freed memory stays with the allocator");
        }
    }
}
