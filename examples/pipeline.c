/*
 * pipeline.c - a producer/consumer pipeline over message queues.
 *
 *   pipeline [RANK NPROCS] [KEY [ITEMS]]        (or DIPC_RANK/DIPC_NODES)
 *
 * NPROCS >= 2 stages: rank 0 produces ITEMS numbered items, each middle
 * rank r transforms every item it receives and passes it on, the last
 * rank consumes them. Stage r reads queue KEY+r-1 and writes queue KEY+r;
 * with IPC_DIPC every queue lives on the node of the stage that created it
 * first and the stages may run on different machines. Messages of type 1
 * carry items, one message of type 2 ends the stream. Each stage removes
 * its input queue once the stream ended.
 *
 * The consumer checks every item (order and value) against what the
 * stages must have done and prints:
 *   pipeline stages=.. items=.. sum=<sum> ok
 */
#include "dipc_example.h"

struct item {
    long mtype;
    struct {
        long seq;
        long value;
        char trail[32]; /* one letter per stage that handled it */
    } body;
};

static long transform(long v, int stage)
{
    return (v * 3 + stage) % 1000003;
}

static int open_queue(key_t key)
{
    int q = msgget(key, IPC_CREAT | EX_DIPC | 0600);
    if (q < 0)
        EX_FAIL("msgget(%#x)", (unsigned)key);
    return q;
}

static void send_item(int q, const struct item *it)
{
    while (msgsnd(q, it, sizeof it->body, 0) < 0)
        if (errno != EINTR)
            EX_FAIL("msgsnd");
}

static void recv_item(int q, struct item *it)
{
    while (msgrcv(q, it, sizeof it->body, 0, 0) < 0)
        if (errno != EINTR)
            EX_FAIL("msgrcv");
}

int main(int argc, char **argv)
{
    struct ex_args a;
    int i = ex_parse(argc, argv, &a, 0x5000);
    long items = argc > i ? ex_num(argv[i++], "ITEMS") : 2000;
    if (a.nprocs < 2 || a.nprocs > 30 || items < 0)
        EX_FAIL("need 2 <= NPROCS <= 30 and ITEMS >= 0");
    int last = a.nprocs - 1;
    int in = a.rank > 0 ? open_queue(a.key + a.rank - 1) : -1;
    int out = a.rank < last ? open_queue(a.key + a.rank) : -1;
    struct item it;
    printf("rank %d/%d: msq ids in %d, out %d\n", a.rank, a.nprocs, in, out);

    if (a.rank == 0) {
        for (long s = 0; s < items; s++) {
            memset(&it, 0, sizeof it);
            it.mtype = 1;
            it.body.seq = s;
            it.body.value = s;
            it.body.trail[0] = 'a';
            send_item(out, &it);
        }
        memset(&it, 0, sizeof it);
        it.mtype = 2;
        send_item(out, &it);
        return 0;
    }

    long seen = 0, sum = 0;
    for (;;) {
        recv_item(in, &it);
        if (it.mtype == 2)
            break;
        if (it.body.seq != seen)
            EX_FAIL("stage %d: item %ld arrived where %ld was due", a.rank, it.body.seq, seen);
        seen++;
        if (a.rank < last) {
            it.body.value = transform(it.body.value, a.rank);
            size_t len = strlen(it.body.trail);
            if (len + 1 < sizeof it.body.trail)
                it.body.trail[len] = (char)('a' + a.rank);
            send_item(out, &it);
            continue;
        }
        /* The consumer: redo every stage's work and compare. */
        long want = it.body.seq;
        char trail[32] = "a";
        for (int st = 1; st < last; st++) {
            want = transform(want, st);
            size_t len = strlen(trail);
            if (len + 1 < sizeof trail)
                trail[len] = (char)('a' + st);
        }
        if (it.body.value != want || strcmp(it.body.trail, trail) != 0)
            EX_FAIL("item %ld: value %ld trail %s, want %ld %s", it.body.seq, it.body.value,
                    it.body.trail, want, trail);
        sum += it.body.value;
    }
    if (seen != items)
        EX_FAIL("stage %d saw %ld items of %ld", a.rank, seen, items);
    if (out >= 0)
        send_item(out, &it); /* pass the end on */
    msgctl(in, IPC_RMID, NULL);
    if (a.rank == last)
        printf("pipeline stages=%d items=%ld sum=%ld ok\n", a.nprocs, items, sum);
    return 0;
}
