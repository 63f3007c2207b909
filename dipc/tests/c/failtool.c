/* failtool - distributed IPC driven line by line from stdin, for the
 * failure tests (dipc/tests/failure.rs): pages, queues and semaphores whose
 * node may die between two commands.
 *
 * Each command prints exactly one line: its result, "sigbus" when the
 * access got SIGBUS (caught, the program goes on), or "err <ENAME>" when
 * a call failed. Commands:
 *
 *   shmget KEY PAGES excl|open  "id <id>"
 *   at ID                       shmat; "attached"
 *   write PAGE VALUE            store VALUE in the first word of PAGE; "wrote"
 *   read PAGE                   load the first word of PAGE; "value <v>"
 *   touch PAGE                  read without a SIGBUS handler: "value <v>",
 *                               or the program dies of SIGBUS
 *   msgget KEY excl|open        "id <id>"
 *   msgsnd ID TYPE              "sent"
 *   msgrcv ID                   say "waiting", then block: "got <type>"
 *   semget KEY excl|open        one semaphore; "id <id>"
 *   semop ID DELTA              semop(DELTA), blocking; "ok"
 *   semwait ID                  say "waiting", then semop(-1): "ok"
 *   exit                        "bye", then exit 0
 */
#include <setjmp.h>
#include <sys/msg.h>
#include <sys/sem.h>

static char *addr;
static sigjmp_buf on_bus;
static volatile sig_atomic_t in_access;

static void bus_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    (void)uc;
    if (in_access)
        siglongjmp(on_bus, 1);
    _exit(70);
}

static void err_line(void)
{
    printf("err %s\n", strerrorname_np(errno));
}

static int get_flags(const char *how)
{
    int flags = 0600 | DIPC_FLAG;
    if (strcmp(how, "excl") == 0)
        flags |= IPC_CREAT | IPC_EXCL;
    return flags;
}

static void print_id(int id)
{
    if (id < 0)
        err_line();
    else
        printf("id %d\n", id);
}

int main(void)
{
    setup();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = bus_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    CHECK(sigaction(SIGBUS, &sa, NULL) == 0);
    long ps = page_size();
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "", a[64] = "", b[64] = "", c[64] = "";
        if (sscanf(line, "%31s %63s %63s %63s", cmd, a, b, c) < 1)
            continue;
        errno = 0;
        if (strcmp(cmd, "shmget") == 0) {
            print_id(shmget((key_t)arg_num(a), (size_t)(arg_num(b) * ps), get_flags(c)));
        } else if (strcmp(cmd, "at") == 0) {
            void *p = shmat((int)arg_num(a), NULL, 0);
            if (p == (void *)-1) {
                err_line();
            } else {
                addr = p;
                puts("attached");
            }
        } else if (strcmp(cmd, "write") == 0 || strcmp(cmd, "read") == 0) {
            CHECK(addr != NULL);
            volatile uint64_t *w = (volatile uint64_t *)(addr + arg_num(a) * ps);
            if (sigsetjmp(on_bus, 1) != 0) {
                in_access = 0;
                puts("sigbus");
                continue;
            }
            in_access = 1;
            uint64_t v = 0;
            if (cmd[0] == 'w')
                *w = (uint64_t)arg_num(b);
            else
                v = *w;
            in_access = 0;
            if (cmd[0] == 'w')
                puts("wrote");
            else
                printf("value %llu\n", (unsigned long long)v);
        } else if (strcmp(cmd, "touch") == 0) {
            CHECK(addr != NULL);
            signal(SIGBUS, SIG_DFL);
            volatile uint64_t *w = (volatile uint64_t *)(addr + arg_num(a) * ps);
            printf("value %llu\n", (unsigned long long)*w);
        } else if (strcmp(cmd, "msgget") == 0) {
            print_id(msgget((key_t)arg_num(a), get_flags(b)));
        } else if (strcmp(cmd, "msgsnd") == 0) {
            struct {
                long mtype;
                char mtext[8];
            } m = {arg_num(b), "failure"};
            if (msgsnd((int)arg_num(a), &m, sizeof m.mtext, 0) != 0)
                err_line();
            else
                puts("sent");
        } else if (strcmp(cmd, "msgrcv") == 0) {
            struct {
                long mtype;
                char mtext[64];
            } m;
            puts("waiting");
            if (msgrcv((int)arg_num(a), &m, sizeof m.mtext, 0, 0) < 0)
                err_line();
            else
                printf("got %ld\n", m.mtype);
        } else if (strcmp(cmd, "semget") == 0) {
            print_id(semget((key_t)arg_num(a), 1, get_flags(b)));
        } else if (strcmp(cmd, "semop") == 0 || strcmp(cmd, "semwait") == 0) {
            struct sembuf op = {0, -1, 0};
            if (cmd[3] == 'o')
                op.sem_op = (short)arg_num(b);
            else
                puts("waiting");
            if (semop((int)arg_num(a), &op, 1) != 0)
                err_line();
            else
                puts("ok");
        } else if (strcmp(cmd, "exit") == 0) {
            puts("bye");
            return 0;
        } else {
            printf("unknown command %s\n", cmd);
        }
    }
    return 0;
}
