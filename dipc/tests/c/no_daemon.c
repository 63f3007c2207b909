/* no_daemon - a program using IPC_DIPC with no node daemon to talk to.
 *
 *   no_daemon local   every call works locally through the kernel (ids are
 *                     kernel ids); the test checks the single warning
 *   no_daemon error   (DIPC_FALLBACK=error) distributed shmget fails with
 *                     ECONNREFUSED; local calls still work
 *
 * Prints "ok". */

int main(int argc, char **argv)
{
    setup();
    if (argc != 2)
        FAIL("usage: no_daemon local|error");
    long page = page_size();
    if (strcmp(argv[1], "error") == 0) {
        errno = 0;
        CHECK(shmget(IPC_PRIVATE, page, IPC_CREAT | IPC_DIPC | 0600) == -1);
        CHECK(errno == ECONNREFUSED);
        int id = shmget(IPC_PRIVATE, page, IPC_CREAT | 0600);
        CHECK(id >= 0);
        CHECK(shmctl(id, IPC_RMID, NULL) == 0);
        puts("ok");
        return 0;
    }
    CHECK(strcmp(argv[1], "local") == 0);
    int id = shmget(IPC_PRIVATE, 4 * page, IPC_CREAT | IPC_DIPC | 0600);
    CHECK(id >= 0);
    CHECK(!dipc_is_distributed_id(id));
    uint64_t *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    for (size_t i = 0; i < 4 * (size_t)page / 8; i++)
        p[i] = pattern(7, i);
    /* A second attachment sees the same memory. */
    const uint64_t *q = shmat(id, NULL, SHM_RDONLY);
    CHECK(q != (void *)-1 && q != p);
    for (size_t i = 0; i < 4 * (size_t)page / 8; i++)
        CHECK(q[i] == pattern(7, i));
    struct shmid_ds ds;
    CHECK(shmctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.shm_nattch == 2 && ds.shm_segsz == 4 * (size_t)page);
    CHECK(shmdt(q) == 0);
    CHECK(shmdt(p) == 0);
    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    puts("ok");
    return 0;
}
