//! The memory an idle connection holds: what a client thread gives back while it waits, and
//! glibc's per-thread caches, limited at start.
//!
//! Measured with 3,000 sessions held at once (`./bench --mode idle`, resident memory per
//! connection above the server's baseline): 80 KiB with OpenSSL's read buffer held through
//! each wait, 66 KiB without it (the session waits on the socket), 62 KiB with the unused
//! stack given back, 42 KiB with glibc's thread caches limited to small chunks.

use std::cell::Cell;

/// What [`release_unused_stack`] leaves below the frame it is called from: room for the
/// system call it makes.
const STACK_MARGIN: usize = 1024;

thread_local! {
    /// On a client thread, the lowest address of its stack (above the guard page); 0 on
    /// other threads.
    static STACK_BOTTOM: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as a client thread, whose unused stack
/// [`release_unused_stack`] may give back.
pub(super) fn note_client_thread() {
    STACK_BOTTOM.set(stack_bottom().unwrap_or(0));
}

/// Gives the pages of this client thread's stack below the caller's frame back to the
/// system. A handshake touches about 24 KiB of stack that a connection waiting for its next
/// command does not use; without this, each of ten thousand idle connections would keep it.
/// The pages read as zero when next touched. Does nothing on other threads.
#[inline(never)]
pub(super) fn release_unused_stack() {
    let bottom = STACK_BOTTOM.get();
    // A local of this frame (not `&0u8`, which would be a constant's static address).
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let page = page_size();
    let end = here.saturating_sub(STACK_MARGIN) & !(page - 1);
    if bottom != 0 && end > bottom {
        // SAFETY: [bottom, end) lies in this thread's own stack, below the current frame and
        // a margin for the call itself: the stack grows down, so nothing live is there.
        // MADV_DONTNEED on private anonymous memory makes it read as zero when next touched.
        unsafe {
            libc::madvise(
                bottom as *mut libc::c_void,
                end - bottom,
                libc::MADV_DONTNEED,
            )
        };
    }
}

/// The lowest address of the calling thread's stack, if the system tells it.
fn stack_bottom() -> Option<usize> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read, and destroyed
    // once read; the out-pointers are valid locals.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let (mut addr, mut size) = (std::ptr::null_mut(), 0);
        let found = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        found.then_some(addr as usize)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// glibc's setting that keeps only freed chunks of up to 64 bytes in each thread's cache
/// (`tcache`). By default a thread keeps up to seven freed chunks of every size up to
/// 1 KiB; after a handshake that is about 20 KiB per thread, held by every idle connection's
/// thread. Limited, an idle connection holds 42 KiB instead of 62, for about 2% more CPU per
/// handshake (docs/BENCHMARKS.md).
const MALLOC_TUNABLES: &str = "glibc.malloc.tcache_max=64";

/// Runs the program again (the same executable, arguments and process) with
/// [`MALLOC_TUNABLES`] in its environment, which glibc reads only when a program starts.
/// Returns only if that is not done: `GLIBC_TUNABLES` is already set (the operator's own
/// choice stands; set it empty to keep glibc's defaults), or the program cannot be run
/// again (then it goes on with glibc's defaults).
pub(super) fn limit_thread_caches() {
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new("/proc/self/exe");
    if let Some(name) = args.next() {
        again.arg0(name);
    }
    let err = again
        .args(args)
        .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
        .exec();
    eprintln!("warning: cannot limit glibc's thread caches ({err}); going on without");
}
