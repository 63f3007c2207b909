/* chaos_worker.c - the worker of dipc/tests/chaos.rs and soak.rs.
 *
 * Ordinary System V IPC code plus IPC_DIPC. Every result is checked
 * exactly against a model the test can verify from the outside:
 *
 *   mkshm KEY NPROCS          shmget(IPC_CREAT|IPC_EXCL) of the layout below
 *                             and touch it: "id N"
 *   mkmsg KEY                 msgget(IPC_CREAT|IPC_EXCL): "id N"
 *   mksem KEY                 semget(IPC_CREAT|IPC_EXCL) of 3 semaphores:
 *                             0 = mutex (1), 1 = end barrier (0), 2 = sender
 *                             activity (0): "id N"
 *   work SHM MSG SEM RANK NSTABLE END
 *                             until the wall-clock second END, random
 *                             operations (below), printing "progress OPS"
 *                             once a second; then the end protocol
 *   check SHM NPROCS          "counter C", "mine P N" and "slot P N" lines
 *   probe SHM SIZE MSG SEM    look up and attach, say "ready", then run the
 *                             commands read from stdin, one answer line each:
 *                             "msg" (send and take back one message), "sem"
 *                             (semaphore 2 up and down): "ok" or "errno E";
 *                             "touch P" (read page P): "read V"; "write P":
 *                             "wrote V". A page that cannot be had is
 *                             SIGBUS, as for any distributed segment.
 *
 * Layout of the segment (u64 words): [0] the counter; [8 + p] mine[p], the
 * increments process p made under the mutex; slot p at word 512 * (1 + p)
 * (one 4 KiB page per process): its write sequence number.
 *
 * Ranks below NSTABLE are "stable" (their node is never killed): they
 * write their own slot with increasing numbers and read the others' (each
 * must never go backwards), increment the counter under the mutex
 * (SEM_UNDO) together with mine[rank], send messages to random stable
 * ranks (type = receiver + 1, body = sender and that pair's sequence) and
 * receive their own type (each sender's numbers must be exactly 0, 1, 2,
 * ...: no loss inside the stream, no duplicate). Ranks from NSTABLE on run
 * on the node the chaos kills: they only send messages and move semaphore
 * 2 up and down, and never touch the segment (its pages must never live on
 * a node that dies).
 *
 * End protocol of a stable rank: print "sent R N" per receiver, "incs N",
 * "wseq N", "ops N"; add 1 to semaphore 1 and wait until it reaches
 * NSTABLE (every stable sender is done); drain its type with IPC_NOWAIT;
 * print "recv S N" per sender and "done". A sender-only rank prints
 * "sent R N" lines, "ops N" and "done". The test compares "sent" of every
 * stable sender with the "recv" of its receiver: equal, exactly.
 *
 * Any failed call is a FAIL line and exit 1. alarm() bounds the program.
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
#include <time.h>
#include <unistd.h>

#include "dipc.h"

#define MAX_RANKS 1024
#define PAGE_WORDS 512
#define MINE_BASE 8
#define DRAIN_SETTLE_US 300000

#define FAIL(...)                                                            \
    do {                                                                     \
        int e_ = errno;                                                      \
        printf("FAIL line %d: ", __LINE__);                                  \
        printf(__VA_ARGS__);                                                 \
        printf(" (errno %s)\n", e_ ? strerrorname_np(e_) : "0");            \
        fflush(stdout);                                                      \
        exit(1);                                                             \
    } while (0)

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond))                                                         \
            FAIL("%s", #cond);                                               \
    } while (0)

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct body {
    long mtype;
    int64_t sender;
    int64_t seq;
};

static long long arg_num(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno != 0 || *end != '\0' || end == s)
        FAIL("bad number %s", s);
    return v;
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static size_t shm_size(long nprocs)
{
    return (size_t)(1 + nprocs) * PAGE_WORDS * sizeof(uint64_t);
}

static volatile uint64_t *attach(key_t key, long nprocs)
{
    int id = shmget(key, shm_size(nprocs), IPC_DIPC | 0600);
    if (id < 0)
        FAIL("shmget(%#x)", (unsigned)key);
    void *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        FAIL("shmat(%d)", id);
    return (volatile uint64_t *)p;
}

static void sem(int id, unsigned short num, short delta, short flg)
{
    struct sembuf b = {.sem_num = num, .sem_op = delta, .sem_flg = flg};
    if (semop(id, &b, 1) < 0)
        FAIL("semop(%u, %d)", num, delta);
}

static int64_t sent[MAX_RANKS];
static int64_t expect[MAX_RANKS];
static uint64_t last_seen[MAX_RANKS];

/* Receive one message of my type without waiting; 0 when none. */
static int receive(int msg, long rank)
{
    struct body b;
    ssize_t n = msgrcv(msg, &b, sizeof b - sizeof b.mtype, rank + 1, IPC_NOWAIT);
    if (n < 0) {
        if (errno == ENOMSG)
            return 0;
        FAIL("msgrcv");
    }
    CHECK(n == (ssize_t)(sizeof b - sizeof b.mtype));
    CHECK(b.mtype == rank + 1);
    if (b.sender < 0 || b.sender >= MAX_RANKS)
        FAIL("message from unknown sender %lld", (long long)b.sender);
    if (b.seq != expect[b.sender])
        FAIL("from %lld: seq %lld, expected %lld (lost or duplicated)",
             (long long)b.sender, (long long)b.seq, (long long)expect[b.sender]);
    expect[b.sender]++;
    return 1;
}

