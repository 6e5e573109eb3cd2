//! libnftables (Debian's `libnftables1`, which `nft` itself is built on), loaded at run time: one
//! nft context kept open per namespace, so that a transaction costs neither a process nor a
//! netlink socket's teardown. Closing an nftables socket right after a transaction that deleted
//! anything waits for an RCU grace period in the kernel (nf_tables flushes its destroy work on
//! the socket's release), and `nft -f` closes two: about 20 ms of every `nft -f` call on this
//! kernel, with the CPU idle. Without the library the caller falls back to `nft -f`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::OnceLock;

type NewFn = unsafe extern "C" fn(u32) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBufFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The five entry points we use (libnftables.h), resolved once.
#[derive(Debug)]
struct Api {
    new: NewFn,
    free: FreeFn,
    buffer_output: CtxFn,
    buffer_error: CtxFn,
    get_error: GetBufFn,
    run: RunFn,
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature
        // libnftables.h declares for it (stable since libnftables 0.9).
        unsafe {
            let lib = libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                return None;
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(lib, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            Some(Api {
                new: std::mem::transmute::<*mut c_void, NewFn>(sym(c"nft_ctx_new")?),
                free: std::mem::transmute::<*mut c_void, FreeFn>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_buffer_output")?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxFn>(sym(c"nft_ctx_buffer_error")?),
                get_error: std::mem::transmute::<*mut c_void, GetBufFn>(sym(c"nft_ctx_get_error_buffer")?),
                run: std::mem::transmute::<*mut c_void, RunFn>(sym(c"nft_run_cmd_from_buffer")?),
            })
        }
    })
    .as_ref()
}

/// One libnftables context. Its netlink socket belongs to the network namespace of the thread
/// that opened it, whatever thread uses it later.
#[derive(Debug)]
pub struct Session {
    ctx: NonNull<c_void>,
    api: &'static Api,
}

// SAFETY: a context is plain heap state plus a socket, tied to no thread; `&mut self` on every
// use keeps it to one thread at a time.
unsafe impl Send for Session {}

impl Session {
    /// A context in the calling thread's namespace; `None` without the library.
    pub fn open() -> Option<Session> {
        let api = api()?;
        // SAFETY: NFT_CTX_DEFAULT (0) opens the context with its netlink socket; a null result
        // is checked. Output and errors go to buffers instead of the agent's stdout/stderr.
        unsafe {
            let ctx = NonNull::new((api.new)(0))?;
            (api.buffer_output)(ctx.as_ptr());
            (api.buffer_error)(ctx.as_ptr());
            Some(Session { ctx, api })
        }
    }

    /// Runs an nft script as one transaction; the error is nft's message.
    pub fn run(&mut self, script: &str) -> Result<(), String> {
        let text = CString::new(script).map_err(|_| "the script holds a NUL byte".to_owned())?;
        // SAFETY: the context is live (freed only on drop) and the text NUL-terminated; the error
        // buffer is a NUL-terminated string owned by the context, copied before the next call.
        unsafe {
            let rc = (self.api.run)(self.ctx.as_ptr(), text.as_ptr());
            let err = (self.api.get_error)(self.ctx.as_ptr());
            let message = if err.is_null() {
                String::new()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            if rc == 0 { Ok(()) } else { Err(message) }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the context was returned by nft_ctx_new and is freed once.
        unsafe { (self.api.free)(self.ctx.as_ptr()) }
    }
}
