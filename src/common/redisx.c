/* redisx: see redisx.h. */
#include "redisx.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"

#define RETRY_AFTER_S 5 /* a failed Redis is tried again this much later */

/* Copies n bytes of s percent-decoded into out (cap); false when it does not
 * fit or an escape is malformed. */
static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copies n bytes of s percent-decoded into out (cap); false when it does not
 * fit or an escape is malformed. */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) return false;
            c = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        }
        if (o + 1 >= cap) return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

int redisx_parse_url_auth(const char *url, char *host, size_t cap, int *port, char *user, size_t ucap, char *password,
                          size_t pcap, todo_err *err)
{
    const char *p = url;
    char scratch_user[64], scratch_password[256]; /* the credentials are checked even when not wanted */
    if (user == NULL) user = scratch_user, ucap = sizeof scratch_user;
    if (password == NULL) password = scratch_password, pcap = sizeof scratch_password;
    user[0] = password[0] = '\0';
    if (strncmp(p, "rediss://", 9) == 0) p += 9;
    else if (strncmp(p, "redis://", 8) == 0) p += 8;
    else goto bad;
    const char *at = strchr(p, '@'), *slash = strchr(p, '/');
    if (at != NULL && (slash == NULL || at < slash)) { /* credentials */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon != NULL ? colon + 1 : p; /* "redis://secret@h": a password alone */
        size_t ulen = colon != NULL ? (size_t)(colon - p) : 0;
        if (!decode(p, ulen, user, ucap) || !decode(pw, (size_t)(at - pw), password, pcap)) goto bad;
        p = at + 1;
    }
    size_t n = strcspn(p, ":/?");
    if (n == 0 || n >= cap) goto bad;
    memcpy(host, p, n);
    host[n] = '\0';
    p += n;
    *port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/' && *end != '?')) goto bad;
        *port = (int)v;
    }
    return TODO_OK;
bad:
    /* Never the URL itself: it may hold a password. */
    return todo_err_set(err, TODO_EINVAL,
                        "TODO_REDIS_URL must look like redis://[user[:password]@]host:port (rediss:// for TLS, "
                        "?ca=FILE for its CAs)");
}

int redisx_parse_url(const char *url, char *host, size_t cap, int *port, todo_err *err)
{
    return redisx_parse_url_auth(url, host, cap, port, NULL, 0, NULL, 0, err);
}

int redisx_init(redisx *r, const char *url, const char *comp, int timeout_ms, todo_err *err)
{
    memset(r, 0, sizeof *r);
    snprintf(r->comp, sizeof r->comp, "%s", comp);
    r->timeout_ms = timeout_ms;
    int rc = redisx_parse_url_auth(url, r->host, sizeof r->host, &r->port, r->user, sizeof r->user, r->password,
                                   sizeof r->password, err);
    if (rc != TODO_OK) return rc;
    r->tls = strncmp(url, "rediss://", 9) == 0;
    const char *q = strchr(url, '?');
    if (q != NULL) {
        if (strncmp(q, "?ca=", 4) != 0 || !decode(q + 4, strlen(q + 4), r->ca, sizeof r->ca) || r->ca[0] == '\0' ||
            !r->tls)
            return todo_err_set(err, TODO_EINVAL, "TODO_REDIS_URL: the only parameter is ?ca=FILE, with rediss://");
        if (access(r->ca, R_OK) != 0) return todo_err_set(err, TODO_EINVAL, "TODO_REDIS_URL: cannot read ca %s", r->ca);
    }
    return TODO_OK;
}

/* The TLS relay of a rediss:// connection: hiredis talks plaintext to one
 * end of a socket pair; this thread moves the bytes between the other end
 * and a TLS session to Redis, until either side closes. */
typedef struct relay {
    SSL *ssl;
    int tcp, pair;
} relay;

static void *relay_run(void *arg)
{
    relay *rl = arg;
    char buf[16384];
    for (;;) {
        bool from_redis = SSL_pending(rl->ssl) > 0;
        if (!from_redis) {
            struct pollfd fds[2] = {{rl->pair, POLLIN, 0}, {rl->tcp, POLLIN, 0}};
            if (poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                break;
            }
            if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = read(rl->pair, buf, sizeof buf);
                if (n <= 0 || SSL_write(rl->ssl, buf, (int)n) != (int)n) break;
            }
            from_redis = (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
        }
        if (from_redis) {
            int n = SSL_read(rl->ssl, buf, sizeof buf);
            if (n <= 0) {
                /* A record that is no data (a TLS 1.3 session ticket): back to
                 * poll, never blocked waiting for data that may not come. */
                int e = SSL_get_error(rl->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) continue;
                break;
            }
            for (int off = 0; off < n;) {
                ssize_t w = write(rl->pair, buf + off, (size_t)(n - off));
                if (w <= 0) goto done;
                off += (int)w;
            }
        }
    }
done:
    SSL_shutdown(rl->ssl);
    SSL_free(rl->ssl);
    close(rl->tcp);
    close(rl->pair);
    free(rl);
    return NULL;
}

/* A TCP connection to host:port within timeout_ms (send and receive
 * timeouts set for the handshake), or -1. */