/* Send the next message to a random stable rank; EAGAIN (queue full) just
 * skips it. */
static void send_one(int msg, long rank, long nstable)
{
    long to = (long)(rnd() % (uint64_t)nstable);
    struct body b = {.mtype = to + 1, .sender = rank, .seq = sent[to]};
    if (msgsnd(msg, &b, sizeof b - sizeof b.mtype, IPC_NOWAIT) < 0) {
        if (errno == EAGAIN)
            return;
        FAIL("msgsnd to %ld", to);
    }
    sent[to]++;
}

static int work(char **argv)
{
    key_t shmkey = (key_t)arg_num(argv[2]);
    key_t msgkey = (key_t)arg_num(argv[3]);
    key_t semkey = (key_t)arg_num(argv[4]);
    long rank = (long)arg_num(argv[5]);
    long nstable = (long)arg_num(argv[6]);
    time_t end = (time_t)arg_num(argv[7]);
    CHECK(rank >= 0 && rank < MAX_RANKS && nstable > 0 && nstable <= MAX_RANKS);
    int stable = rank < nstable;
    rng_state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)rank << 32) ^ (uint64_t)getpid();

    int msg = msgget(msgkey, IPC_DIPC | 0600);
    if (msg < 0)
        FAIL("msgget");
    int sm = semget(semkey, 0, IPC_DIPC | 0600);
    if (sm < 0)
        FAIL("semget");
    volatile uint64_t *seg = stable ? attach(shmkey, nstable) : NULL;
    printf("ready\n");

    uint64_t wseq = 0, incs = 0, ops = 0;
    time_t shown = 0;
    for (;;) {
        time_t now = time(NULL);
        if (now >= end)
            break;
        if (now != shown) {
            printf("progress %llu\n", (unsigned long long)ops);
            shown = now;
        }
        unsigned what = (unsigned)(rnd() % 8);
        if (!stable)
            what = what < 6 ? 0 : 7;
        switch (what) {
        case 0:
        case 1:
            send_one(msg, rank, nstable);
            break;
        case 2:
        case 3:
            while (receive(msg, rank))
                ;
            break;
        case 4:
            seg[PAGE_WORDS * (1 + rank)] = ++wseq;
            break;
        case 5: {
            long p = (long)(rnd() % (uint64_t)nstable);
            uint64_t v = seg[PAGE_WORDS * (1 + p)];
            if (p == rank && v != wseq)
                FAIL("my slot holds %llu, I wrote %llu", (unsigned long long)v,
                     (unsigned long long)wseq);
            if (v < last_seen[p])
                FAIL("slot %ld went back from %llu to %llu", p,
                     (unsigned long long)last_seen[p], (unsigned long long)v);
            last_seen[p] = v;
            break;
        }
        case 6:
            sem(sm, 0, -1, SEM_UNDO);
            seg[0] = seg[0] + 1;
            seg[MINE_BASE + rank] = seg[MINE_BASE + rank] + 1;
            incs++;
            sem(sm, 0, 1, SEM_UNDO);
            break;
        case 7:
            /* Up and down again, so the value stays far below SEMVMX
             * however long the run (a worker killed in between leaves 1). */
            sem(sm, 2, 1, 0);
            sem(sm, 2, -1, 0);
            break;
        }
        ops++;
    }

    for (long r = 0; r < nstable; r++)
        printf("sent %ld %lld\n", r, (long long)sent[r]);
    printf("ops %llu\n", (unsigned long long)ops);
    if (!stable) {
        printf("done\n");
        return 0;
    }
    printf("incs %llu\n", (unsigned long long)incs);
    printf("wseq %llu\n", (unsigned long long)wseq);

    /* End barrier: every stable sender has stopped. */
    sem(sm, 1, 1, 0);
    time_t give_up = time(NULL) + 60;
    for (;;) {
        int v = semctl(sm, 1, GETVAL);
        if (v < 0)
            FAIL("semctl(GETVAL)");
        if (v >= nstable)
            break;
        if (time(NULL) > give_up)
            FAIL("end barrier stuck at %d of %ld", v, nstable);
        while (receive(msg, rank))
            ;
        usleep(20000);
    }
    /* Drain, twice: a sender's last message may still be on its way. */
    for (int pass = 0; pass < 2; pass++) {
        while (receive(msg, rank))
            ;
        usleep(DRAIN_SETTLE_US);
    }
    for (long s = 0; s < MAX_RANKS; s++)
        if (expect[s])
            printf("recv %ld %lld\n", s, (long long)expect[s]);
    printf("done\n");
    return 0;
}

