/* mp - the message-passing litmus test across two nodes: the writer
 * stores data words, then a flag (seq_cst); the reader spins on the flag
 * (seq_cst) and must then see the data of that round, never older.
 *
 *   mp writer KEY ROUNDS LAYOUT
 *   mp reader KEY ROUNDS LAYOUT
 *
 * LAYOUT "split": data on page 1, flag on page 2; "same": data and flag
 * on page 1 (the flag 2 KiB after the data). The reader's
 * acknowledgement of each round is on page 0; the writer starts round r
 * only after the reader acknowledged round r-1, so in round r the data
 * must be exactly round r's. The writer creates the segment, the reader
 * finds it by key. Both print "rounds <n> stale <count>". */

#define WORDS 8

static uint64_t value(uint64_t round, int i)
{
    return round * 1000 + (uint64_t)i;
}

int main(int argc, char **argv)
{
    setup();
    if (argc != 5)
        FAIL("usage: mp writer|reader KEY ROUNDS split|same");
    int writer = strcmp(argv[1], "writer") == 0;
    CHECK(writer || strcmp(argv[1], "reader") == 0);
    key_t key = (key_t)arg_num(argv[2]);
    uint64_t rounds = (uint64_t)arg_num(argv[3]);
    int split = strcmp(argv[4], "split") == 0;
    CHECK(split || strcmp(argv[4], "same") == 0);
    long page = page_size();

    char *p = get_attach(key, writer ? 3 * page : 0, writer ? IPC_CREAT | IPC_EXCL : 0, NULL);
    uint64_t *ack = (uint64_t *)p;
    uint64_t *data = (uint64_t *)(p + page);
    uint64_t *flag = split ? (uint64_t *)(p + 2 * page) : (uint64_t *)(p + page + 2048);
    uint64_t stale = 0;

    for (uint64_t r = 1; r <= rounds; r++) {
        if (writer) {
            SPIN_UNTIL(__atomic_load_n(ack, __ATOMIC_SEQ_CST) == r - 1,
                       "the reader's acknowledgement of round %llu", (unsigned long long)r - 1);
            for (int i = 0; i < WORDS; i++)
                data[i] = value(r, i);
            __atomic_store_n(flag, r, __ATOMIC_SEQ_CST);
        } else {
            SPIN_UNTIL(__atomic_load_n(flag, __ATOMIC_SEQ_CST) == r,
                       "the flag of round %llu", (unsigned long long)r);
            for (int i = 0; i < WORDS; i++) {
                uint64_t v = data[i];
                if (v != value(r, i)) {
                    if (stale++ == 0)
                        printf("round %llu word %d: %llu, expected %llu\n",
                               (unsigned long long)r, i, (unsigned long long)v,
                               (unsigned long long)value(r, i));
                }
            }
            __atomic_store_n(ack, r, __ATOMIC_SEQ_CST);
        }
    }
    if (writer)
        SPIN_UNTIL(__atomic_load_n(ack, __ATOMIC_SEQ_CST) == rounds, "the last acknowledgement");
    printf("rounds %llu stale %llu\n", (unsigned long long)rounds, (unsigned long long)stale);
    CHECK(shmdt(p) == 0);
    return 0;
}
