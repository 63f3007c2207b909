/*
 * dipc_example.h - shared helpers of the dipc example programs.
 *
 * The examples are ordinary System V IPC programs. Built normally they mark
 * their objects distributed with IPC_DIPC (from <dipc.h>) and link -lsysv;
 * built with -DNO_DIPC they are plain programs that never heard of dipc and
 * become distributed only under LD_PRELOAD=libsysv.so with DIPC_KEYS. Either
 * way they also run on one machine without any daemon (kernel IPC).
 *
 * Every process learns its rank and the number of processes from the
 * command line, or from DIPC_RANK and DIPC_NODES (set by `dipc run`).
 */
#ifndef DIPC_EXAMPLE_H
#define DIPC_EXAMPLE_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#ifdef NO_DIPC
#define EX_DIPC 0
#else
#include <dipc.h>
#define EX_DIPC IPC_DIPC
#endif

/* Bound on a whole run: a lost peer must not hang a test forever. */
#define EX_ALARM_S 150

#define EX_FAIL(...)                                                         \
    do {                                                                     \
        int e_ = errno;                                                      \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, " (%s)\n", strerror(e_));                            \
        exit(1);                                                             \
    } while (0)

/* glibc leaves union semun to the program. */
union ex_semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct ex_args {
    int rank;     /* 0 .. nprocs-1 */
    int nprocs;   /* processes taking part */
    key_t key;    /* first key; each example uses a few keys from here */
};

static __attribute__((unused)) long ex_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (s == NULL || errno != 0 || *end != '\0' || end == s)
        EX_FAIL("bad %s: %s", what, s ? s : "(missing)");
    return v;
}

/* usage: prog [RANK NPROCS] [KEY] ...; RANK/NPROCS default to DIPC_RANK
 * and DIPC_NODES. Returns the index of the first argument after them. */
static __attribute__((unused)) int ex_parse(int argc, char **argv, struct ex_args *a, key_t default_key)
{
    int i = 1;
    const char *r = getenv("DIPC_RANK"), *n = getenv("DIPC_NODES");
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(EX_ALARM_S);
    if (r != NULL && n != NULL) {
        a->rank = (int)ex_num(r, "DIPC_RANK");
        a->nprocs = (int)ex_num(n, "DIPC_NODES");
    } else if (argc >= 3) {
        a->rank = (int)ex_num(argv[1], "rank");
        a->nprocs = (int)ex_num(argv[2], "nprocs");
        i = 3;
    } else {
        fprintf(stderr, "usage: %s RANK NPROCS [KEY ...] (or set DIPC_RANK, DIPC_NODES)\n",
                argv[0]);
        exit(2);
    }
    if (a->nprocs < 1 || a->rank < 0 || a->rank >= a->nprocs)
        EX_FAIL("rank %d of %d", a->rank, a->nprocs);
    a->key = default_key;
    if (argc > i)
        a->key = (key_t)ex_num(argv[i++], "key");
    return i;
}

/* Wait until rank 0 created the object: *get without IPC_CREAT, retried. */
static __attribute__((unused)) int ex_wait_shm(key_t key, size_t size)
{
    for (int t = 0; t < 3000; t++) {
        int id = shmget(key, size, EX_DIPC);
        if (id >= 0)
            return id;
        if (errno != ENOENT)
            EX_FAIL("shmget(%#x)", (unsigned)key);
        usleep(10000);
    }
    EX_FAIL("segment %#x never appeared", (unsigned)key);
}

static __attribute__((unused)) int ex_wait_sem(key_t key, int nsems)
{
    for (int t = 0; t < 3000; t++) {
        int id = semget(key, nsems, EX_DIPC);
        if (id >= 0)
            return id;
        if (errno != ENOENT)
            EX_FAIL("semget(%#x)", (unsigned)key);
        usleep(10000);
    }
    EX_FAIL("semaphore set %#x never appeared", (unsigned)key);
}

