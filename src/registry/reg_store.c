/* reg_store: see reg_store.h. */
#include "reg_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgx.h"
#include "text.h"

#define MAX_VERSIONS 1000 /* checked by a TRANSITIVE mode */

bool reg_subject_valid(const char *subject)
{
    size_t n = strlen(subject);
    if (n == 0 || n > 100) return false;
    for (size_t i = 0; i < n; i++) {
        char c = subject[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return false;
    }
    return true;
}

void reg_schema_row_cleanup(reg_schema_row *row)
{
    if (row == NULL) return;
    free(row->bytes);
    row->bytes = NULL;
    row->len = 0;
}

/* Fills out from a (id, version, message, descriptor_set) row. */
static int row_of(const PGresult *r, int i, reg_schema_row *out, todo_err *err)
{
    memset(out, 0, sizeof *out);
    out->id = atoi(PQgetvalue(r, i, 0));
    out->version = atoi(PQgetvalue(r, i, 1));
    snprintf(out->message, sizeof out->message, "%s", PQgetvalue(r, i, 2));
    size_t len = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 3), &len);
    if (raw == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    out->bytes = malloc(len + 1);
    if (out->bytes == NULL) {
        PQfreemem(raw);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    memcpy(out->bytes, raw, len);
    out->len = len;
    PQfreemem(raw);
    return TODO_OK;
}

static int one_row(PGconn *pg, const char *sql, int n, const char *const *p, reg_schema_row *out, const char *what,
                   todo_err *err)
{
    PGresult *r = pgx_exec(pg, sql, n, p, err);
    if (r == NULL) return err->code;
    int rc = PQntuples(r) == 1 ? row_of(r, 0, out, err) : todo_err_set(err, TODO_ENOTFOUND, "%s not found", what);
    PQclear(r);
    return rc;
}

int reg_store_get(PGconn *pg, const char *subject, int version, reg_schema_row *out, todo_err *err)
{
    char v[16], what[160];
    snprintf(v, sizeof v, "%d", version);
    if (version > 0) snprintf(what, sizeof what, "version %d of subject %.100s", version, subject);
    else snprintf(what, sizeof what, "subject %.100s", subject);
    const char *p[2] = {subject, v};
    return one_row(pg,
                   "select s.id, v.version, s.message, s.descriptor_set from registry.versions v"
                   " join registry.schemas s on s.id = v.schema_id where v.subject = $1"
                   " and ($2::int = 0 or v.version = $2::int) order by v.version desc limit 1",
                   2, p, out, what, err);
}

int reg_store_by_id(PGconn *pg, int id, reg_schema_row *out, todo_err *err)
{
    char v[16], what[64];
    snprintf(v, sizeof v, "%d", id);
    snprintf(what, sizeof what, "schema id %d", id);
    const char *p[1] = {v};
    return one_row(pg, "select id, 0, message, descriptor_set from registry.schemas where id = $1::int", 1, p, out,
                   what, err);
}

int reg_store_list(PGconn *pg, reg_subject_info **out, size_t *n, todo_err *err)
{
    *out = NULL;
    *n = 0;
    PGresult *r = pgx_exec(pg,
                           "select v.subject, max(v.version), (array_agg(s.id order by v.version desc))[1],"
                           " (array_agg(s.message order by v.version desc))[1],"
                           " coalesce((select mode from registry.config c where c.subject = v.subject),"
                           "  (select mode from registry.config where subject = '*')),"
                           " not exists (select 1 from registry.config c where c.subject = v.subject)"
                           " from registry.versions v join registry.schemas s on s.id = v.schema_id"
                           " group by v.subject order by v.subject",
                           0, NULL, err);
    if (r == NULL) return err->code;
    size_t rows = (size_t)PQntuples(r);
    *out = calloc(rows + 1, sizeof **out);
    if (*out == NULL) {
        PQclear(r);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    for (size_t i = 0; i < rows; i++) {
        reg_subject_info *s = &(*out)[i];
        snprintf(s->subject, sizeof s->subject, "%s", PQgetvalue(r, (int)i, 0));
        s->latest_version = atoi(PQgetvalue(r, (int)i, 1));
        s->latest_id = atoi(PQgetvalue(r, (int)i, 2));
        snprintf(s->message, sizeof s->message, "%s", PQgetvalue(r, (int)i, 3));
        snprintf(s->mode, sizeof s->mode, "%s", PQgetvalue(r, (int)i, 4));
        s->mode_is_default = PQgetvalue(r, (int)i, 5)[0] == 't';
    }
    *n = rows;
    PQclear(r);
    return TODO_OK;
}

int reg_store_mode(PGconn *pg, const char *subject, reg_mode *out, todo_err *err)
{
    const char *p[1] = {subject};
    PGresult *r = pgx_exec(pg,
                           "select mode from registry.config where subject in ($1, '*')"
                           " order by subject = '*' limit 1",
                           1, p, err);
    if (r == NULL) return err->code;
    int rc = PQntuples(r) == 1 && reg_mode_parse(PQgetvalue(r, 0, 0), out) == 0
                 ? TODO_OK
                 : todo_err_set(err, TODO_EINTERNAL, "registry.config holds no mode for %s", subject);
    PQclear(r);
    return rc;
}

int reg_store_set_mode(PGconn *pg, const char *subject, reg_mode m, todo_err *err)
{
    const char *p[2] = {subject, reg_mode_name(m)};
    return pgx_cmd(pg,
                   "insert into registry.config (subject, mode) values ($1, $2)"
                   " on conflict (subject) do update set mode = excluded.mode",
                   2, p, err);
}

/* Checks candidate against version row r of the subject. */
static int check_against(const PGresult *r, int i, const reg_schema *cand, reg_mode m, reg_report *report,
                         todo_err *err)
{
    reg_schema_row row;
    int rc = row_of(r, i, &row, err);
    if (rc != 0) return rc;
    Google__Protobuf__FileDescriptorSet *set;
    rc = reg_set_decode(row.bytes, row.len, &set, err);
    reg_schema_row_cleanup(&row);
    if (rc != TODO_OK) return todo_err_set(err, TODO_EINTERNAL, "a stored schema does not decode");
    reg_schema old = {set, PQgetvalue(r, i, 2)};
    reg_report one;
    rc = reg_compat_check(&old, cand, m, &one, err);
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    for (int k = 0; rc == 0 && k < one.n && k < REG_MAX_VIOLATIONS; k++) {
        if (report->n < REG_MAX_VIOLATIONS)
            snprintf(report->violations[report->n], sizeof report->violations[0], "against version %s: %.220s",
                     PQgetvalue(r, i, 1), one.violations[k]);
        report->n++;
    }
    return rc;
}

int reg_store_register(PGconn *pg, const char *subject, const char *message, const uint8_t *bytes, size_t len,
                       bool do_register, int *id, int *version, reg_report *report, todo_err *err)
{
    memset(report, 0, sizeof *report);
    *id = *version = 0;
    if (!reg_subject_valid(subject))
        return todo_err_set(err, TODO_EINVAL, "subject: 1 to 100 of a-z, 0-9, '.', '_', '-'; got \"%.100s\"", subject);
    char latest_message[256];
    if (message == NULL || message[0] == '\0') { /* the message of the subject's latest version */
        reg_schema_row row;
        int grc = reg_store_get(pg, subject, 0, &row, err);
        if (grc != 0)
            return grc == TODO_ENOTFOUND
                       ? todo_err_set(err, TODO_ENOTFOUND, "%s has no version yet: name the message", subject)
                       : grc;
        snprintf(latest_message, sizeof latest_message, "%s", row.message);
        reg_schema_row_cleanup(&row);
        message = latest_message;
    }
    Google__Protobuf__FileDescriptorSet *set;
    int rc = reg_set_decode(bytes, len, &set, err);
    if (rc != TODO_OK) return rc;
    reg_schema cand = {set, message};
    reg_report self;
    rc = reg_compat_check(&cand, &cand, REG_NONE, &self, err); /* does the set hold the message? */
    if (rc != 0) {
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
        return rc;
    }
    /* The fingerprint: the message's name and the exact bytes. */
    char *buf = malloc(strlen(message) + 1 + len), fp[65];
    if (buf == NULL) {
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    memcpy(buf, message, strlen(message) + 1);
    memcpy(buf + strlen(message) + 1, bytes, len);
    text_sha256_hex(buf, strlen(message) + 1 + len, fp);
    free(buf);

    PGresult *r = NULL;
    reg_mode m;
    const char *p1[2] = {subject, fp};
    if ((rc = pgx_cmd(pg, "begin", 0, NULL, err)) != 0) goto out;
    if ((rc = pgx_cmd(pg, "select pg_advisory_xact_lock(hashtext('registry:' || $1))", 1, p1, err)) != 0) goto out;
    /* The same schema already registered under this subject: its version. */
    r = pgx_exec(pg,
                 "select s.id, v.version from registry.versions v join registry.schemas s on s.id = v.schema_id"
                 " where v.subject = $1 and s.fingerprint = $2",
                 2, p1, err);
    if (r == NULL) goto fail;
    if (PQntuples(r) == 1) {
        *id = atoi(PQgetvalue(r, 0, 0));
        *version = atoi(PQgetvalue(r, 0, 1));
        PQclear(r);
        rc = pgx_cmd(pg, "commit", 0, NULL, err);
        goto out;
    }
    PQclear(r);
    if ((rc = reg_store_mode(pg, subject, &m, err)) != 0) goto out;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", reg_mode_transitive(m) ? MAX_VERSIONS : 1);
    const char *p2[2] = {subject, limit};
    r = pgx_exec(pg,
                 "select s.id, v.version, s.message, s.descriptor_set from registry.versions v"
                 " join registry.schemas s on s.id = v.schema_id where v.subject = $1"
                 " order by v.version desc limit $2::int",
                 2, p2, err);
    if (r == NULL) goto fail;
    int latest = PQntuples(r) > 0 ? atoi(PQgetvalue(r, 0, 1)) : 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) rc = check_against(r, i, &cand, m, report, err);
    PQclear(r);
    r = NULL;
    if (rc != 0) goto out;
    if (report->n > 0) {
        rc = todo_err_set(err, TODO_EPRECOND, "schema for %s is not %s compatible: %s", subject, reg_mode_name(m),
                          report->violations[0]);
        goto out;
    }
    if (!do_register) {
        rc = pgx_cmd(pg, "commit", 0, NULL, err);
        goto out;
    }
    /* Register: the schema (or its existing id), then the next version. */
    const char *p3[3] = {fp, message, NULL};
    const int lens[3] = {0, 0, (int)len}, formats[3] = {0, 0, 1};
    p3[2] = (const char *)bytes;
    r = pgx_execb(pg,
                  "with ins as (insert into registry.schemas (fingerprint, message, descriptor_set)"
                  " values ($1, $2, $3::bytea) on conflict (fingerprint) do nothing returning id)"
                  " select id from ins union all select id from registry.schemas where fingerprint = $1 limit 1",
                  3, p3, lens, formats, err);
    if (r == NULL) goto fail;
    *id = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    char idt[16], vt[16];
    snprintf(idt, sizeof idt, "%d", *id);
    snprintf(vt, sizeof vt, "%d", latest + 1);
    const char *p4[3] = {subject, vt, idt};
    if ((rc = pgx_cmd(pg, "insert into registry.versions (subject, version, schema_id) values ($1, $2::int, $3::int)",
                      3, p4, err)) != 0)
        goto out;
    *version = latest + 1;
    rc = pgx_cmd(pg, "commit", 0, NULL, err);
    goto out;
fail:
    rc = err->code;
out:
    if (rc != 0 && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) != PQTRANS_IDLE)
        pgx_cmd(pg, "rollback", 0, NULL, NULL);
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    return rc;
}
