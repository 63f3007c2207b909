/* counter - processes on several nodes increment one shared counter with
 * sequentially consistent atomics; no increment may be lost.
 *
 *   counter KEY NPROCS ITERS YIELD_EVERY [SECONDS]
 *
 * Every process creates-or-finds the segment, waits until NPROCS have
 * arrived (so they really contend), does ITERS __atomic_fetch_add on the
 * counter (calling sched_yield() after every YIELD_EVERY of them, 0 for
 * never, so that the processes interleave instead of each finishing in
 * one time slice), waits until all NPROCS are done, and prints
 * "interleaved <n>" (how many of its increments did not directly follow
 * its previous one: at least 1, the first), "did <n>" (its increments)
 * and "counter <value>", which must be the sum of every process's "did".
 * With SECONDS (0: none), a process stops early once that long has passed
 * since all arrived: on an oversubscribed machine the page may move on
 * every increment, and the check needs contention, not a fixed count. The
 * counter has a page of its own; the arrival and completion counts share
 * the next page. */

int main(int argc, char **argv)
{
    setup();
    if (argc != 5 && argc != 6)
        FAIL("usage: counter KEY NPROCS ITERS YIELD_EVERY [SECONDS]");
    key_t key = (key_t)arg_num(argv[1]);
    uint64_t nprocs = (uint64_t)arg_num(argv[2]);
    long long iters = arg_num(argv[3]);
    long long yield_every = arg_num(argv[4]);
    double seconds = argc == 6 ? (double)arg_num(argv[5]) : 0.0;
    long page = page_size();
    char *p = get_attach(key, 2 * page, IPC_CREAT, NULL);
    uint64_t *counter = (uint64_t *)p;
    uint64_t *arrived = (uint64_t *)(p + page);
    uint64_t *done = arrived + 1;

    __atomic_fetch_add(arrived, 1, __ATOMIC_SEQ_CST);
    SPIN_UNTIL(__atomic_load_n(arrived, __ATOMIC_SEQ_CST) >= nprocs, "all to arrive");
    uint64_t last = UINT64_MAX - 1, interleaved = 0;
    double start = now_s();
    long long i;
    for (i = 0; i < iters; i++) {
        if (seconds > 0 && now_s() - start > seconds)
            break;
        uint64_t old = __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
        if (old != last + 1)
            interleaved++;
        last = old;
        if (yield_every > 0 && (i + 1) % yield_every == 0)
            sched_yield();
    }
    __atomic_fetch_add(done, 1, __ATOMIC_SEQ_CST);
    SPIN_UNTIL(__atomic_load_n(done, __ATOMIC_SEQ_CST) >= nprocs, "all to finish");
    printf("interleaved %llu\n", (unsigned long long)interleaved);
    printf("did %lld\n", i);
    printf("counter %llu\n", (unsigned long long)__atomic_load_n(counter, __ATOMIC_SEQ_CST));
    CHECK(shmdt(p) == 0);
    return 0;
}
