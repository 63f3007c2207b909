/* The distributed path against a (fake) node daemon: shmget/shmat/shmdt/
 * shmctl with IPC_DIPC, faults served through the daemon, SHM_REMAP, an
 * occupied address, and fork: the child reads and writes the inherited
 * attachment through its own registration. Prints "ok". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
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

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    int id = shmget(IPC_PRIVATE, 3 * page - 100, IPC_CREAT | IPC_DIPC | 0600);
    CHECK(id >= 0);
    CHECK(dipc_is_distributed_id(id));

    char *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    strcpy(p, "parent");
    strcpy(p + 2 * page, "far");

    char *r = shmat(id, NULL, SHM_RDONLY);
    CHECK(r != (void *)-1 && r != p);
    CHECK(strcmp(r, "parent") == 0);
    CHECK(shmdt(r) == 0);

    /* An occupied address without SHM_REMAP: EINVAL (and ShmAbort). */
    errno = 0;
    CHECK(shmat(id, p, 0) == (void *)-1 && errno == EINVAL);
    /* Unaligned without SHM_RND: EINVAL. */
    errno = 0;
    CHECK(shmat(id, p + 1, 0) == (void *)-1 && errno == EINVAL);

    struct shmid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.shm_segsz == (size_t)(3 * page - 100));
    CHECK(ds.shm_nattch == 1);
    CHECK((ds.shm_perm.mode & 0777) == 0600);
    errno = 0;
    CHECK(shmctl(id, IPC_STAT, NULL) == -1 && errno == EFAULT);
    errno = 0;
    CHECK(shmctl(id, SHM_LOCK, NULL) == -1 && errno == EINVAL);

    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (strcmp(p, "parent") != 0 || strcmp(p + 2 * page, "far") != 0)
            _exit(2);
        strcpy(p + page, "child");
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strcmp(p + page, "child") == 0);

    /* SHM_REMAP over our own attachment replaces it. */
    char *q = shmat(id, p, SHM_REMAP);
    CHECK(q == p);
    CHECK(strcmp(q, "parent") == 0);

    CHECK(shmdt(q) == 0);
    errno = 0;
    CHECK(shmdt(q) == -1 && errno == EINVAL);
    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    errno = 0;
    CHECK(shmctl(id, IPC_STAT, &ds) == -1 && errno == EINVAL);
    puts("ok");
    return 0;
}
