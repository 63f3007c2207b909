/*
 * dipc.h - what a C program needs to make System V IPC distributed with dipc.
 *
 * Link with -lsysv (pkg-config --libs sysv) or run the program with
 * LD_PRELOAD=libsysv.so. libsysv exports shmget, shmat, shmdt, shmctl,
 * msgget, msgsnd, msgrcv, msgctl, semget, semop, semtimedop and semctl
 * with the prototypes of <sys/shm.h>, <sys/msg.h> and <sys/sem.h>; this
 * header only adds what is dipc's.
 * It is written by hand and checked against libsysv's Rust constants by
 * libsysv/tests/c_programs.rs.
 *
 * Routing (libsysv decides per call):
 *  - shmget/msgget/semget: distributed if flags carry IPC_DIPC, or the
 *    environment variable DIPC_KEYS selects key ("all", or a comma list of
 *    keys and inclusive ranges such as "1234,0x1000-0x10ff"; IPC_PRIVATE is
 *    distributed only with IPC_DIPC or "all"). IPC_DIPC is removed before the
 *    node daemon or the kernel sees the flags. Anything else goes to the
 *    kernel, unchanged.
 *  - shmat, shmctl on an id: a distributed id has DIPC_ID_BIT set. Such a
 *    call goes to the node daemon first and, if the daemon does not know the
 *    id (or no daemon is reachable), to the kernel: a kernel id that reached
 *    that range (after 32768 reuses of one slot) still works, unless a
 *    distributed object has the very same id.
 *  - shmdt(addr): distributed if addr is one of libsysv's attachments.
 *  - No node daemon at the first distributed call: the process acts locally
 *    through the kernel for its whole life, with one warning on stderr
 *    (DIPC's "short circuit"); with DIPC_FALLBACK=error such calls fail
 *    with ECONNREFUSED instead.
 *
 * Distributed shared memory differs from the kernel's in these points:
 *  - shmctl on a distributed id supports IPC_STAT, IPC_SET and IPC_RMID;
 *    other commands give EINVAL (IPC_INFO, SHM_INFO, SHM_STAT and
 *    SHM_STAT_ANY are the kernel's, about local segments).
 *  - A SHM_RDONLY attachment is mapped PROT_READ, but mprotect() can make
 *    it writable (userfaultfd cannot watch a mapping of a read-only file);
 *    writing to it is undefined.
 *  - shmat(SHM_REMAP) over part of another distributed attachment detaches
 *    the whole of that attachment.
 *  - fork() keeps attachments working in the child (libsysv re-registers
 *    them with the daemon before fork returns); an attachment that cannot be
 *    re-registered raises SIGBUS when touched, never shows stale data.
 *  - If the node daemon dies (or the connection to it breaks), every
 *    attachment made through it raises SIGBUS when touched, including
 *    accesses already blocked waiting for a page: never zeros, never a hang.
 *    libsysv learns of the daemon's death from signal SIGRTMAX-1, which it
 *    asks the kernel to send when the daemon closes a second, silent
 *    connection of the process (and for nothing else, ever); a
 *    program that installs its own handler for SIGRTMAX-1 before its first
 *    distributed call keeps it, and loses this protection (one warning).
 *  - Attaching needs userfaultfd: root, or sysctl vm.unprivileged_userfaultfd=1,
 *    or read-write access to /dev/userfaultfd; otherwise shmat fails with
 *    EPERM and a message on stderr.
 */
#ifndef DIPC_H
#define DIPC_H

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/msg.h>
#include <sys/sem.h>

/*
 * Flag for shmget, msgget and semget: make the object distributed.
 * Bit 20 (0x00100000): no Linux *get, shmat or msgsnd/msgrcv flag uses it.
 * DIPC's historic value, octal 010000, is SHM_NORESERVE for shmget, and
 * bits 26-31 carry the SHM_HUGE_* page size, so neither could be used.
 */
#define IPC_DIPC 0x00100000

/* Every distributed id has this bit (bit 30) set; ids stay positive. */
#define DIPC_ID_BIT 0x40000000

/* Is id in the distributed range (routed to the node daemon first)? */
static inline int dipc_is_distributed_id(int id)
{
    return id > 0 && (id & DIPC_ID_BIT) != 0;
}

/* Environment variables read by libsysv (once, at the first call). */
/* Path of the node daemon's socket (default DIPC_DEFAULT_SOCKET). */
#define DIPC_ENV_SOCKET "DIPC_SOCKET"
/* Keys distributed without IPC_DIPC: "all" or "1234,0x1000-0x10ff". */
#define DIPC_ENV_KEYS "DIPC_KEYS"
/* "error": fail with ECONNREFUSED when no daemon is reachable. */
#define DIPC_ENV_FALLBACK "DIPC_FALLBACK"
/* Coherence unit of segments created by this process: bytes, a power of
 * two >= 4096 (otherwise a distributed shmget fails with EINVAL). */
#define DIPC_ENV_PAGE_SIZE "DIPC_PAGE_SIZE"
/* "page" (default) or "segment": how segments created here move.
 * Segment mode moves the whole segment as one unit (at most 1 GiB;
 * bigger ones fail with EINVAL). */
#define DIPC_ENV_SHM_MODE "DIPC_SHM_MODE"
/* Hold-time quantum of segments created here, in microseconds, 0 to
 * DIPC_MAX_QUANTUM_US (0: none): a node that received a unit for an access
 * keeps it at least this long before it gives it up; requests meanwhile
 * wait in order. Against two writers moving one page back and forth. */
#define DIPC_ENV_QUANTUM_US "DIPC_QUANTUM_US"
#define DIPC_MAX_QUANTUM_US 1000000
/* Sequential prefetch of segments created here (page mode): the largest
 * window of following units fetched ahead of consecutive read faults,
 * 0 to DIPC_MAX_PREFETCH (0: off). */
#define DIPC_ENV_PREFETCH "DIPC_PREFETCH"
#define DIPC_MAX_PREFETCH 1024
/* Unset, the four settings above come from the node's configuration (per
 * key, else its default: 4096-byte units, page mode, no quantum, a window
 * of 8). A bad value makes a distributed shmget fail with EINVAL. They
 * apply when the shmget creates the segment and are then fixed for its
 * life on every node; `dipc ipcs -m` shows them. */
/* Bound on every wait for the daemon, in milliseconds (default 30000);
 * a call that times out fails with ETIMEDOUT. */
#define DIPC_ENV_TIMEOUT_MS "DIPC_TIMEOUT_MS"

#define DIPC_DEFAULT_SOCKET "/run/dipc/node.sock"

#endif /* DIPC_H */
