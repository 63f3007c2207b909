/* perm_check.c - run as nobody (uid/gid 65534) by dipc/tests/perms.rs,
 * on another node than the one whose root created the objects.
 *
 *   perm_check BASE ID...    (the keys base and the NOBJ ids of perm_setup)
 *
 * Every check runs the same call on the distributed object and on the
 * kernel object of the same kind and mode, and expects the same outcome,
 * which is also the one the kernel documents for "other" users. With
 * PERM_NO_UFFD=1 in the environment (no userfaultfd for unprivileged
 * processes) the one check that maps a distributed segment is skipped.
 */
static int ids[NOBJ];

#define ID(kind, is644, kernel) ids[obj_index(kind, is644, kernel)]

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(60);
    if (argc != 2 + NOBJ) {
        printf("usage: perm_check BASE ID x %d\n", NOBJ);
        return 2;
    }
    if (geteuid() == 0) {
        printf("FAIL perm_check must not run as root\n");
        return 2;
    }
    key_t base = (key_t)strtol(argv[1], NULL, 0);
    for (int i = 0; i < NOBJ; i++)
        ids[i] = atoi(argv[2 + i]);
#define KEY(kind, is644, kernel) (base + obj_index(kind, is644, kernel))
#define EXPECT_ID(what, want, kind, is644, call)                             \
    EXPECT(what, want, ID(kind, is644, 0), ID(kind, is644, 1), call)
