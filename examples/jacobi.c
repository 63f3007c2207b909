/*
 * jacobi.c - 2-D Jacobi heat diffusion on a grid in one shared segment.
 *
 *   jacobi [RANK NPROCS] [KEY [N [SWEEPS]]]     (or DIPC_RANK/DIPC_NODES)
 *
 * An N x N plate whose top edge is held at 100 degrees and other edges at
 * 0 relaxes for SWEEPS sweeps. Both grids (current and next) live in one
 * System V segment (key KEY); the interior rows are split into NPROCS
 * contiguous bands, one per process, and a semaphore barrier (key KEY+1)
 * separates the sweeps. With IPC_DIPC the processes may run on different
 * machines: each sweep reads its neighbours' boundary rows through the
 * distributed segment.
 *
 * Rank 0 then recomputes the same sweeps alone in private memory and
 * compares bit for bit (same arithmetic in the same order, so the result
 * must be identical), printing:
 *   jacobi N=.. sweeps=.. procs=.. hash=<fnv64> center=<value> serial=equal
 */
#include "dipc_example.h"

static void sweep_rows(const double *cur, double *next, int n, int lo, int hi)
{
    for (int i = lo; i < hi; i++)
        for (int j = 1; j < n - 1; j++)
            next[i * n + j] = 0.25 * (cur[(i - 1) * n + j] + cur[(i + 1) * n + j] +
                                      cur[i * n + j - 1] + cur[i * n + j + 1]);
}

static void init_grid(double *g, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            g[i * n + j] = (i == 0) ? 100.0 : 0.0;
}

int main(int argc, char **argv)
{
    struct ex_args a;
    int i = ex_parse(argc, argv, &a, 0x4a00);
    int n = argc > i ? (int)ex_num(argv[i++], "N") : 64;
    int sweeps = argc > i ? (int)ex_num(argv[i++], "SWEEPS") : 40;
    if (n < 3 || n > 4096 || sweeps < 0 || a.nprocs > n - 2)
        EX_FAIL("need 3 <= N <= 4096, SWEEPS >= 0, NPROCS <= N-2");
    size_t cells = (size_t)n * (size_t)n, bytes = 2 * cells * sizeof(double);

    int shmid = a.rank == 0 ? ex_create_shm(a.key, bytes) : ex_wait_shm(a.key, bytes);
    double *grid = shmat(shmid, NULL, 0);
    if (grid == (void *)-1)
        EX_FAIL("shmat");
    if (a.rank == 0) {
        init_grid(grid, n);
        init_grid(grid + cells, n); /* edges of the second grid too */
    }
    /* The set appears after the grid is initialised (rank 0 creates it
     * last), and its first barrier holds everybody until SETALL. */
    struct ex_barrier b = ex_barrier_open(a.key + 1, &a);
    printf("rank %d/%d: shm id %d, sem id %d\n", a.rank, a.nprocs, shmid, b.semid);
    ex_barrier_wait(&b);

    int interior = n - 2;
    int lo = 1 + interior * a.rank / a.nprocs, hi = 1 + interior * (a.rank + 1) / a.nprocs;
    for (int s = 0; s < sweeps; s++) {
        const double *cur = grid + (size_t)(s % 2) * cells;
        double *next = grid + (size_t)((s + 1) % 2) * cells;
        sweep_rows(cur, next, n, lo, hi);
        ex_barrier_wait(&b);
    }
    const double *result = grid + (size_t)(sweeps % 2) * cells;

    if (a.rank == 0) {
        double *s0 = malloc(2 * cells * sizeof(double));
        if (s0 == NULL)
            EX_FAIL("malloc");
        init_grid(s0, n);
        init_grid(s0 + cells, n);
        for (int s = 0; s < sweeps; s++)
            sweep_rows(s0 + (size_t)(s % 2) * cells, s0 + (size_t)((s + 1) % 2) * cells, n,
                       1, n - 1);
        int equal = memcmp(s0 + (size_t)(sweeps % 2) * cells, result, cells * sizeof(double)) == 0;
        printf("jacobi N=%d sweeps=%d procs=%d hash=%016llx center=%.12g serial=%s\n", n,
               sweeps, a.nprocs, (unsigned long long)ex_fnv(result, cells * sizeof(double)),
               result[(n / 2) * n + n / 2], equal ? "equal" : "DIFFERENT");
        free(s0);
        ex_barrier_last(&b, &a);
        shmdt(grid);
        shmctl(shmid, IPC_RMID, NULL);
        semctl(b.semid, 0, IPC_RMID);
        return equal ? 0 : 1;
    }
    ex_barrier_last(&b, &a);
    shmdt(grid);
    return 0;
}
