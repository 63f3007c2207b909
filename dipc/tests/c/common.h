/* common.h - shared by the C programs of dipc/tests/shm.rs.
 *
 * The test pastes this file in front of each program (compile_c takes one
 * source string), after "#define USE_DIPC 1" for the builds that use
 * IPC_DIPC from dipc.h. Without USE_DIPC a program includes nothing of
 * dipc's: it is the unmodified program that runs under
 * LD_PRELOAD=libsysv.so with DIPC_KEYS=all.
 *
 * Every program is bounded: alarm() kills it if the test's own bound
 * failed, and every spin on the shared segment gives up with a message
 * naming what it waited for. Helpers are marked unused: each program
 * uses some of them, and the test compiles with -Wall -Werror.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef USE_DIPC
#include "dipc.h"
#define DIPC_FLAG IPC_DIPC
#else
#define DIPC_FLAG 0
#endif

/* Seconds a spin may wait before the program gives up. */
#define SPIN_LIMIT_S 60.0
/* Seconds before SIGALRM ends the program, whatever it is doing. */
#define ALARM_S 150

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

static __attribute__((unused)) double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Spin (yielding the CPU) until cond holds; bounded by SPIN_LIMIT_S. */
#define SPIN_UNTIL(cond, ...)                                                \
    do {                                                                     \
        double t0_ = now_s();                                                \
        unsigned n_ = 0;                                                     \
        while (!(cond)) {                                                    \
            if ((++n_ & 255) == 0 && now_s() - t0_ > SPIN_LIMIT_S) {         \
                errno = 0;                                                   \
                FAIL("timeout waiting for " __VA_ARGS__);                    \
            }                                                                \
            sched_yield();                                                   \
        }                                                                    \
    } while (0)

/* Line-buffered stdout (the test reads it through a pipe) and a hard
 * bound on the program's life. */
static __attribute__((unused)) void setup(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(ALARM_S);
}

static __attribute__((unused)) long page_size(void)
{
    return sysconf(_SC_PAGESIZE);
}

/* A number from argv (decimal or 0x hex). */
static __attribute__((unused)) long long arg_num(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno != 0 || *end != '\0' || end == s)
        FAIL("bad number %s", s);
    return v;
}

/* shmget (distributed when built with USE_DIPC or selected by DIPC_KEYS)
 * and shmat; prints "id <id>". */
static __attribute__((unused)) void *get_attach(key_t key, size_t size, int flags, int *idp)
{
    int id = shmget(key, size, flags | DIPC_FLAG | 0600);
    if (id < 0)
        FAIL("shmget(%#x, %zu, %#x)", (unsigned)key, size, flags);
    void *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        FAIL("shmat(%d)", id);
    printf("id %d\n", id);
    if (idp)
        *idp = id;
    return p;
}

/* The pattern word at index i for seed s (every byte varies with i). */
static __attribute__((unused)) uint64_t pattern(uint64_t seed, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    x ^= x >> 29;
    return x * 0xbf58476d1ce4e5b9ull;
}
