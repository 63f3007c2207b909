//! The few libc calls of libsysv that need `unsafe` outside the exported
//! functions and the raw system calls.

use std::ffi::c_int;

/// Set the calling thread's errno (the one place libsysv does).
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns a valid pointer to the calling
    // thread's errno for the thread's whole life.
    unsafe { *libc::__errno_location() = e };
}

unsafe extern "C" {
    // In glibc's libc_nonshared.a (it passes __dso_handle, so the
    // handlers go away if libsysv is dlclose'd); not in the libc crate.
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
}

/// Register fork handlers (they must not unwind).
pub(crate) fn register_atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) {
    // SAFETY: the handlers are plain functions that live as long as the
    // library and catch their own panics.
    let rc = unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc != 0 {
        eprintln!(
            "libsysv: pthread_atfork failed ({rc}): distributed segments will not work in forked children"
        );
    }
}

/// An all-zero `struct shmid_ds`.
pub(crate) fn zeroed_shmid_ds() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers (and integer padding): all-zero is
    // a valid value.
    unsafe { std::mem::zeroed() }
}
