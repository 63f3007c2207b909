/* perm_common.h - shared by perm_setup.c and perm_check.c
 * (dipc/tests/perms.rs). The test pastes it in front of each program.
 *
 * The objects: for each kind (shm, msg, sem) and each mode (0600, 0644),
 * one distributed object (IPC_DIPC) and one kernel object, created by root
 * with keys BASE + index, index = kind * 4 + (mode == 0644) * 2 + kernel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#include "dipc.h"

#define NOBJ 12
enum { SHM = 0, MSG = 1, SEM = 2 };

static __attribute__((unused)) int obj_index(int kind, int is644, int kernel)
{
    return kind * 4 + is644 * 2 + kernel;
}

static __attribute__((unused)) int obj_mode(int i)
{
    return (i / 2) % 2 ? 0644 : 0600;
}

static __attribute__((unused)) int obj_dipc(int i)
{
    return i % 2 ? 0 : IPC_DIPC;
}

static __attribute__((unused)) const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "0";
}

static int checked, failed;

static __attribute__((unused)) void same(const char *what, long rd, int ed, long rk, int ek)
{
    checked++;
    int dfail = rd == -1, kfail = rk == -1;
    if (dfail != kfail || (dfail && ed != ek)) {
        printf("MISMATCH %s: dipc %ld (%s), kernel %ld (%s)\n", what, rd,
               dfail ? ename(ed) : "ok", rk, kfail ? ename(ek) : "ok");
        failed++;
    } else {
        printf("same %s: %s\n", what, dfail ? ename(ed) : "ok");
    }
    fflush(stdout);
}

/* The same call on the distributed object (d) and the kernel one (k):
 * `call` is an expression using the variables `o` (the id or key) and `f`
 * (IPC_DIPC for the distributed call, 0 for the kernel one). */
#define SAME(what, dval, kval, call)                                         \
    do {                                                                     \
        long o;                                                              \
        int f = IPC_DIPC;                                                    \
        o = (dval);                                                          \
        errno = 0;                                                           \
        long rd_ = (long)(call);                                             \
        int ed_ = errno;                                                     \
        o = (kval);                                                          \
        f = 0;                                                               \
        errno = 0;                                                           \
        long rk_ = (long)(call);                                             \
        int ek_ = errno;                                                     \
        (void)o;                                                             \
        (void)f;                                                             \
        same(what, rd_, ed_, rk_, ek_);                                      \
    } while (0)

/* Expect an outcome too, not only agreement: `want` is 0 for success or
 * an errno. */
#define EXPECT(what, want, dval, kval, call)                                 \
    do {                                                                     \
        long o;                                                              \
        int f = IPC_DIPC;                                                    \
        o = (dval);                                                          \
        errno = 0;                                                           \
        long rd_ = (long)(call);                                             \
        int ed_ = errno;                                                     \
        o = (kval);                                                          \
        f = 0;                                                               \
        errno = 0;                                                           \
        long rk_ = (long)(call);                                             \
        int ek_ = errno;                                                     \
        (void)o;                                                             \
        (void)f;                                                             \
        same(what, rd_, ed_, rk_, ek_);                                      \
        int got_ = rk_ == -1 ? ek_ : 0;                                      \
        if (got_ != (want)) {                                                \
            printf("WRONG %s: kernel gave %s, the test expects %s\n", what,  \
                   ename(got_), ename(want));                                \
            failed++;                                                        \
        }                                                                    \
    } while (0)
