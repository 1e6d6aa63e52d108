/* svc: see svc.h. */
#include "svc.h"

#include <pthread.h>
#include <time.h>

void svc_signals_block(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int svc_signals_wait(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0) {
    }
    return sig;
}

int svc_signals_pending(const sigset_t *set)
{
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(set, NULL, &zero);
    return sig > 0 ? sig : 0;
}