/*
 * A reusable barrier of nprocs processes from a set of three semaphores.
 * Barrier number g uses semaphore g%3: arriving takes one from it and, in
 * the same atomic semop, adds one to semaphore (g+1)%3, which thereby
 * reaches nprocs exactly when everybody arrived at g; then each waits for
 * semaphore g%3 to reach zero. Nobody touches semaphore g%3 again before
 * every process has left barrier g, so no reset is ever needed. The creator
 * sets the values to {nprocs, 0, 0}; a process arriving earlier blocks
 * until then.
 */
struct ex_barrier {
    int semid;
    unsigned gen;
};

static __attribute__((unused)) void ex_barrier_wait(struct ex_barrier *b)
{
    unsigned short s = (unsigned short)(b->gen % 3), n = (unsigned short)((b->gen + 1) % 3);
    struct sembuf arrive[2] = {{s, -1, 0}, {n, 1, 0}};
    struct sembuf zero = {s, 0, 0};
    while (semop(b->semid, arrive, 2) < 0)
        if (errno != EINTR)
            EX_FAIL("barrier %u: arrive", b->gen);
    while (semop(b->semid, &zero, 1) < 0)
        if (errno != EINTR)
            EX_FAIL("barrier %u: wait", b->gen);
    b->gen++;
}

/* The last barrier of a run: rank 0 waits for everybody, the others only
 * arrive and go, so rank 0 may remove the objects as soon as it passes. */
static __attribute__((unused)) void ex_barrier_last(struct ex_barrier *b, const struct ex_args *a)
{
    unsigned short s = (unsigned short)(b->gen % 3), n = (unsigned short)((b->gen + 1) % 3);
    struct sembuf arrive[2] = {{s, -1, 0}, {n, 1, 0}};
    struct sembuf zero = {s, 0, 0};
    while (semop(b->semid, arrive, 2) < 0)
        if (errno != EINTR)
            EX_FAIL("last barrier: arrive");
    while (a->rank == 0 && semop(b->semid, &zero, 1) < 0)
        if (errno != EINTR)
            EX_FAIL("last barrier: wait");
}

/* Rank 0 creates the barrier's set (a leftover of an earlier run is
 * removed first); the others wait for it to appear. */
static __attribute__((unused)) struct ex_barrier ex_barrier_open(key_t key, const struct ex_args *a)
{
    struct ex_barrier b = {-1, 0};
    if (a->rank == 0) {
        b.semid = semget(key, 3, IPC_CREAT | IPC_EXCL | EX_DIPC | 0600);
        if (b.semid < 0 && errno == EEXIST) {
            int old = semget(key, 3, EX_DIPC);
            if (old >= 0)
                semctl(old, 0, IPC_RMID);
            b.semid = semget(key, 3, IPC_CREAT | IPC_EXCL | EX_DIPC | 0600);
        }
        if (b.semid < 0)
            EX_FAIL("semget(%#x, 3, IPC_CREAT)", (unsigned)key);
        unsigned short init[3] = {(unsigned short)a->nprocs, 0, 0};
        union ex_semun arg = {.array = init};
        if (semctl(b.semid, 0, SETALL, arg) < 0)
            EX_FAIL("semctl(SETALL)");
    } else {
        b.semid = ex_wait_sem(key, 3);
    }
    return b;
}

/* Rank 0 creates a segment of size bytes (replacing a leftover). */
static __attribute__((unused)) int ex_create_shm(key_t key, size_t size)
{
    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | EX_DIPC | 0600);
    if (id < 0 && errno == EEXIST) {
        int old = shmget(key, 0, EX_DIPC);
        if (old >= 0)
            shmctl(old, IPC_RMID, NULL);
        id = shmget(key, size, IPC_CREAT | IPC_EXCL | EX_DIPC | 0600);
    }
    if (id < 0)
        EX_FAIL("shmget(%#x, %zu, IPC_CREAT)", (unsigned)key, size);
    return id;
}

/* FNV-1a over bytes: a short fingerprint of a result to compare runs. */
static __attribute__((unused)) uint64_t ex_fnv(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

#endif /* DIPC_EXAMPLE_H */
