/* shmtool - System V shared memory driven line by line from stdin, so a
 * test can interleave the calls of processes on different nodes.
 *
 * Each command prints exactly one line: its result, or "err <ENAME>" when
 * the call failed (the errno's name, e.g. "err EINVAL"). Commands:
 *
 *   get KEY SIZE [create|excl]   shmget; "id <id>" (excl = IPC_CREAT|IPC_EXCL)
 *   at ID                        shmat; "attached <size>" (size from IPC_STAT)
 *   dt                           shmdt of the current attachment; "detached"
 *   stat ID                      IPC_STAT; "stat nattch <n> dest <0|1> key <k> size <s>"
 *   rm ID                        IPC_RMID; "removed"
 *   fill SEED                    write the pattern of SEED over the attachment; "filled"
 *   check SEED                   verify it; "good" or "bad <offset> <count>"
 *   forkfill OLD NEW             fork; the child checks OLD, fills NEW and
 *                                exits (status 0 if OLD was intact, 3 if not);
 *                                "child <status>" once the parent reaped it
 *   exit                         "bye", then exit 0
 *
 * End of input ends the program (status 0). */

static void *addr;
static size_t len;

static void err_line(void)
{
    printf("err %s\n", strerrorname_np(errno));
}

/* Offset of the first word that differs from the pattern of seed, and the
 * number of such words (0: intact). */
static size_t check_pattern(uint64_t seed, size_t *first)
{
    const uint64_t *w = addr;
    size_t bad = 0;
    for (size_t i = 0; i < len / sizeof(uint64_t); i++) {
        if (w[i] != pattern(seed, i) && bad++ == 0)
            *first = i * sizeof(uint64_t);
    }
    return bad;
}

static void fill_pattern(uint64_t seed)
{
    uint64_t *w = addr;
    for (size_t i = 0; i < len / sizeof(uint64_t); i++)
        w[i] = pattern(seed, i);
}

int main(void)
{
    setup();
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "", a[64] = "", b[64] = "", c[64] = "";
        if (sscanf(line, "%31s %63s %63s %63s", cmd, a, b, c) < 1)
            continue;
        errno = 0;
        if (strcmp(cmd, "get") == 0) {
            int flags = 0600 | DIPC_FLAG;
            if (strcmp(c, "create") == 0)
                flags |= IPC_CREAT;
            else if (strcmp(c, "excl") == 0)
                flags |= IPC_CREAT | IPC_EXCL;
            int id = shmget((key_t)arg_num(a), (size_t)arg_num(b), flags);
            if (id < 0)
                err_line();
            else
                printf("id %d\n", id);
        } else if (strcmp(cmd, "at") == 0) {
            CHECK(addr == NULL);
            int id = (int)arg_num(a);
            struct shmid_ds ds;
            void *p = shmat(id, NULL, 0);
            if (p == (void *)-1) {
                err_line();
            } else if (shmctl(id, IPC_STAT, &ds) != 0) {
                err_line();
                CHECK(shmdt(p) == 0);
            } else {
                addr = p;
                len = ds.shm_segsz;
                printf("attached %zu\n", len);
            }
        } else if (strcmp(cmd, "dt") == 0) {
            CHECK(addr != NULL);
            if (shmdt(addr) != 0) {
                err_line();
            } else {
                addr = NULL;
                puts("detached");
            }
        } else if (strcmp(cmd, "stat") == 0) {
            struct shmid_ds ds;
            if (shmctl((int)arg_num(a), IPC_STAT, &ds) != 0)
                err_line();
            else
                printf("stat nattch %lu dest %d key %d size %zu\n",
                       (unsigned long)ds.shm_nattch, (ds.shm_perm.mode & SHM_DEST) != 0,
                       (int)ds.shm_perm.__key, ds.shm_segsz);
        } else if (strcmp(cmd, "rm") == 0) {
            if (shmctl((int)arg_num(a), IPC_RMID, NULL) != 0)
                err_line();
            else
                puts("removed");
        } else if (strcmp(cmd, "fill") == 0) {
            CHECK(addr != NULL);
            fill_pattern((uint64_t)arg_num(a));
            puts("filled");
        } else if (strcmp(cmd, "check") == 0) {
            CHECK(addr != NULL);
            size_t first = 0, bad = check_pattern((uint64_t)arg_num(a), &first);
            if (bad == 0)
                puts("good");
            else
                printf("bad %zu %zu\n", first, bad);
        } else if (strcmp(cmd, "forkfill") == 0) {
            CHECK(addr != NULL);
            uint64_t old = (uint64_t)arg_num(a), new = (uint64_t)arg_num(b);
            fflush(stdout);
            pid_t pid = fork();
            CHECK(pid >= 0);
            if (pid == 0) {
                size_t first = 0;
                int intact = check_pattern(old, &first) == 0;
                fill_pattern(new);
                _exit(intact ? 0 : 3);
            }
            int status;
            CHECK(waitpid(pid, &status, 0) == pid);
            if (WIFEXITED(status))
                printf("child %d\n", WEXITSTATUS(status));
            else
                printf("child signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
        } else if (strcmp(cmd, "exit") == 0) {
            puts("bye");
            return 0;
        } else {
            FAIL("unknown command %s", cmd);
        }
    }
    return 0;
}
