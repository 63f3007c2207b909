/* Distributed calls with no node daemon: with the default fallback they act
 * locally through the kernel (one warning on stderr, checked by the test);
 * with DIPC_FALLBACK=error they fail with ECONNREFUSED.
 * argv[1]: "local" or "error". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

#include "dipc.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("FAIL line %d: %s (errno %d %s)\n", __LINE__, #cond,      \
                   errno, strerror(errno));                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

int main(int argc, char **argv)
{
    CHECK(argc == 2);
    key_t key = 0x5d000000 | (getpid() & 0xffffff);
    if (strcmp(argv[1], "error") == 0) {
        errno = 0;
        CHECK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | IPC_DIPC | 0600) == -1);
        CHECK(errno == ECONNREFUSED);
        errno = 0;
        CHECK(shmget(key, 4096, IPC_CREAT | IPC_DIPC | 0600) == -1);
        CHECK(errno == ECONNREFUSED);
        /* Not distributed: unaffected. */
        int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
        CHECK(id >= 0);
        CHECK(shmctl(id, IPC_RMID, NULL) == 0);
        /* A dipc-range id without a daemon goes to the kernel. */
        errno = 0;
        CHECK(shmat(0x40000123, NULL, 0) == (void *)-1 && errno == EINVAL);
        puts("ok");
        return 0;
    }
    /* local: several distributed calls, one warning in all. */
    int a = shmget(IPC_PRIVATE, 4096, IPC_CREAT | IPC_DIPC | 0600);
    CHECK(a >= 0);
    CHECK(!dipc_is_distributed_id(a));
    int b = shmget(key, 8192, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
    CHECK(b >= 0 && b != a);
    CHECK(shmget(key, 0, IPC_DIPC) == b);
    CHECK(shmget(key, 0, 0) == b); /* the same local segment */
    char *p = shmat(b, NULL, 0);
    CHECK(p != (void *)-1);
    strcpy(p, "local");
    struct shmid_ds ds;
    CHECK(shmctl(b, IPC_STAT, &ds) == 0 && ds.shm_segsz == 8192 && ds.shm_nattch == 1);
    CHECK((ds.shm_perm.mode & 0777) == 0600);
    CHECK(shmdt(p) == 0);
    CHECK(shmctl(a, IPC_RMID, NULL) == 0);
    CHECK(shmctl(b, IPC_RMID, NULL) == 0);
    puts("ok");
    return 0;
}