/* Report the outcome of one probe operation. */
static void outcome(int rc)
{
    if (rc < 0)
        printf("errno %s\n", strerrorname_np(errno));
    else
        printf("ok\n");
}

static int probe(char **argv)
{
    key_t shmkey = (key_t)arg_num(argv[2]);
    size_t size = (size_t)arg_num(argv[3]);
    int shm = shmget(shmkey, size, IPC_DIPC | 0600);
    if (shm < 0)
        FAIL("shmget");
    volatile unsigned char *seg = shmat(shm, NULL, 0);
    if (seg == (void *)-1)
        FAIL("shmat");
    int msg = msgget((key_t)arg_num(argv[4]), IPC_DIPC | 0600);
    if (msg < 0)
        FAIL("msgget");
    int sm = semget((key_t)arg_num(argv[5]), 0, IPC_DIPC | 0600);
    if (sm < 0)
        FAIL("semget");
    printf("ready\n");
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        long page;
        if (!strncmp(line, "msg", 3)) {
            struct body b = {.mtype = 999, .sender = -1, .seq = 0};
            int rc = msgsnd(msg, &b, sizeof b - sizeof b.mtype, IPC_NOWAIT);
            if (rc == 0)
                rc = (int)msgrcv(msg, &b, sizeof b - sizeof b.mtype, 999, IPC_NOWAIT);
            outcome(rc < 0 ? -1 : 0);
        } else if (!strncmp(line, "sem", 3)) {
            struct sembuf ops[2] = {{.sem_num = 2, .sem_op = 1, .sem_flg = 0},
                                    {.sem_num = 2, .sem_op = -1, .sem_flg = 0}};
            int rc = semop(sm, &ops[0], 1);
            if (rc == 0)
                rc = semop(sm, &ops[1], 1);
            outcome(rc);
        } else if (sscanf(line, "touch %ld", &page) == 1) {
            CHECK(page >= 0 && (size_t)(page + 1) * 4096 <= size);
            printf("read %u\n", seg[page * 4096]);
        } else if (sscanf(line, "write %ld", &page) == 1) {
            CHECK(page >= 0 && (size_t)(page + 1) * 4096 <= size);
            seg[page * 4096] = (unsigned char)(page + 1);
            printf("wrote %ld\n", page + 1);
        } else {
            FAIL("unknown probe command %s", line);
        }
    }
    printf("done\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(3600);
    if (argc < 3)
        FAIL("usage");
    const char *cmd = argv[1];
    key_t key = (key_t)arg_num(argv[2]);
    if (!strcmp(cmd, "mkshm") && argc == 4) {
        long nprocs = (long)arg_num(argv[3]);
        int id = shmget(key, shm_size(nprocs), IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        if (id < 0)
            FAIL("shmget");
        volatile uint64_t *p = shmat(id, NULL, 0);
        if (p == (void *)-1)
            FAIL("shmat");
        CHECK(p[0] == 0);
        printf("id %d\ndone\n", id);
        return 0;
    }
    if (!strcmp(cmd, "mkmsg") && argc == 3) {
        int id = msgget(key, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        if (id < 0)
            FAIL("msgget");
        printf("id %d\ndone\n", id);
        return 0;
    }
    if (!strcmp(cmd, "mksem") && argc == 3) {
        int id = semget(key, 3, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        if (id < 0)
            FAIL("semget");
        unsigned short vals[3] = {1, 0, 0};
        union semun arg = {.array = vals};
        if (semctl(id, 0, SETALL, arg) < 0)
            FAIL("semctl(SETALL)");
        printf("id %d\ndone\n", id);
        return 0;
    }
    if (!strcmp(cmd, "work") && argc == 8)
        return work(argv);
    if (!strcmp(cmd, "probe") && argc == 6)
        return probe(argv);
    if (!strcmp(cmd, "check") && argc == 4) {
        long nprocs = (long)arg_num(argv[3]);
        volatile uint64_t *p = attach(key, nprocs);
        printf("counter %llu\n", (unsigned long long)p[0]);
        for (long i = 0; i < nprocs; i++) {
            printf("mine %ld %llu\n", i, (unsigned long long)p[MINE_BASE + i]);
            printf("slot %ld %llu\n", i, (unsigned long long)p[PAGE_WORDS * (1 + i)]);
        }
        printf("done\n");
        return 0;
    }
    FAIL("usage: %s", cmd);
}
