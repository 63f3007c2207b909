/* msgsem_msg.c - distributed message queues.
 *
 *   create KEY             msgget(IPC_CREAT|IPC_EXCL|IPC_DIPC): "id N"
 *   pong KEY N             serve N requests (types 1..3) with replies
 *                          (request type + 3), content checked both ways
 *   ping KEY N             send N requests, check each reply
 *   recv KEY TYPE          install a SIGUSR1 handler without SA_RESTART,
 *                          say "waiting", block in msgrcv: "got T TEXT",
 *                          or "errno NAME" (and "signals N")
 *   send KEY TYPE TEXT     msgsnd: "sent"
 *   rmid KEY               msgctl(IPC_RMID): "removed"
 *   stat KEY               msgctl(IPC_STAT): "qnum N qbytes N"
 *   info KEY               msgctl(IPC_INFO) on the queue's id: the limits
 *   bigping KEY SIZE N     as ping with N requests of SIZE bytes (up to
 *   bigpong KEY SIZE N     64 KiB + 1) and replies of SIZE bytes
 *   sendsize KEY SIZE      msgsnd of SIZE bytes: "sent" or "errno NAME"
 *   badbuf KEY             texts half in a page that cannot be read or
 *                          written, next to a kernel queue: the same
 *                          EFAULTs, nothing sent, the message a failed
 *                          msgrcv took lost, and the queue still works:
 *                          "badbuf ok"
 */

#include <sys/mman.h>

/* The text of message i: its length and bytes depend on i. */
static size_t text_of(long i, int reply, char *buf)
{
    size_t len = 8 + (size_t)(i * 37 % 300);
    for (size_t k = 0; k < len; k++)
        buf[k] = (char)((i * 131 + k * 7 + reply * 29) & 0xff);
    return len;
}

struct msg {
    long mtype;
    char mtext[8192];
};

/* Messages up to a raised msgmax (64 KiB), one byte more to exceed it. */
struct bigmsg {
    long mtype;
    char mtext[65536 + 1];
};

static void big_text(long i, int reply, size_t len, char *buf)
{
    for (size_t k = 0; k < len; k++)
        buf[k] = (char)((i * 131 + k * 7 + (k >> 8) + reply * 29) & 0xff);
}

static int get(const char *key, int flags)
{
    int id = msgget((key_t)arg_num(key), flags | IPC_DIPC | 0600);
    if (id < 0)
        FAIL("msgget(%s)", key);
    return id;
}

static volatile sig_atomic_t signals;

static void on_usr1(int sig)
{
    (void)sig;
    signals++;
}

