/* pattern - one process fills a segment with a pattern, another (on
 * another node) verifies every byte.
 *
 *   pattern write KEY SIZE SEED   create the segment, fill it, detach
 *   pattern read KEY SIZE SEED    find it by key, verify every word, check
 *                                 IPC_STAT's size, detach and IPC_RMID it
 *   pattern rewrite KEY SIZE SEED NEW
 *                                 find it by key, verify every word, fill
 *                                 it with the pattern of seed NEW, detach
 *
 * Prints "id <id>", then "written", "verified <bytes>" or "rewritten"; a
 * mismatch prints the first bad offset and the number of bad words. */

int main(int argc, char **argv)
{
    setup();
    if (argc != 5 && !(argc == 6 && strcmp(argv[1], "rewrite") == 0))
        FAIL("usage: pattern write|read KEY SIZE SEED | rewrite KEY SIZE SEED NEW");
    key_t key = (key_t)arg_num(argv[2]);
    size_t size = (size_t)arg_num(argv[3]);
    uint64_t seed = (uint64_t)arg_num(argv[4]);
    CHECK(size % sizeof(uint64_t) == 0);
    size_t words = size / sizeof(uint64_t);
    int id;

    if (strcmp(argv[1], "write") == 0) {
        uint64_t *p = get_attach(key, size, IPC_CREAT | IPC_EXCL, &id);
        for (size_t i = 0; i < words; i++)
            p[i] = pattern(seed, i);
        CHECK(shmdt(p) == 0);
        puts("written");
        return 0;
    }
    if (strcmp(argv[1], "read") == 0 || strcmp(argv[1], "rewrite") == 0) {
        uint64_t *p = get_attach(key, 0, 0, &id);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < words; i++) {
            if (p[i] != pattern(seed, i)) {
                if (bad++ == 0)
                    first = i;
            }
        }
        if (bad != 0)
            FAIL("%zu of %zu words differ, the first at offset %zu: %#llx, expected %#llx",
                 bad, words, first * sizeof(uint64_t), (unsigned long long)p[first],
                 (unsigned long long)pattern(seed, first));
        if (argc == 6) {
            uint64_t next = (uint64_t)arg_num(argv[5]);
            for (size_t i = 0; i < words; i++)
                p[i] = pattern(next, i);
        }
        struct shmid_ds ds;
        CHECK(shmctl(id, IPC_STAT, &ds) == 0);
        CHECK(ds.shm_segsz == size);
        CHECK(shmdt(p) == 0);
        if (argc == 6) {
            puts("rewritten");
            return 0;
        }
        CHECK(shmctl(id, IPC_RMID, NULL) == 0);
        printf("verified %zu\n", size);
        return 0;
    }
    FAIL("unknown mode %s", argv[1]);
}
