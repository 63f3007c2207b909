/* sb - the store-buffering litmus test across two nodes with seq_cst
 * atomics: process 0 runs x=1; r1=y and process 1 runs y=1; r2=x, over
 * many rounds. Sequential consistency forbids r1 == 0 && r2 == 0.
 *
 *   sb KEY ME ROUNDS        (ME is 0 or 1; 0 creates the segment)
 *
 * Layout: x on page 0, y on page 1, process i's progress counter and
 * result on page 2+i. Round r: reset my variable to 0, announce 2r-1 and
 * wait for the other's 2r-1 (so both variables are 0), store mine, load
 * theirs, publish the loaded value, announce 2r and wait for the other's
 * 2r, read the other's value. Each process counts the four outcomes and
 * prints "outcomes <r1r2=00> <01> <10> <11>". */

int main(int argc, char **argv)
{
    setup();
    if (argc != 4)
        FAIL("usage: sb KEY ME ROUNDS");
    key_t key = (key_t)arg_num(argv[1]);
    int me = (int)arg_num(argv[2]);
    CHECK(me == 0 || me == 1);
    uint64_t rounds = (uint64_t)arg_num(argv[3]);
    long page = page_size();

    char *p = get_attach(key, me == 0 ? 4 * page : 0, me == 0 ? IPC_CREAT | IPC_EXCL : 0, NULL);
    uint64_t *var[2] = {(uint64_t *)p, (uint64_t *)(p + page)};
    uint64_t *pos[2] = {(uint64_t *)(p + 2 * page), (uint64_t *)(p + 3 * page)};
    uint64_t *res[2] = {pos[0] + 1, pos[1] + 1};
    int other = 1 - me;
    uint64_t outcomes[4] = {0, 0, 0, 0};

    for (uint64_t r = 1; r <= rounds; r++) {
        __atomic_store_n(var[me], 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(pos[me], 2 * r - 1, __ATOMIC_SEQ_CST);
        SPIN_UNTIL(__atomic_load_n(pos[other], __ATOMIC_SEQ_CST) >= 2 * r - 1,
                   "the other to start round %llu", (unsigned long long)r);

        __atomic_store_n(var[me], 1, __ATOMIC_SEQ_CST);
        uint64_t seen = __atomic_load_n(var[other], __ATOMIC_SEQ_CST);

        __atomic_store_n(res[me], seen, __ATOMIC_SEQ_CST);
        __atomic_store_n(pos[me], 2 * r, __ATOMIC_SEQ_CST);
        SPIN_UNTIL(__atomic_load_n(pos[other], __ATOMIC_SEQ_CST) >= 2 * r,
                   "the other to finish round %llu", (unsigned long long)r);
        uint64_t theirs = __atomic_load_n(res[other], __ATOMIC_SEQ_CST);
        CHECK(seen <= 1 && theirs <= 1);
        uint64_t r1 = me == 0 ? seen : theirs;
        uint64_t r2 = me == 0 ? theirs : seen;
        outcomes[r1 * 2 + r2]++;
        if (r1 == 0 && r2 == 0 && outcomes[0] == 1)
            printf("round %llu: r1 == 0 && r2 == 0\n", (unsigned long long)r);
    }
    printf("outcomes %llu %llu %llu %llu\n", (unsigned long long)outcomes[0],
           (unsigned long long)outcomes[1], (unsigned long long)outcomes[2],
           (unsigned long long)outcomes[3]);
    CHECK(shmdt(p) == 0);
    return 0;
}
