/* msgsem_sem.c - distributed semaphore sets.
 *
 *   create KEY NSEMS VAL      semget(IPC_CREAT|IPC_EXCL|IPC_DIPC), every
 *                             semaphore set to VAL (SETALL): "id N"
 *   mutex SEMKEY SHMKEY ITERS SECONDS
 *                             semaphore 0 as a mutex (SEM_UNDO) around a
 *                             plain read-increment-write of a counter in a
 *                             distributed shared segment, ITERS times or
 *                             until SECONDS passed (an oversubscribed
 *                             machine): "done <increments made>"
 *   read SHMKEY               "counter N"
 *   barrier SEMKEY I N ROUNDS [quiet]
 *                             process I of N passes ROUNDS barriers made
 *                             of semaphores 0..N-1 (see below), checking
 *                             with semaphore N that nobody ran ahead;
 *                             with "quiet", libsysv's signal (SIGRTMAX-1,
 *                             for a dying daemon only) is blocked from the
 *                             start and must not be pending at the end
 *   hold SEMKEY               take semaphore 0 (SEM_UNDO), say "holding",
 *                             and sleep until killed
 *   take SEMKEY SECONDS       semtimedop(-1, SEM_UNDO): "took" or "errno E"
 *   trytake SEMKEY            semop(-1, IPC_NOWAIT): "took" or "errno E"
 *   getval SEMKEY NUM         "val V"
 *   info SEMKEY               semctl(IPC_INFO) on the set's id: the limits
 *   fork SEMKEY               a forked child waits for the parent's mutex
 *                             and exits holding it (see below)
 */

static int get(const char *key)
{
    int id = semget((key_t)arg_num(key), 0, IPC_DIPC | 0600);
    if (id < 0)
        FAIL("semget(%s)", key);
    return id;
}

static void op(int id, unsigned short num, short delta, short flg)
{
    struct sembuf b = {.sem_num = num, .sem_op = delta, .sem_flg = flg};
    if (semop(id, &b, 1) < 0)
        FAIL("semop(%u, %d)", num, delta);
}

static volatile uint64_t *counter(const char *key)
{
    int shm = shmget((key_t)arg_num(key), 4096, IPC_CREAT | IPC_DIPC | 0600);
    if (shm < 0)
        FAIL("shmget(%s)", key);
    void *p = shmat(shm, NULL, 0);
    if (p == (void *)-1)
        FAIL("shmat");
    return (volatile uint64_t *)p;
}

