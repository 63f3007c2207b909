/* bad_args.c - libsysv given bad pointers, sizes, ids, flags and commands
 * (dipc/tests/badinput.rs).
 *
 * Each check makes the same bad call twice: on a distributed object
 * (IPC_DIPC, served by the node daemon) and on a kernel object of the same
 * kind, and expects the same outcome: both fail with the same errno, or
 * both succeed. A bad pointer that the kernel answers with EFAULT is tried
 * in a child process, so a crash is reported instead of ending the run.
 * With BAD_POINTERS=1 the non-NULL bad pointers are tried as well.
 * Prints one line per check, then "checked N", and exits 1 on a mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dipc.h"

static int checked, failed;

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

/* Hidden from the compiler, so it cannot warn about the NULLs we mean. */
static void *volatile null_ptr = NULL;
static void *volatile bad_ptr = (void *)8;

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "0";
}

static void same(const char *what, long rd, int ed, long rk, int ek)
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

/* Run a call on the distributed and the kernel object and compare. */
#define SAME(what, dcall, kcall)                                             \
    do {                                                                     \
        errno = 0;                                                           \
        long rd_ = (long)(dcall);                                            \
        int ed_ = errno;                                                     \
        errno = 0;                                                           \
        long rk_ = (long)(kcall);                                            \
        int ek_ = errno;                                                     \
        same(what, rd_, ed_, rk_, ek_);                                      \
    } while (0)

/* The outcome of `call` run in a child: -1 and errno through the exit
 * status, or a crash reported as -2 with the signal as "errno". */
#define IN_CHILD(res, err, call)                                             \
    do {                                                                     \
        fflush(stdout);                                                      \
        pid_t p_ = fork();                                                   \
        if (p_ == 0) {                                                       \
            errno = 0;                                                       \
            long r_ = (long)(call);                                          \
            _exit(r_ == -1 ? (errno & 0x7f) : 0x80);                         \
        }                                                                    \
        int st_ = 0;                                                         \
        waitpid(p_, &st_, 0);                                                \
        if (WIFSIGNALED(st_)) {                                              \
            res = -2;                                                        \
            err = WTERMSIG(st_);                                             \
        } else if (WEXITSTATUS(st_) == 0x80) {                               \
            res = 0;                                                         \
            err = 0;                                                         \
        } else {                                                             \
            res = -1;                                                        \
            err = WEXITSTATUS(st_);                                          \
        }                                                                    \
    } while (0)

