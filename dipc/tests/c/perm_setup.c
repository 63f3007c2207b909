/* perm_setup.c - run as root by dipc/tests/perms.rs.
 *
 *   perm_setup create BASE   create the NOBJ objects (see perm_common.h),
 *                            write 0x5a into the 0644 segments, print
 *                            "ids <id>..." on one line
 *   perm_setup remove ID...  IPC_RMID each object (as root)
 *   perm_setup drop ID...    say hello to the daemon as root, drop to
 *                            nobody in this process, then try IPC_RMID
 *                            and IPC_STAT on the 0600 objects: the kernel
 *                            checks the process's credentials at each call
 */
static int ids[NOBJ];

static int create(key_t base)
{
    for (int i = 0; i < NOBJ; i++) {
        int kind = i / 4, flags = IPC_CREAT | IPC_EXCL | obj_mode(i) | obj_dipc(i);
        key_t key = base + i;
        if (kind == SHM)
            ids[i] = shmget(key, 4096, flags);
        else if (kind == MSG)
            ids[i] = msgget(key, flags);
        else
            ids[i] = semget(key, 1, flags);
        if (ids[i] < 0) {
            printf("FAIL create object %d (key %#x): %s\n", i, (unsigned)key, ename(errno));
            return 1;
        }
        if (kind == SHM && obj_mode(i) == 0644) {
            unsigned char *p = shmat(ids[i], NULL, 0);
            if (p == (void *)-1) {
                printf("FAIL shmat object %d: %s\n", i, ename(errno));
                return 1;
            }
            p[0] = 0x5a;
            p[4095] = 0xa5;
            shmdt(p);
        }
    }
    printf("ids");
    for (int i = 0; i < NOBJ; i++)
        printf(" %d", ids[i]);
    printf("\n");
    return 0;
}

static int rm(int i)
{
    if (i / 4 == SHM)
        return shmctl(ids[i], IPC_RMID, NULL);
    if (i / 4 == MSG)
        return msgctl(ids[i], IPC_RMID, NULL);
    return semctl(ids[i], 0, IPC_RMID);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(60);
    if (argc == 3 && strcmp(argv[1], "create") == 0)
        return create((key_t)strtol(argv[2], NULL, 0));
    if (argc != 2 + NOBJ) {
        printf("usage: perm_setup create BASE | remove|drop ID x %d\n", NOBJ);
        return 2;
    }
    for (int i = 0; i < NOBJ; i++)
        ids[i] = atoi(argv[2 + i]);
    if (strcmp(argv[1], "remove") == 0) {
        int bad = 0;
        for (int i = 0; i < NOBJ; i++)
            if (rm(i) != 0) {
                printf("FAIL remove object %d: %s\n", i, ename(errno));
                bad = 1;
            }
        return bad;
    }
    /* drop: the connection to the daemon is made while root... */
    struct shmid_ds ds;
    if (shmctl(ids[obj_index(SHM, 1, 0)], IPC_STAT, &ds) != 0) {
        printf("FAIL IPC_STAT as root: %s\n", ename(errno));
        return 1;
    }
    /* ...then this process becomes nobody. */
    if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
        printf("FAIL dropping privileges: %s\n", ename(errno));
        return 1;
    }
    int d = obj_index(SHM, 0, 0), m = obj_index(MSG, 0, 0), s = obj_index(SEM, 0, 0);
    EXPECT("shmctl IPC_STAT 0600 after dropping root", EACCES, ids[d], ids[d + 1],
           shmctl(o, IPC_STAT, &ds));
    EXPECT("shmctl IPC_RMID 0600 after dropping root", EPERM, ids[d], ids[d + 1],
           shmctl(o, IPC_RMID, NULL));
    EXPECT("msgctl IPC_RMID 0600 after dropping root", EPERM, ids[m], ids[m + 1],
           msgctl(o, IPC_RMID, NULL));
    EXPECT("semctl IPC_RMID 0600 after dropping root", EPERM, ids[s], ids[s + 1],
           semctl(o, 0, IPC_RMID));
    printf("checked %d, %d failed\n", checked, failed);
    return failed ? 1 : 0;
}
