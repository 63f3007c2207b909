/*
 * matmul.c - blocked matrix multiply C = A x B across processes.
 *
 *   matmul [RANK NPROCS] [KEY [N [BLOCK]]]      (or DIPC_RANK/DIPC_NODES)
 *
 * A, B and C (N x N doubles) live in one System V segment (key KEY). Rank
 * 0 fills A and B; C is cut into BLOCK x BLOCK tiles dealt round robin to
 * the processes, each computing its tiles with a blocked inner loop (the
 * k dimension in BLOCK steps too, for cache reuse). Semaphore barriers
 * (key KEY+1) separate filling, computing and checking. With IPC_DIPC the
 * processes may run on different machines: A and B are read remotely,
 * each tile of C is written where it is computed.
 *
 * Rank 0 then multiplies alone in private memory with the same loop order
 * and compares bit for bit, printing:
 *   matmul N=.. block=.. procs=.. hash=<fnv64> trace=<value> serial=equal
 */
#include "dipc_example.h"

static void fill(double *a, double *b, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            a[i * n + j] = (double)((i * 7 + j * 3) % 11) - 5.0;
            b[i * n + j] = (double)((i * 5 + j * 13) % 17) / 8.0;
        }
}

/* C's tile (bi, bj): C[i][j] = sum over k of A[i][k] * B[k][j], k blocked. */
static void tile(const double *a, const double *b, double *c, int n, int bs, int bi, int bj)
{
    int i1 = bi + bs < n ? bi + bs : n, j1 = bj + bs < n ? bj + bs : n;
    for (int i = bi; i < i1; i++)
        for (int j = bj; j < j1; j++)
            c[i * n + j] = 0.0;
    for (int bk = 0; bk < n; bk += bs) {
        int k1 = bk + bs < n ? bk + bs : n;
        for (int i = bi; i < i1; i++)
            for (int k = bk; k < k1; k++) {
                double aik = a[i * n + k];
                for (int j = bj; j < j1; j++)
                    c[i * n + j] += aik * b[k * n + j];
            }
    }
}

int main(int argc, char **argv)
{
    struct ex_args a;
    int i = ex_parse(argc, argv, &a, 0x4d00);
    int n = argc > i ? (int)ex_num(argv[i++], "N") : 64;
    int bs = argc > i ? (int)ex_num(argv[i++], "BLOCK") : 16;
    if (n < 1 || n > 2048 || bs < 1)
        EX_FAIL("need 1 <= N <= 2048, BLOCK >= 1");
    size_t cells = (size_t)n * (size_t)n, bytes = 3 * cells * sizeof(double);

    int shmid = a.rank == 0 ? ex_create_shm(a.key, bytes) : ex_wait_shm(a.key, bytes);
    double *m = shmat(shmid, NULL, 0);
    if (m == (void *)-1)
        EX_FAIL("shmat");
    double *ma = m, *mb = m + cells, *mc = m + 2 * cells;
    if (a.rank == 0)
        fill(ma, mb, n);
    struct ex_barrier b = ex_barrier_open(a.key + 1, &a);
    printf("rank %d/%d: shm id %d, sem id %d\n", a.rank, a.nprocs, shmid, b.semid);
    ex_barrier_wait(&b);

    int t = 0;
    for (int bi = 0; bi < n; bi += bs)
        for (int bj = 0; bj < n; bj += bs, t++)
            if (t % a.nprocs == a.rank)
                tile(ma, mb, mc, n, bs, bi, bj);
    ex_barrier_wait(&b);

    if (a.rank == 0) {
        double *s = malloc(3 * cells * sizeof(double));
        if (s == NULL)
            EX_FAIL("malloc");
        fill(s, s + cells, n);
        for (int bi = 0; bi < n; bi += bs)
            for (int bj = 0; bj < n; bj += bs)
                tile(s, s + cells, s + 2 * cells, n, bs, bi, bj);
        int equal = memcmp(s + 2 * cells, mc, cells * sizeof(double)) == 0;
        double trace = 0.0;
        for (int k = 0; k < n; k++)
            trace += mc[k * n + k];
        printf("matmul N=%d block=%d procs=%d hash=%016llx trace=%.17g serial=%s\n", n, bs,
               a.nprocs, (unsigned long long)ex_fnv(mc, cells * sizeof(double)), trace,
               equal ? "equal" : "DIFFERENT");
        free(s);
        ex_barrier_last(&b, &a);
        shmdt(m);
        shmctl(shmid, IPC_RMID, NULL);
        semctl(b.semid, 0, IPC_RMID);
        return equal ? 0 : 1;
    }
    ex_barrier_last(&b, &a);
    shmdt(m);
    return 0;
}