#define EXPECT_KEY(what, want, kind, is644, call)                            \
    EXPECT(what, want, KEY(kind, is644, 0), KEY(kind, is644, 1), call)

    struct shmid_ds sds;
    struct msqid_ds mds;
    memset(&sds, 0, sizeof sds);
    memset(&mds, 0, sizeof mds);
    sds.shm_perm.uid = 65534;
    sds.shm_perm.gid = 65534;
    sds.shm_perm.mode = 0666;
    mds.msg_perm.uid = 65534;
    mds.msg_perm.gid = 65534;
    mds.msg_perm.mode = 0666;

    /* ---- shared memory: 0600 ---- */
    EXPECT_KEY("shmget 0600 asking rw", EACCES, SHM, 0, shmget(o, 4096, 0600 | f));
    EXPECT_KEY("shmget 0600 asking r", EACCES, SHM, 0, shmget(o, 4096, 0400 | f));
    EXPECT_KEY("shmget 0600 asking nothing", 0, SHM, 0, shmget(o, 4096, f));
    EXPECT_KEY("shmget 0600 IPC_CREAT existing", EACCES, SHM, 0,
           shmget(o, 4096, IPC_CREAT | 0600 | f));
    EXPECT_ID("shmat 0600 rw", EACCES, SHM, 0, (long)shmat(o, NULL, 0));
    EXPECT_ID("shmat 0600 SHM_RDONLY", EACCES, SHM, 0, (long)shmat(o, NULL, SHM_RDONLY));
    EXPECT_ID("shmctl 0600 IPC_STAT", EACCES, SHM, 0, shmctl(o, IPC_STAT, &sds));
    EXPECT_ID("shmctl 0600 IPC_SET", EPERM, SHM, 0, shmctl(o, IPC_SET, &sds));
    EXPECT_ID("shmctl 0600 IPC_RMID", EPERM, SHM, 0, shmctl(o, IPC_RMID, NULL));

    /* ---- shared memory: 0644 ---- */
    EXPECT_KEY("shmget 0644 asking r", 0, SHM, 1, shmget(o, 4096, 0444 | f));
    EXPECT_KEY("shmget 0644 asking rw", EACCES, SHM, 1, shmget(o, 4096, 0644 | f));
    EXPECT_ID("shmat 0644 rw", EACCES, SHM, 1, (long)shmat(o, NULL, 0));
    EXPECT_ID("shmctl 0644 IPC_STAT", 0, SHM, 1, shmctl(o, IPC_STAT, &sds));
    EXPECT_ID("shmctl 0644 IPC_RMID", EPERM, SHM, 1, shmctl(o, IPC_RMID, NULL));
    if (getenv("PERM_NO_UFFD")) {
        printf("SKIP shmat 0644 SHM_RDONLY of the distributed segment: no userfaultfd "
               "for unprivileged processes here\n");
    } else {
        unsigned char *pd = shmat(ID(SHM, 1, 0), NULL, SHM_RDONLY);
        int ed = errno;
        unsigned char *pk = shmat(ID(SHM, 1, 1), NULL, SHM_RDONLY);
        int ek = errno;
        same("shmat 0644 SHM_RDONLY", pd == (void *)-1 ? -1 : 0, ed, pk == (void *)-1 ? -1 : 0,
             ek);
        if (pd != (void *)-1 && pk != (void *)-1) {
            checked++;
            if (pd[0] != 0x5a || pd[4095] != 0xa5 || pk[0] != 0x5a || pk[4095] != 0xa5) {
                printf("MISMATCH read through SHM_RDONLY: dipc %#x %#x, kernel %#x %#x\n",
                       pd[0], pd[4095], pk[0], pk[4095]);
                failed++;
            } else {
                printf("same read through SHM_RDONLY: 0x5a 0xa5\n");
            }
            SAME("shmdt", (long)pd, (long)pk, shmdt((void *)o));
        } else if (pk == (void *)-1) {
            printf("WRONG the kernel refused SHM_RDONLY on 0644: %s\n", ename(ek));
            failed++;
        }
    }

    /* ---- message queues ---- */
    struct {
        long mtype;
        char text[8];
    } m = {1, "x"};
    EXPECT_KEY("msgget 0600 asking rw", EACCES, MSG, 0, msgget(o, 0600 | f));
    EXPECT_KEY("msgget 0600 asking nothing", 0, MSG, 0, msgget(o, f));
    EXPECT_ID("msgsnd 0600", EACCES, MSG, 0, msgsnd(o, &m, 1, IPC_NOWAIT));
    EXPECT_ID("msgrcv 0600", EACCES, MSG, 0, msgrcv(o, &m, 8, 0, IPC_NOWAIT));
    EXPECT_ID("msgctl 0600 IPC_STAT", EACCES, MSG, 0, msgctl(o, IPC_STAT, &mds));
    EXPECT_ID("msgctl 0600 IPC_SET", EPERM, MSG, 0, msgctl(o, IPC_SET, &mds));
    EXPECT_ID("msgctl 0600 IPC_RMID", EPERM, MSG, 0, msgctl(o, IPC_RMID, NULL));
    EXPECT_ID("msgsnd 0644", EACCES, MSG, 1, msgsnd(o, &m, 1, IPC_NOWAIT));
    EXPECT_ID("msgrcv 0644 empty", ENOMSG, MSG, 1, msgrcv(o, &m, 8, 0, IPC_NOWAIT));
    EXPECT_ID("msgctl 0644 IPC_STAT", 0, MSG, 1, msgctl(o, IPC_STAT, &mds));
    EXPECT_ID("msgctl 0644 IPC_RMID", EPERM, MSG, 1, msgctl(o, IPC_RMID, NULL));

    /* ---- semaphore sets ---- */
    struct sembuf up = {0, 1, IPC_NOWAIT}, zero = {0, 0, IPC_NOWAIT};
    EXPECT_KEY("semget 0600 asking rw", EACCES, SEM, 0, semget(o, 1, 0600 | f));
    EXPECT_ID("semop 0600 alter", EACCES, SEM, 0, semop(o, &up, 1));
    EXPECT_ID("semop 0600 wait for zero", EACCES, SEM, 0, semop(o, &zero, 1));
    EXPECT_ID("semctl 0600 GETVAL", EACCES, SEM, 0, semctl(o, 0, GETVAL));
    EXPECT_ID("semctl 0600 IPC_RMID", EPERM, SEM, 0, semctl(o, 0, IPC_RMID));
    EXPECT_ID("semop 0644 alter", EACCES, SEM, 1, semop(o, &up, 1));
    EXPECT_ID("semop 0644 wait for zero", 0, SEM, 1, semop(o, &zero, 1));
    EXPECT_ID("semctl 0644 GETVAL", 0, SEM, 1, semctl(o, 0, GETVAL));
    EXPECT_ID("semctl 0644 IPC_RMID", EPERM, SEM, 1, semctl(o, 0, IPC_RMID));

    printf("checked %d, %d failed\n", checked, failed);
    return failed ? 1 : 0;
}
