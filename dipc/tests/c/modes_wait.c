/* modes_wait - how long a read waits for a page another node holds within
 * its hold-time quantum.
 *
 *   modes_wait write KEY    find-or-create a one-page segment, print its id,
 *                           then on each stdin line "go": store 42 in the
 *                           first word, print "wrote"
 *   modes_wait read KEY     find-or-create it, print its id, then on each
 *                           stdin line "go": read the first word, print
 *                           "read <value> <milliseconds the read took>"
 *
 * End of input ends the program (status 0). */

int main(int argc, char **argv)
{
    setup();
    if (argc != 3)
        FAIL("usage: modes_wait write|read KEY");
    int writer = strcmp(argv[1], "write") == 0;
    CHECK(writer || strcmp(argv[1], "read") == 0);
    key_t key = (key_t)arg_num(argv[2]);
    volatile uint64_t *word = get_attach(key, (size_t)page_size(), IPC_CREAT, NULL);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "go", 2) != 0)
            continue;
        if (writer) {
            __atomic_store_n(word, 42, __ATOMIC_SEQ_CST);
            printf("wrote\n");
        } else {
            double t0 = now_s();
            uint64_t v = __atomic_load_n(word, __ATOMIC_SEQ_CST);
            double ms = (now_s() - t0) * 1000.0;
            printf("read %llu %.0f\n", (unsigned long long)v, ms);
        }
    }
    return 0;
}
