/* The node daemon dies while this process uses a distributed segment:
 * argv[1] "fault": while a thread is blocked in a fault on it;
 * argv[1] "idle": while the process does something else.
 * Either way the outcome must be SIGBUS (exit 3 with "sigbus"), never
 * zeros and never a hang. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#include "dipc.h"

static void on_sigbus(int sig)
{
    (void)sig;
    static const char msg[] = "sigbus\n";
    write(1, msg, sizeof msg - 1);
    _exit(3);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 1;
    signal(SIGBUS, on_sigbus);
    long page = sysconf(_SC_PAGESIZE);
    int id = shmget(IPC_PRIVATE, 2 * page, IPC_CREAT | IPC_DIPC | 0600);
    if (id < 0 || !dipc_is_distributed_id(id)) {
        printf("FAIL shmget %d errno %d\n", id, errno);
        return 1;
    }
    volatile char *p = shmat(id, NULL, 0);
    if (p == (void *)-1) {
        printf("FAIL shmat errno %d\n", errno);
        return 1;
    }
    p[0] = 1; /* served */
    printf("first\n");
    fflush(stdout);
    if (strcmp(argv[1], "idle") == 0) {
        /* The node hangs up meanwhile; sleep through any interruption. */
        struct timespec t = {1, 0};
        while (nanosleep(&t, &t) == -1 && errno == EINTR)
            ;
        printf("read %d\n", p[0]);
    } else {
        p[page] = 2; /* the node dies instead of serving this */
    }
    printf("survived\n");
    return 0;
}