int main(int argc, char **argv)
{
    setup();
    if (argc < 3)
        FAIL("usage");
    const char *cmd = argv[1];

    if (!strcmp(cmd, "create")) {
        int nsems = (int)arg_num(argv[3]);
        int id = semget((key_t)arg_num(argv[2]), nsems,
                        IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        if (id < 0)
            FAIL("semget");
        unsigned short vals[64];
        CHECK(nsems <= 64);
        for (int i = 0; i < nsems; i++)
            vals[i] = (unsigned short)arg_num(argv[4]);
        union semun arg = {.array = vals};
        if (semctl(id, 0, SETALL, arg) < 0)
            FAIL("semctl(SETALL)");
        printf("id %d\n", id);
        return 0;
    }
    if (!strcmp(cmd, "read")) {
        volatile uint64_t *c = counter(argv[2]);
        printf("counter %llu\n", (unsigned long long)*c);
        return 0;
    }
    /* Blocked, a stray signal stays pending where we can see it. */
    int quiet = !strcmp(cmd, "barrier") && argc == 7 && !strcmp(argv[6], "quiet");
    sigset_t death;
    sigemptyset(&death);
    sigaddset(&death, SIGRTMAX - 1);
    if (quiet && sigprocmask(SIG_BLOCK, &death, NULL) != 0)
        FAIL("sigprocmask");
    int id = get(argv[2]);
    if (!strcmp(cmd, "mutex")) {
        CHECK(argc == 6);
        volatile uint64_t *c = counter(argv[3]);
        long iters = arg_num(argv[4]);
        double seconds = (double)arg_num(argv[5]), start = now_s();
        long i;
        for (i = 0; i < iters && now_s() - start <= seconds; i++) {
            op(id, 0, -1, SEM_UNDO);
            uint64_t v = *c; /* not atomic: only the mutex makes it exact */
            *c = v + 1;
            op(id, 0, 1, SEM_UNDO);
        }
        printf("done %ld\n", i);
        return 0;
    }
    if (!strcmp(cmd, "barrier")) {
        /* Process i, each round: one atomic semop adds a token to every
         * other process's semaphore (and counts its arrival in semaphore
         * n), then it waits for n-1 tokens on its own. Nobody leaves
         * round r before all n arrived at it, and nobody gets more than
         * one round ahead, which the arrival count checks. */
        int me = (int)arg_num(argv[3]), n = (int)arg_num(argv[4]);
        long rounds = arg_num(argv[5]);
        CHECK(n >= 2 && n <= 16 && me >= 0 && me < n);
        struct sembuf post[17];
        int k = 0;
        for (int j = 0; j < n; j++)
            if (j != me)
                post[k++] = (struct sembuf){.sem_num = (unsigned short)j, .sem_op = 1};
        post[k++] = (struct sembuf){.sem_num = (unsigned short)n, .sem_op = 1};
        for (long r = 0; r < rounds; r++) {
            if (semop(id, post, (size_t)k) < 0)
                FAIL("semop(post) round %ld", r);
            op(id, (unsigned short)me, (short)-(n - 1), 0);
            int arrived = semctl(id, n, GETVAL);
            if (arrived < 0)
                FAIL("semctl(GETVAL)");
            /* All n arrived at round r; none beyond round r + 1. */
            if (arrived < n * (r + 1) || arrived > n * (r + 1) + (n - 1))
                FAIL("round %ld: %d arrivals", r, arrived);
        }
        if (quiet) {
            sigset_t pending;
            if (sigpending(&pending) != 0)
                FAIL("sigpending");
            if (sigismember(&pending, SIGRTMAX - 1))
                FAIL("SIGRTMAX-1 raised while the daemon lives");
        }
        printf("done %ld\n", rounds);
        return 0;
    }
    if (!strcmp(cmd, "hold")) {
        op(id, 0, -1, SEM_UNDO);
        printf("holding\n");
        for (;;)
            pause();
    }
    if (!strcmp(cmd, "take") || !strcmp(cmd, "trytake")) {
        struct sembuf b = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
        int rc;
        if (!strcmp(cmd, "take")) {
            struct timespec ts = {.tv_sec = arg_num(argv[3]), .tv_nsec = 0};
            rc = semtimedop(id, &b, 1, &ts);
        } else {
            b.sem_flg |= IPC_NOWAIT;
            rc = semop(id, &b, 1);
        }
        if (rc < 0)
            printf("errno %s\n", strerrorname_np(errno));
        else
            printf("took\n");
        return 0;
    }
    if (!strcmp(cmd, "info")) {
        struct seminfo si;
        union semun arg = {.__buf = &si};
        if (semctl(id, 0, IPC_INFO, arg) < 0)
            FAIL("semctl(IPC_INFO)");
        printf("semmsl %d semopm %d semvmx %d\n", si.semmsl, si.semopm, si.semvmx);
        return 0;
    }
    if (!strcmp(cmd, "fork")) {
        /* The parent holds the mutex (SEM_UNDO) and forks: the child
         * cannot take it, then waits for it, and exits holding it; its
         * own exit undoes its SEM_UNDO, so the parent can take it again. */
        op(id, 0, -1, SEM_UNDO);
        pid_t child = fork();
        if (child < 0)
            FAIL("fork");
        if (child == 0) {
            struct sembuf b = {.sem_num = 0, .sem_op = -1,
                               .sem_flg = SEM_UNDO | IPC_NOWAIT};
            if (semop(id, &b, 1) == 0 || errno != EAGAIN)
                FAIL("child: the mutex held by the parent was free");
            printf("child waits\n");
            op(id, 0, -1, SEM_UNDO);
            printf("child took\n");
            _exit(0);
        }
        sleep(1);
        op(id, 0, 1, SEM_UNDO);
        int st;
        if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("child failed");
        struct timespec ts = {.tv_sec = 20, .tv_nsec = 0};
        struct sembuf b = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
        if (semtimedop(id, &b, 1, &ts) < 0)
            FAIL("parent: the child's SEM_UNDO did not release the mutex");
        printf("parent took\n");
        return 0;
    }
    if (!strcmp(cmd, "getval")) {
        int v = semctl(id, (int)arg_num(argv[3]), GETVAL);
        if (v < 0)
            FAIL("semctl(GETVAL)");
        printf("val %d\n", v);
        return 0;
    }
    FAIL("unknown command %s", cmd);
}
