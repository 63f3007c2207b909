/* Prints dipc.h's constants, one "name value" per line, for the test to
 * compare with libsysv's Rust constants. */
#include <stdio.h>

#include "dipc.h"

int main(void)
{
    printf("IPC_DIPC %d\n", IPC_DIPC);
    printf("DIPC_ID_BIT %d\n", DIPC_ID_BIT);
    printf("DIPC_ENV_SOCKET %s\n", DIPC_ENV_SOCKET);
    printf("DIPC_ENV_KEYS %s\n", DIPC_ENV_KEYS);
    printf("DIPC_ENV_FALLBACK %s\n", DIPC_ENV_FALLBACK);
    printf("DIPC_ENV_PAGE_SIZE %s\n", DIPC_ENV_PAGE_SIZE);
    printf("DIPC_ENV_SHM_MODE %s\n", DIPC_ENV_SHM_MODE);
    printf("DIPC_ENV_TIMEOUT_MS %s\n", DIPC_ENV_TIMEOUT_MS);
    printf("DIPC_ENV_QUANTUM_US %s\n", DIPC_ENV_QUANTUM_US);
    printf("DIPC_ENV_PREFETCH %s\n", DIPC_ENV_PREFETCH);
    printf("DIPC_MAX_QUANTUM_US %d\n", DIPC_MAX_QUANTUM_US);
    printf("DIPC_MAX_PREFETCH %d\n", DIPC_MAX_PREFETCH);
    printf("DIPC_DEFAULT_SOCKET %s\n", DIPC_DEFAULT_SOCKET);
    int probe[] = {0, 1, -1, 0x3fffffff, 0x40000000, 0x40000001, 0x7fffffff, (int)0xc0000001};
    for (unsigned i = 0; i < sizeof probe / sizeof probe[0]; i++)
        printf("distributed %d %d\n", probe[i], dipc_is_distributed_id(probe[i]));
    return 0;
}
