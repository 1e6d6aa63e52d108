/*
 * lock_keys: every PostgreSQL advisory lock key the processes take, said
 * once, so no two uses collide. Session locks name a role held for as long
 * as a connection lives; transaction locks (xact) one transaction's.
 */
#ifndef TODO_LOCK_KEYS_H
#define TODO_LOCK_KEYS_H

#define LOCK_MIGRATE "7428311"       /* one migrator at a time (session) */
#define LOCK_RELAY "7428312"         /* the active write.events publisher: todo-command's relay (session) */
#define LOCK_PROJ_SWAP "7428313"     /* the task read model: shared by each projector batch, exclusive by a rebuild's swap (xact/session) */
#define LOCK_REBUILD "7428314"       /* one rebuild of the task read model at a time (session) */
#define LOCK_SAGA_OUTBOX "7428315"   /* the active saga.outbox publisher in todo-saga (session; xact before 0017) */
#define LOCK_ANALYTICS_SWAP "7428316"    /* LOCK_PROJ_SWAP of the analytics projection */
#define LOCK_ANALYTICS_REBUILD "7428317" /* LOCK_REBUILD of the analytics projection */
/* The registry also locks per event type, hashtext('registry:' || type) (reg_store.c). */

#endif
