/* false_share - two processes on two nodes each increment their own word
 * of one page with plain (non-atomic) increments; the page moves between
 * the nodes on every conflicting access, and neither word may lose an
 * update.
 *
 *   false_share KEY WHICH ITERS [SECONDS]
 *
 * WHICH (0 or 1) picks the int at index WHICH of page 0 (adjacent words);
 * a start and an end barrier live on page 1. Each increment is followed
 * by sched_yield(), so the two loops really interleave (and the page
 * really bounces); "moves <n>" says how often this process saw the
 * other's word change during its loop, "did <n>" how many increments it
 * made: ITERS, or fewer if SECONDS (0: none) passed first (on an
 * oversubscribed machine the page may move on every increment; the check
 * needs contention, not a fixed count). Then prints "words <w0> <w1>",
 * which must be the two processes' "did". */

int main(int argc, char **argv)
{
    setup();
    if (argc != 4 && argc != 5)
        FAIL("usage: false_share KEY WHICH ITERS [SECONDS]");
    key_t key = (key_t)arg_num(argv[1]);
    long long which = arg_num(argv[2]);
    long long iters = arg_num(argv[3]);
    double seconds = argc == 5 ? (double)arg_num(argv[4]) : 0.0;
    CHECK(which == 0 || which == 1);
    long page = page_size();
    char *p = get_attach(key, 2 * page, IPC_CREAT, NULL);
    volatile int *words = (volatile int *)p;
    volatile int *mine = &words[which];
    volatile int *theirs = &words[1 - which];
    int *arrived = (int *)(p + page);
    int *done = arrived + 1;

    __atomic_fetch_add(arrived, 1, __ATOMIC_SEQ_CST);
    SPIN_UNTIL(__atomic_load_n(arrived, __ATOMIC_SEQ_CST) >= 2, "the other to arrive");
    int last = theirs[0], moves = 0;
    double start = now_s();
    long long i;
    for (i = 0; i < iters; i++) {
        if (seconds > 0 && now_s() - start > seconds)
            break;
        (*mine)++;
        if (*theirs != last) {
            last = *theirs;
            moves++;
        }
        sched_yield();
    }
    __atomic_fetch_add(done, 1, __ATOMIC_SEQ_CST);
    SPIN_UNTIL(__atomic_load_n(done, __ATOMIC_SEQ_CST) >= 2, "the other to finish");
    printf("moves %d\n", moves);
    printf("did %lld\n", i);
    printf("words %d %d\n", words[0], words[1]);
    CHECK(shmdt(p) == 0);
    return 0;
}
