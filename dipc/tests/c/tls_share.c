/* tls_share - a segment and a message queue shared across nodes, holding a
 * text that dipc/tests/tls.rs looks for in the traffic between the nodes.
 *
 *   put SHMKEY MSGKEY MARK   create a 64 KiB segment filled with MARK
 *                            repeated, and a queue (both homed on this node)
 *   get SHMKEY MSGKEY MARK   check every byte of the segment, then send
 *                            "MARK says hello" (type 1) to the queue
 *   recv SHMKEY MSGKEY MARK  receive that message and print it
 *                            ("got <text>"), remove both objects
 */
#include <sys/msg.h>

#define SIZE (64 * 1024)

struct msg {
    long mtype;
    char mtext[256];
};

int main(int argc, char **argv)
{
    setup();
    if (argc != 5)
        FAIL("usage: tls_share put|get|recv SHMKEY MSGKEY MARK");
    key_t skey = (key_t)arg_num(argv[2]);
    key_t mkey = (key_t)arg_num(argv[3]);
    const char *mark = argv[4];
    size_t ml = strlen(mark);
    CHECK(ml > 0 && ml < 100);
    static struct msg m;

    if (strcmp(argv[1], "put") == 0) {
        char *p = get_attach(skey, SIZE, IPC_CREAT | IPC_EXCL, NULL);
        for (size_t i = 0; i < SIZE; i++)
            p[i] = mark[i % ml];
        CHECK(shmdt(p) == 0);
        if (msgget(mkey, IPC_CREAT | IPC_EXCL | DIPC_FLAG | 0600) < 0)
            FAIL("msgget(%#x, IPC_CREAT)", (unsigned)mkey);
        puts("put");
        return 0;
    }
    int q = msgget(mkey, DIPC_FLAG | 0600);
    if (q < 0)
        FAIL("msgget(%#x)", (unsigned)mkey);
    if (strcmp(argv[1], "get") == 0) {
        const char *p = get_attach(skey, 0, 0, NULL);
        for (size_t i = 0; i < SIZE; i++)
            if (p[i] != mark[i % ml])
                FAIL("byte %zu is %#x, expected %#x", i, p[i], mark[i % ml]);
        CHECK(shmdt(p) == 0);
        m.mtype = 1;
        int n = snprintf(m.mtext, sizeof m.mtext, "%s says hello", mark);
        if (msgsnd(q, &m, (size_t)n, 0) != 0)
            FAIL("msgsnd");
        puts("verified and sent");
        return 0;
    }
    if (strcmp(argv[1], "recv") == 0) {
        ssize_t n = msgrcv(q, &m, sizeof m.mtext - 1, 1, 0);
        if (n < 0)
            FAIL("msgrcv");
        m.mtext[n] = '\0';
        printf("got %s\n", m.mtext);
        CHECK(msgctl(q, IPC_RMID, NULL) == 0);
        int id = shmget(skey, 0, DIPC_FLAG | 0600);
        CHECK(id >= 0);
        CHECK(shmctl(id, IPC_RMID, NULL) == 0);
        return 0;
    }
    FAIL("unknown mode %s", argv[1]);
}
