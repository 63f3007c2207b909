/* Local (non-distributed) shm calls must behave exactly as the kernel's:
 * the results of the interposed functions are compared with raw system
 * calls and with the errno values of man 2 shmget/shmat/shmdt/shmctl.
 * Prints "shmget from: <object>" so the test knows which shmget ran, then
 * "ok" and exits 0, or "FAIL ..." and exits 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ids[4] = {-1, -1, -1, -1};

static void cleanup(void)
{
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0)
            syscall(SYS_shmctl, ids[i], IPC_RMID, NULL);
}

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("FAIL line %d: %s (errno %d %s)\n", __LINE__, #cond,      \
                   errno, strerror(errno));                                  \
            cleanup();                                                       \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define FAILS_WITH(call, err)                                                \
    do {                                                                     \
        errno = 0;                                                           \
        long r_ = (long)(call);                                              \
        CHECK(r_ == -1 && errno == (err));                                   \
    } while (0)

int main(void)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "shmget");
    if (sym && dladdr(sym, &info) && info.dli_fname)
        printf("shmget from: %s\n", info.dli_fname);

    key_t key = 0x5e000000 | (getpid() & 0xffffff);
    key_t absent = key ^ 0x00800000;
    syscall(SYS_shmctl, (int)syscall(SYS_shmget, absent, 0, 0), IPC_RMID, NULL);

    int id = shmget(key, 10000, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(id >= 0);
    ids[0] = id;
    CHECK(shmget(key, 10000, 0) == id);
    CHECK(syscall(SYS_shmget, key, 10000, 0) == id);
    CHECK(shmget(key, 0, 0) == id);
    FAILS_WITH(shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    FAILS_WITH(shmget(absent, 4096, 0), ENOENT);
    FAILS_WITH(shmget(key, 20000, 0), EINVAL);
    FAILS_WITH(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600), EINVAL);

    int priv = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    CHECK(priv >= 0 && priv != id);
    ids[1] = priv;

    char *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    char *q = shmat(id, NULL, SHM_RDONLY);
    CHECK(q != (void *)-1 && q != p);
    strcpy(p, "through the kernel");
    CHECK(strcmp(q, "through the kernel") == 0);
    CHECK(((unsigned long)p % SHMLBA) == 0);

    struct shmid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.shm_segsz == 10000);
    CHECK(ds.shm_nattch == 2);
    CHECK(ds.shm_cpid == getpid());
    CHECK(ds.shm_lpid == getpid());
    CHECK((ds.shm_perm.mode & 0777) == 0600);
    CHECK(ds.shm_perm.__key == key);

    struct shmid_ds raw;
    memset(&raw, 0, sizeof raw);
    CHECK(syscall(SYS_shmctl, id, IPC_STAT, &raw) == 0);
    CHECK(memcmp(&raw, &ds, sizeof ds) == 0);

    FAILS_WITH(shmctl(id, IPC_STAT, NULL), EFAULT);
    FAILS_WITH(shmctl(id, IPC_SET, NULL), EFAULT);
    FAILS_WITH(shmctl(0x7ffffff0, IPC_STAT, &ds), EINVAL);
    FAILS_WITH(shmctl(id, 12345, &ds), EINVAL);
    CHECK(shmctl(0, IPC_INFO, (struct shmid_ds *)&raw) >= 0);

    ds.shm_perm.mode = 0640;
    CHECK(shmctl(id, IPC_SET, &ds) == 0);
    CHECK(shmctl(id, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & 0777) == 0640);

    FAILS_WITH((long)shmat(id, p + 1, 0), EINVAL);
    FAILS_WITH((long)shmat(0x7ffffff0, NULL, 0), EINVAL);
    FAILS_WITH((long)shmat(id, NULL, SHM_REMAP), EINVAL);
    /* A dipc-range id unknown everywhere: still the kernel's EINVAL. */
    FAILS_WITH((long)shmat(0x40000123, NULL, 0), EINVAL);
    FAILS_WITH(shmctl(0x40000123, IPC_STAT, &ds), EINVAL);

    /* SHM_RND rounds down to SHMLBA. */
    CHECK(shmdt(q) == 0);
    char *r = shmat(id, q + 5, SHM_RND | SHM_RDONLY);
    CHECK(r == q);
    CHECK(strcmp(r, "through the kernel") == 0);
    CHECK(shmdt(r) == 0);

    CHECK(shmdt(p) == 0);
    FAILS_WITH(shmdt(p), EINVAL);
    FAILS_WITH(shmdt((void *)0x1000), EINVAL);

    /* IPC_RMID while attached: SHM_DEST, the id lives until the detach. */
    p = shmat(priv, NULL, 0);
    CHECK(p != (void *)-1);
    CHECK(shmctl(priv, IPC_RMID, NULL) == 0);
    CHECK(shmctl(priv, IPC_STAT, &ds) == 0);
    CHECK((ds.shm_perm.mode & SHM_DEST) != 0 && ds.shm_nattch == 1);
    CHECK(shmdt(p) == 0);
    FAILS_WITH(shmctl(priv, IPC_STAT, &ds), EINVAL);
    ids[1] = -1;

    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    ids[0] = -1;
    FAILS_WITH(shmget(key, 0, 0), ENOENT);
    puts("ok");
    return 0;
}