static int tcp_connect(const char *host, int port, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    if (getaddrinfo(host, service, &hints, &res) != 0) return -1;
    int fd = -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* connect's timeout too (Linux) */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* A hiredis connection through a new TLS relay, or NULL with why set. */
static redisContext *connect_tls(redisx *r, char *why, size_t cap)
{
    if (r->ssl_ctx == NULL) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
            (r->ca[0] != '\0' ? SSL_CTX_load_verify_locations(ctx, r->ca, NULL)
                               : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
            SSL_CTX_free(ctx);
            snprintf(why, cap, "TLS: cannot load the CAs%s%.200s", r->ca[0] ? " of " : "", r->ca);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY); /* SSL_read returns after a non-data record (relay_run) */
        r->ssl_ctx = ctx;
    }
    int tcp = tcp_connect(r->host, r->port, r->timeout_ms), pair[2] = {-1, -1};
    if (tcp < 0) {
        snprintf(why, cap, "cannot connect to %.200s:%d", r->host, r->port);
        return NULL;
    }
    SSL *ssl = SSL_new(r->ssl_ctx);
    int ok = ssl != NULL && SSL_set_fd(ssl, tcp) == 1 && SSL_set_tlsext_host_name(ssl, r->host) == 1 &&
             SSL_set1_host(ssl, r->host) == 1 && SSL_connect(ssl) == 1;
    if (!ok) {
        unsigned long e = ERR_get_error();
        long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
        snprintf(why, cap, "TLS handshake with %.200s:%d failed: %.200s", r->host, r->port,
                 v != X509_V_OK ? X509_verify_cert_error_string(v) : e != 0 ? ERR_reason_error_string(e) : "closed");
        ERR_clear_error();
        SSL_free(ssl);
        close(tcp);
        return NULL;
    }
    struct timeval none = {0, 0}; /* the relay waits in poll from now on */
    setsockopt(tcp, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    relay *rl = malloc(sizeof *rl);
    pthread_t th;
    pthread_attr_t attr;
    if (rl == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        free(rl);
        SSL_free(ssl);
        close(tcp);
        snprintf(why, cap, "TLS relay: no socket pair");
        return NULL;
    }
    *rl = (relay){.ssl = ssl, .tcp = tcp, .pair = pair[1]};
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, relay_run, rl) != 0) {
        pthread_attr_destroy(&attr);
        SSL_free(ssl);
        close(tcp);
        close(pair[0]);
        close(pair[1]);
        free(rl);
        snprintf(why, cap, "TLS relay: no thread");
        return NULL;
    }
    pthread_attr_destroy(&attr);
    redisContext *rc = redisConnectFd(pair[0]); /* hiredis closes it in redisFree: the relay then ends */
    if (rc == NULL) close(pair[0]);
    return rc;
}

redisContext *redisx_conn(redisx *r)
{
    if (r->rc != NULL) return r->rc;
    if (time(NULL) < r->down_until) return NULL;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    char failed[600] = "";
    r->rc = r->tls ? connect_tls(r, failed, sizeof failed) : redisConnectWithTimeout(r->host, r->port, tv);
    if (r->rc == NULL || r->rc->err) {
        if (r->rc != NULL) redisFree(r->rc);
        r->rc = NULL;
        r->down_until = time(NULL) + RETRY_AFTER_S;
        if (failed[0] != '\0')
            log_warn(r->comp, "redis fast path off; the database serves alone", "reason=\"%s\" retry_s=%d", failed,
                     RETRY_AFTER_S);
        return NULL;
    }
    redisSetTimeout(r->rc, tv);
    if (r->password[0] != '\0') { /* an ACL user (Redis 6+), or the password of "default" */
        redisReply *rep = r->user[0] != '\0' ? redisCommand(r->rc, "AUTH %s %s", r->user, r->password)
                                             : redisCommand(r->rc, "AUTH %s", r->password);
        bool ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
        char why[160];
        snprintf(why, sizeof why, "AUTH refused: %.120s",
                 rep == NULL ? "no answer" : rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        if (rep != NULL) freeReplyObject(rep);
        if (!ok) {
            redisFree(r->rc);
            r->rc = NULL;
            r->down_until = time(NULL) + RETRY_AFTER_S;
            log_warn(r->comp, "redis fast path off; the database serves alone", "reason=\"%s\" retry_s=%d", why,
                     RETRY_AFTER_S);
            return NULL;
        }
    }
    log_info(r->comp, "redis fast path on", "host=%s port=%d user=%s tls=%s", r->host, r->port,
             r->user[0] ? r->user : (r->password[0] ? "default" : "-"), r->tls ? "yes" : "no");
    return r->rc;
}

void redisx_drop(redisx *r, const char *why)
{
    if (r->rc != NULL) {
        log_warn(r->comp, "redis fast path off; the database serves alone", "reason=\"%s\" retry_s=%d", why,
                 RETRY_AFTER_S);
        redisFree(r->rc);
        r->rc = NULL;
    }
    r->down_until = time(NULL) + RETRY_AFTER_S;
}

void redisx_cleanup(redisx *r)
{
    if (r->rc != NULL) redisFree(r->rc);
    r->rc = NULL;
    SSL_CTX_free(r->ssl_ctx);
    r->ssl_ctx = NULL;
}