int main(int argc, char **argv)
{
    setup();
    if (argc < 3)
        FAIL("usage");
    const char *cmd = argv[1];
    static struct msg m;
    static char want[8192];

    if (!strcmp(cmd, "create")) {
        printf("id %d\n", get(argv[2], IPC_CREAT | IPC_EXCL));
        return 0;
    }
    int id = get(argv[2], 0);
    if (!strcmp(cmd, "pong") || !strcmp(cmd, "ping")) {
        long n = arg_num(argv[3]);
        int pong = !strcmp(cmd, "pong");
        for (long i = 0; i < n; i++) {
            long type = 1 + i % 3;
            if (pong) {
                /* Any request: the lowest type <= 3 waiting. */
                ssize_t got = msgrcv(id, &m, sizeof m.mtext, -3, 0);
                if (got < 0)
                    FAIL("msgrcv request %ld", i);
                size_t len = text_of(i, 0, want);
                if (m.mtype != type || (size_t)got != len || memcmp(m.mtext, want, len))
                    FAIL("request %ld: type %ld len %zd", i, m.mtype, got);
                m.mtype = type + 3;
                len = text_of(i, 1, m.mtext);
                if (msgsnd(id, &m, len, 0) < 0)
                    FAIL("msgsnd reply %ld", i);
            } else {
                m.mtype = type;
                size_t len = text_of(i, 0, m.mtext);
                if (msgsnd(id, &m, len, 0) < 0)
                    FAIL("msgsnd request %ld", i);
                ssize_t got = msgrcv(id, &m, sizeof m.mtext, type + 3, 0);
                if (got < 0)
                    FAIL("msgrcv reply %ld", i);
                len = text_of(i, 1, want);
                if (m.mtype != type + 3 || (size_t)got != len || memcmp(m.mtext, want, len))
                    FAIL("reply %ld: type %ld len %zd", i, m.mtype, got);
            }
        }
        printf("done %ld\n", n);
        return 0;
    }
    if (!strcmp(cmd, "bigping") || !strcmp(cmd, "bigpong")) {
        static struct bigmsg b;
        static char bwant[sizeof b.mtext];
        size_t len = (size_t)arg_num(argv[3]);
        long n = arg_num(argv[4]);
        int pong = !strcmp(cmd, "bigpong");
        if (len > sizeof b.mtext)
            FAIL("size %zu", len);
        for (long i = 0; i < n; i++) {
            if (!pong) {
                b.mtype = 1;
                big_text(i, 0, len, b.mtext);
                if (msgsnd(id, &b, len, 0) < 0)
                    FAIL("msgsnd request %ld of %zu bytes", i, len);
            }
            long want_type = pong ? 1 : 4;
            ssize_t got = msgrcv(id, &b, sizeof b.mtext, want_type, 0);
            if (got < 0)
                FAIL("msgrcv %ld", i);
            big_text(i, !pong, len, bwant);
            if ((size_t)got != len || memcmp(b.mtext, bwant, len))
                FAIL("message %ld: %zd bytes, expected %zu", i, got, len);
            if (pong) {
                b.mtype = 4;
                big_text(i, 1, len, b.mtext);
                if (msgsnd(id, &b, len, 0) < 0)
                    FAIL("msgsnd reply %ld of %zu bytes", i, len);
            }
        }
        printf("done %ld\n", n);
        return 0;
    }
    if (!strcmp(cmd, "badbuf")) {
        /* mtype and 100 bytes of text at the end of a page; the page after
         * it can be neither read nor written (the kernel reads and writes
         * the text itself, in the middle of the call). */
        long ps = sysconf(_SC_PAGESIZE);
        char *map = mmap(NULL, (size_t)ps * 2, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED || mprotect(map + ps, (size_t)ps, PROT_NONE) != 0)
            FAIL("mmap");
        struct msg *edge = (struct msg *)(map + ps - sizeof(long) - 100);
        static struct msg good, got;
        int kq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
        if (kq < 0)
            FAIL("msgget(kernel)");
        int qs[2] = {id, kq};
        for (int i = 0; i < 2; i++) {
            int q = qs[i];
            const char *who = i ? "kernel" : "dipc";
            struct msqid_ds ds;
            edge->mtype = 1;
            memset(edge->mtext, 'e', 100);
            errno = 0;
            if (msgsnd(q, edge, 3000, IPC_NOWAIT) != -1 || errno != EFAULT)
                FAIL("%s: msgsnd from a bad buffer: errno %d", who, errno);
            if (msgctl(q, IPC_STAT, &ds) != 0 || ds.msg_qnum != 0)
                FAIL("%s: a failed msgsnd sent something", who);
            good.mtype = 2;
            for (int k = 0; k < 3000; k++)
                good.mtext[k] = (char)(k * 7 + i);
            if (msgsnd(q, &good, 3000, IPC_NOWAIT) != 0 || msgsnd(q, &good, 3000, IPC_NOWAIT) != 0)
                FAIL("%s: msgsnd after the bad one", who);
            errno = 0;
            if (msgrcv(q, edge, 3000, 0, IPC_NOWAIT) != -1 || errno != EFAULT)
                FAIL("%s: msgrcv into a bad buffer: errno %d", who, errno);
            if (msgctl(q, IPC_STAT, &ds) != 0 || ds.msg_qnum != 1)
                FAIL("%s: qnum %lu after a failed msgrcv", who, (unsigned long)ds.msg_qnum);
            if (msgrcv(q, &got, sizeof got.mtext, 0, IPC_NOWAIT) != 3000 || got.mtype != 2 ||
                memcmp(got.mtext, good.mtext, 3000) != 0)
                FAIL("%s: msgrcv after the bad one", who);
            /* Fits the readable part: works from the edge both ways (the
             * failed msgrcv wrote what fitted before the bad page). */
            memset(edge->mtext, 'e', 100);
            if (msgsnd(q, edge, 100, IPC_NOWAIT) != 0)
                FAIL("%s: msgsnd of a text that fits before the bad page", who);
            memset(edge->mtext, 0, 100);
            ssize_t n = msgrcv(q, edge, 100, 0, IPC_NOWAIT);
            if (n != 100 || edge->mtext[0] != 'e' || edge->mtext[99] != 'e')
                FAIL("%s: msgrcv of a text that fits before the bad page: %zd", who, n);
        }
        msgctl(kq, IPC_RMID, NULL);
        printf("badbuf ok\n");
        return 0;
    }
    if (!strcmp(cmd, "sendsize")) {
        static struct bigmsg b;
        size_t len = (size_t)arg_num(argv[3]);
        if (len > sizeof b.mtext)
            FAIL("size %zu", len);
        b.mtype = 1;
        memset(b.mtext, 'x', len);
        if (msgsnd(id, &b, len, IPC_NOWAIT) < 0)
            printf("errno %s\n", strerrorname_np(errno));
        else
            printf("sent\n");
        return 0;
    }
    if (!strcmp(cmd, "recv")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sa.sa_flags = 0; /* no SA_RESTART: msgrcv must fail with EINTR */
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGUSR1, &sa, NULL) < 0)
            FAIL("sigaction");
        /* A first call that cannot wait sets up what the blocking one
         * needs (connections, the node's lookup of the id), so that it
         * reaches the queue's home right after "waiting". */
        long type = arg_num(argv[3]);
        if (msgrcv(id, &m, sizeof m.mtext - 1, type, IPC_NOWAIT) >= 0 || errno != ENOMSG)
            FAIL("msgrcv(IPC_NOWAIT) on an empty queue");
        printf("waiting\n");
        ssize_t got = msgrcv(id, &m, sizeof m.mtext - 1, type, 0);
        if (got < 0) {
            printf("errno %s\n", strerrorname_np(errno));
        } else {
            m.mtext[got] = '\0';
            printf("got %ld %s\n", m.mtype, m.mtext);
        }
        printf("signals %d\n", (int)signals);
        return 0;
    }
    if (!strcmp(cmd, "send")) {
        m.mtype = arg_num(argv[3]);
        size_t len = strlen(argv[4]);
        memcpy(m.mtext, argv[4], len);
        if (msgsnd(id, &m, len, 0) < 0)
            FAIL("msgsnd");
        printf("sent\n");
        return 0;
    }
    if (!strcmp(cmd, "rmid")) {
        if (msgctl(id, IPC_RMID, NULL) < 0)
            FAIL("msgctl(IPC_RMID)");
        printf("removed\n");
        return 0;
    }
    if (!strcmp(cmd, "info")) {
        struct msginfo mi;
        if (msgctl(id, IPC_INFO, (struct msqid_ds *)&mi) < 0)
            FAIL("msgctl(IPC_INFO)");
        printf("msgmax %d msgmnb %d msgmni %d\n", mi.msgmax, mi.msgmnb, mi.msgmni);
        return 0;
    }
    if (!strcmp(cmd, "stat")) {
        struct msqid_ds ds;
        if (msgctl(id, IPC_STAT, &ds) < 0)
            FAIL("msgctl(IPC_STAT)");
        printf("qnum %lu qbytes %lu\n", (unsigned long)ds.msg_qnum,
               (unsigned long)ds.msg_qbytes);
        return 0;
    }
    FAIL("unknown command %s", cmd);
}