#define SAME_IN_CHILD(what, dcall, kcall)                                    \
    do {                                                                     \
        long rd_, rk_;                                                       \
        int ed_, ek_;                                                        \
        IN_CHILD(rd_, ed_, dcall);                                           \
        IN_CHILD(rk_, ek_, kcall);                                           \
        if (rd_ == -2 || rk_ == -2) {                                        \
            checked++;                                                       \
            failed++;                                                        \
            printf("MISMATCH %s: crashed (dipc %s, kernel %s)\n", what,      \
                   rd_ == -2 ? strsignal(ed_) : "no crash",                  \
                   rk_ == -2 ? strsignal(ek_) : "no crash");                 \
        } else {                                                             \
            same(what, rd_, ed_, rk_, ek_);                                  \
        }                                                                    \
    } while (0)

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(60);
    /* Non-NULL pointers to unmapped memory (BAD_POINTERS=1): the kernel
     * answers EFAULT; a run of their own (each forks). */
    int bad_pointers = getenv("BAD_POINTERS") != NULL;
    struct shmid_ds ds;
    memset(&ds, 0, sizeof ds);

    /* ---- shared memory ---- */
    int ds_id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600 | IPC_DIPC);
    int ks_id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    if (ds_id < 0 || ks_id < 0 || !dipc_is_distributed_id(ds_id)) {
        printf("FAIL setup shmget: dipc %d kernel %d (%s)\n", ds_id, ks_id, ename(errno));
        return 1;
    }
    SAME("shmctl IPC_STAT NULL", shmctl(ds_id, IPC_STAT, null_ptr),
         shmctl(ks_id, IPC_STAT, null_ptr));
    SAME("shmctl IPC_SET NULL", shmctl(ds_id, IPC_SET, null_ptr),
         shmctl(ks_id, IPC_SET, null_ptr));
    if (bad_pointers) {
        SAME_IN_CHILD("shmctl IPC_STAT bad pointer", shmctl(ds_id, IPC_STAT, bad_ptr),
                      shmctl(ks_id, IPC_STAT, bad_ptr));
        SAME_IN_CHILD("shmctl IPC_SET bad pointer", shmctl(ds_id, IPC_SET, bad_ptr),
                      shmctl(ks_id, IPC_SET, bad_ptr));
    }
    SAME("shmctl unknown cmd", shmctl(ds_id, 4242, &ds), shmctl(ks_id, 4242, &ds));
    SAME("shmctl cmd -1", shmctl(ds_id, -1, &ds), shmctl(ks_id, -1, &ds));
    SAME("shmctl missing id", shmctl(DIPC_ID_BIT | 0xfffff, IPC_STAT, &ds),
         shmctl(0x3ffffff0, IPC_STAT, &ds));
    SAME("shmctl negative id", shmctl(-7, IPC_STAT, &ds), shmctl(-7, IPC_STAT, &ds));
    SAME("shmat negative id", shmat(-7, NULL, 0), shmat(-7, NULL, 0));
    SAME("shmat missing id", shmat(DIPC_ID_BIT | 0xfffff, NULL, 0),
         shmat(0x3ffffff0, NULL, 0));
    SAME("shmat unaligned address", shmat(ds_id, (void *)1, 0), shmat(ks_id, (void *)1, 0));
    SAME("shmdt NULL", shmdt(null_ptr), shmdt(null_ptr));
    SAME("shmdt unmapped address", shmdt((void *)4096), shmdt((void *)4096));
    SAME("shmget size 0", shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600 | IPC_DIPC),
         shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600));
    SAME("shmget size SIZE_MAX", shmget(IPC_PRIVATE, SIZE_MAX, IPC_CREAT | 0600 | IPC_DIPC),
         shmget(IPC_PRIVATE, SIZE_MAX, IPC_CREAT | 0600));
    /* Kernel keys are machine-wide and tests run this program at once:
     * each run takes keys of its own pid. */
    key_t kmissing = (key_t)(0x5b000000 | (getpid() & 0xffffff));
    key_t kexisting = (key_t)(0x5c000000 | (getpid() & 0xffffff));
    SAME("shmget missing key", shmget(0x0bad0001, 4096, 0600 | IPC_DIPC),
         shmget(kmissing, 4096, 0600));
    {
        int d = shmget(0x0bad0003, 4096, IPC_CREAT | 0600 | IPC_DIPC);
        int k = shmget(kexisting, 4096, IPC_CREAT | 0600);
        SAME("shmget larger than existing", shmget(0x0bad0003, 8192, 0600 | IPC_DIPC),
             shmget(kexisting, 8192, 0600));
        SAME("shmget IPC_EXCL existing",
             shmget(0x0bad0003, 4096, IPC_CREAT | IPC_EXCL | 0600 | IPC_DIPC),
             shmget(kexisting, 4096, IPC_CREAT | IPC_EXCL | 0600));
        shmctl(d, IPC_RMID, NULL);
        shmctl(k, IPC_RMID, NULL);
    }
    SAME("shmctl IPC_RMID", shmctl(ds_id, IPC_RMID, NULL), shmctl(ks_id, IPC_RMID, NULL));
    SAME("shmctl IPC_RMID again", shmctl(ds_id, IPC_RMID, NULL),
         shmctl(ks_id, IPC_RMID, NULL));

    /* ---- message queues ---- */
    int dq = msgget(IPC_PRIVATE, IPC_CREAT | 0600 | IPC_DIPC);
    int kq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (dq < 0 || kq < 0 || !dipc_is_distributed_id(dq)) {
        printf("FAIL setup msgget: dipc %d kernel %d (%s)\n", dq, kq, ename(errno));
        return 1;
    }
    struct {
        long mtype;
        char text[16];
    } m = {1, "hi"};
    struct msqid_ds mds;
    SAME_IN_CHILD("msgsnd NULL buffer", msgsnd(dq, null_ptr, 4, IPC_NOWAIT),
                  msgsnd(kq, null_ptr, 4, IPC_NOWAIT));
    SAME("msgsnd size too big", msgsnd(dq, &m, 1 << 20, IPC_NOWAIT),
         msgsnd(kq, &m, 1 << 20, IPC_NOWAIT));
    SAME("msgsnd size -1", msgsnd(dq, &m, (size_t)-1, IPC_NOWAIT),
         msgsnd(kq, &m, (size_t)-1, IPC_NOWAIT));
    m.mtype = 0;
    SAME("msgsnd mtype 0", msgsnd(dq, &m, 4, IPC_NOWAIT), msgsnd(kq, &m, 4, IPC_NOWAIT));
    m.mtype = 1;
    SAME("msgsnd ok", msgsnd(dq, &m, 4, IPC_NOWAIT), msgsnd(kq, &m, 4, IPC_NOWAIT));
    SAME("msgrcv too small", msgrcv(dq, &m, 1, 0, IPC_NOWAIT), msgrcv(kq, &m, 1, 0, IPC_NOWAIT));
    /* The kernel drops a message it cannot copy out (EFAULT); so must we. */
    SAME_IN_CHILD("msgrcv NULL buffer", msgrcv(dq, null_ptr, 16, 0, IPC_NOWAIT),
                  msgrcv(kq, null_ptr, 16, 0, IPC_NOWAIT));
    SAME("msgrcv size -1", msgrcv(dq, &m, (size_t)-1, 0, IPC_NOWAIT),
         msgrcv(kq, &m, (size_t)-1, 0, IPC_NOWAIT));
    SAME("msgctl IPC_STAT NULL", msgctl(dq, IPC_STAT, null_ptr), msgctl(kq, IPC_STAT, null_ptr));
    if (bad_pointers)
        SAME_IN_CHILD("msgctl IPC_STAT bad pointer", msgctl(dq, IPC_STAT, bad_ptr),
                      msgctl(kq, IPC_STAT, bad_ptr));
    SAME("msgctl unknown cmd", msgctl(dq, 4242, &mds), msgctl(kq, 4242, &mds));
    SAME("msgsnd negative id", msgsnd(-3, &m, 4, IPC_NOWAIT), msgsnd(-3, &m, 4, IPC_NOWAIT));
    SAME("msgctl IPC_RMID", msgctl(dq, IPC_RMID, NULL), msgctl(kq, IPC_RMID, NULL));
    SAME("msgrcv after IPC_RMID", msgrcv(dq, &m, 16, 0, IPC_NOWAIT),
         msgrcv(kq, &m, 16, 0, IPC_NOWAIT));
    SAME("msgsnd after IPC_RMID", msgsnd(dq, &m, 4, IPC_NOWAIT), msgsnd(kq, &m, 4, IPC_NOWAIT));

    /* ---- semaphore sets ---- */
    SAME("semget nsems -1", semget(IPC_PRIVATE, -1, IPC_CREAT | 0600 | IPC_DIPC),
         semget(IPC_PRIVATE, -1, IPC_CREAT | 0600));
    SAME("semget nsems 0 creating", semget(IPC_PRIVATE, 0, IPC_CREAT | 0600 | IPC_DIPC),
         semget(IPC_PRIVATE, 0, IPC_CREAT | 0600));
    int dset = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600 | IPC_DIPC);
    int kset = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
    if (dset < 0 || kset < 0 || !dipc_is_distributed_id(dset)) {
        printf("FAIL setup semget: dipc %d kernel %d (%s)\n", dset, kset, ename(errno));
        return 1;
    }
    struct sembuf sb = {0, 1, 0};
    struct sembuf many[600];
    memset(many, 0, sizeof many);
    SAME_IN_CHILD("semop NULL sops", semop(dset, null_ptr, 1), semop(kset, null_ptr, 1));
    SAME("semop nsops 0", semop(dset, &sb, 0), semop(kset, &sb, 0));
    SAME("semop nsops 600", semop(dset, many, 600), semop(kset, many, 600));
    sb.sem_num = 9;
    SAME("semop sem_num out of range", semop(dset, &sb, 1), semop(kset, &sb, 1));
    sb.sem_num = 0;
    SAME("semctl GETVAL semnum 9", semctl(dset, 9, GETVAL), semctl(kset, 9, GETVAL));
    SAME("semctl GETVAL semnum -1", semctl(dset, -1, GETVAL), semctl(kset, -1, GETVAL));
    union semun neg = {.val = -5}, big = {.val = 70000};
    SAME("semctl SETVAL -5", semctl(dset, 0, SETVAL, neg), semctl(kset, 0, SETVAL, neg));
    SAME("semctl SETVAL 70000", semctl(dset, 0, SETVAL, big), semctl(kset, 0, SETVAL, big));
    SAME("semctl unknown cmd", semctl(dset, 0, 4242), semctl(kset, 0, 4242));
    union semun null_arg = {.buf = null_ptr}, bad_arg = {.array = bad_ptr};
    SAME("semctl IPC_STAT NULL", semctl(dset, 0, IPC_STAT, null_arg),
         semctl(kset, 0, IPC_STAT, null_arg));
    if (bad_pointers)
        SAME_IN_CHILD("semctl GETALL bad pointer", semctl(dset, 0, GETALL, bad_arg),
                      semctl(kset, 0, GETALL, bad_arg));
    SAME("semctl missing id", semctl(DIPC_ID_BIT | 0xfffff, 0, GETVAL),
         semctl(0x3ffffff0, 0, GETVAL));
    SAME("semctl IPC_RMID", semctl(dset, 0, IPC_RMID), semctl(kset, 0, IPC_RMID));
    SAME("semop after IPC_RMID", semop(dset, &sb, 1), semop(kset, &sb, 1));

    printf("checked %d, %d mismatches\n", checked, failed);
    return failed ? 1 : 0;
}
