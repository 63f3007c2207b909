//! Which calls are distributed.
//!
//! * `*get(key, .., flags)`: distributed if `flags` carries [`IPC_DIPC`],
//!   or `DIPC_KEYS` selects `key` (`all`, or a list of keys and ranges;
//!   `IPC_PRIVATE` only with the flag or `all`). The flag is stripped
//!   before the daemon or the kernel sees the flags.
//! * calls on an id: distributed if the id carries
//!   [`dipc_wire::DIPC_ID_BIT`]; such a call goes to the daemon first and,
//!   if the daemon does not know the id (`EINVAL`) or no daemon is
//!   reachable, to the kernel, so a kernel id that reached that range
//!   still works.
//! * `shmdt(addr)`: distributed if `addr` starts one of libsysv's
//!   attachments.
//!
//! The routing is the same for message queues and semaphore sets (later):
//! their `*get` use [`get_flags`], their id calls [`is_dipc_id`].

#![forbid(unsafe_code)]

use crate::IPC_DIPC;
use crate::config::KeySelection;

/// Where a call went: to the daemon with a result, or to the kernel with
/// what the kernel call needs.
#[cfg(feature = "c-abi")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routed<T, K = ()> {
    Dipc(T),
    Kernel(K),
}

/// For a `*get` call: `Some(flags without IPC_DIPC)` when distributed.
pub fn get_flags(key: i32, flags: i32, keys: &KeySelection) -> Option<i32> {
    if flags & IPC_DIPC != 0 || keys.selects(key) {
        Some(flags & !IPC_DIPC)
    } else {
        None
    }
}

/// Is `id` in the distributed range (goes to the daemon first)?
pub fn is_dipc_id(id: i32) -> bool {
    dipc_wire::is_dipc_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_or_key_selection() {
        let none = KeySelection::None;
        let list = KeySelection::parse("100-200").expect("parse");
        let all = KeySelection::All;
        let f = 0o1000 | 0o600;
        assert_eq!(get_flags(150, f, &none), None);
        assert_eq!(get_flags(150, f | IPC_DIPC, &none), Some(f));
        assert_eq!(get_flags(150, f, &list), Some(f));
        assert_eq!(get_flags(250, f, &list), None);
        // IPC_PRIVATE: with the flag or `all` only.
        assert_eq!(get_flags(0, f, &list), None);
        assert_eq!(get_flags(0, f | IPC_DIPC, &list), Some(f));
        assert_eq!(get_flags(0, f, &all), Some(f));
    }

    #[test]
    fn ids() {
        assert!(is_dipc_id(dipc_wire::DIPC_ID_BIT | 5));
        assert!(!is_dipc_id(5));
        assert!(!is_dipc_id(-1));
        assert!(!is_dipc_id(0));
    }

    #[test]
    fn ipc_dipc_is_a_free_bit() {
        // Not a mode bit, not IPC_CREAT/EXCL/NOWAIT, not SHM_HUGETLB,
        // SHM_NORESERVE or SHM_HUGE_* (bits 26..31), not an shmat or
        // msgsnd/msgrcv flag.
        let used = 0o777
            | libc::IPC_CREAT
            | libc::IPC_EXCL
            | libc::IPC_NOWAIT
            | libc::SHM_HUGETLB
            | libc::SHM_NORESERVE
            | libc::SHM_RDONLY
            | libc::SHM_RND
            | libc::SHM_REMAP
            | libc::SHM_EXEC
            | libc::MSG_NOERROR
            | libc::MSG_EXCEPT
            | libc::MSG_COPY
            | (0x3f << 26);
        assert_eq!(used & IPC_DIPC, 0);
        assert_eq!(IPC_DIPC.count_ones(), 1);
    }
}
