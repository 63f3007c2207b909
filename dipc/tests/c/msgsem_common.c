/* msgsem_common.c - pasted in front of every msgsem_*.c program by
 * dipc/tests/msgsem.rs (compile_c takes one source string).
 *
 * The programs are ordinary System V IPC code plus IPC_DIPC; each is
 * bounded by alarm() in case the test's own bound failed, and reports
 * what happened on stdout, one line per event, for the test to read.
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
#include <time.h>
#include <unistd.h>

#include "dipc.h"

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

static __attribute__((unused)) void setup(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(ALARM_S);
}

static __attribute__((unused)) long long arg_num(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno != 0 || *end != '\0' || end == s)
        FAIL("bad number %s", s);
    return v;
}

/* Seconds on the monotonic clock. */
static __attribute__((unused)) double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* glibc leaves union semun to the program. */
union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
    struct seminfo *__buf;
};
