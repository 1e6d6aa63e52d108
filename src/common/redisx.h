/*
 * redisx: a Redis connection for a fast path that must never slow its
 * caller down: every call has a short timeout, and after a failure Redis is
 * left alone for a few seconds (the caller then does without it: PostgreSQL
 * stays the truth). One redisx per thread.
 */
#ifndef TODO_REDISX_H
#define TODO_REDISX_H

#include <hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "todo_err.h"

typedef struct redisx {
    char host[256];
    int port;
    bool tls;                /* rediss://: through an in-process TLS relay */
    char ca[256];            /* rediss://...?ca=FILE: the CAs that sign Redis' certificate ("" the system's) */
    void *ssl_ctx;           /* the relay's SSL_CTX, made on first use */
    char user[64], password[256]; /* from the URL ("" none): AUTH on every connection */
    char comp[32];           /* the log component ("projector"...) */
    int timeout_ms;
    redisContext *rc;
    time_t down_until;
} redisx;

/* Parses redis://[user[:password]@]host[:port][/...] (port defaults to
 * 6379; user and password percent-decoded) into host (cap bytes) and port.
 * rediss:// is TLS: Debian 12's hiredis 0.14 has none, so each connection
 * runs through a relay of ours (a socket pair to hiredis, a thread doing
 * TLS with OpenSSL to Redis), which verifies Redis' certificate and its
 * name (the URL's host) against ?ca=FILE, else the system's CAs
 * (docs/SECURITY.md). */
int redisx_parse_url(const char *url, char *host, size_t cap, int *port, todo_err *err);

/* redisx_parse_url with the credentials: user (ucap bytes; "" when the URL
 * names only a password, Redis' "default" user) and password (pcap). */
int redisx_parse_url_auth(const char *url, char *host, size_t cap, int *port, char *user, size_t ucap, char *password,
                          size_t pcap, todo_err *err);

/* Prepares r for url (TODO_EINVAL when malformed); connects lazily. */
int redisx_init(redisx *r, const char *url, const char *comp, int timeout_ms, todo_err *err);

/* A usable connection, or NULL while Redis is considered down. */
redisContext *redisx_conn(redisx *r);

/* Gives the connection up after a failure (why is logged); retried later. */
void redisx_drop(redisx *r, const char *why);

void redisx_cleanup(redisx *r);

#endif
