/* migrate: see migrate.h. */
#include "migrate.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock_keys.h"
#include "log.h"
#include "pgx.h"
#include "text.h"

#define MIGRATE_LOCK_KEY LOCK_MIGRATE

int migrate_parse_name(const char *name)
{
    size_t len = strlen(name);
    int v = 0;
    if (len < 10 || len >= 128 || strcmp(name + len - 4, ".sql") != 0) return -1;
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (name[i] - '0');
    }
    if (name[4] != '_' || v < 1) return -1;
    for (size_t i = 5; i < len - 4; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return -1;
    }
    return v;
}

void migrate_checksum(const char *data, size_t n, char out[65]) { text_sha256_hex(data, n, out); }

static int by_version(const void *a, const void *b)
{
    return ((const migrate_file *)a)->version - ((const migrate_file *)b)->version;
}

void migrate_files_free(migrate_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) free(files[i].sql);
    free(files);
}

int migrate_scan(const char *dir, migrate_file **out, size_t *nout, todo_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    migrate_file *files = NULL;
    size_t n = 0;
    if (d == NULL) return todo_err_set(err, TODO_EINVAL, "cannot open migrations folder %s", dir);
    while ((de = readdir(d)) != NULL) {
        int v = migrate_parse_name(de->d_name);
        if (v < 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%.800s/%.127s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            closedir(d);
            migrate_files_free(files, n);
            return todo_err_set(err, TODO_EINVAL, "cannot read %s", path);
        }
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        char *sql = malloc((size_t)size + 1);
        migrate_file *nf = realloc(files, (n + 1) * sizeof *nf);
        if (sql == NULL || nf == NULL || fread(sql, 1, (size_t)size, f) != (size_t)size) {
            fclose(f);
            closedir(d);
            free(sql);
            if (nf != NULL) files = nf;
            migrate_files_free(files, n);
            return todo_err_set(err, TODO_EINTERNAL, "cannot load %s", path);
        }
        fclose(f);
        sql[size] = '\0';
        files = nf;
        files[n].version = v;
        snprintf(files[n].name, sizeof files[n].name, "%.127s", de->d_name); /* parse_name bounds it */
        migrate_checksum(sql, (size_t)size, files[n].checksum);
        files[n].sql = sql;
        n++;
    }
    closedir(d);
    if (n > 1) qsort(files, n, sizeof *files, by_version);
    for (size_t i = 1; i < n; i++)
        if (files[i].version == files[i - 1].version) {
            int rc = todo_err_set(err, TODO_EINVAL, "two migrations share version %04d: %s and %s",
                                  files[i].version, files[i - 1].name, files[i].name);
            migrate_files_free(files, n);
            return rc;
        }
    *out = files;
    *nout = n;
    return TODO_OK;
}

int migrate_check(const migrate_file *files, size_t n, const migrate_applied *applied, size_t n_applied,
                  size_t *first_new, todo_err *err)
{
    size_t i = 0;
    for (size_t a = 0; a < n_applied; a++) {
        if (i < n && files[i].version < applied[a].version) {
            return todo_err_set(err, TODO_EPRECOND,
                                "migration %s is older than the applied %s but was never applied; "
                                "add new migrations with a higher number",
                                files[i].name, applied[a].name);
        }
        if (i == n || files[i].version != applied[a].version)
            return todo_err_set(err, TODO_EPRECOND, "applied migration %s is missing from the migrations folder",
                                applied[a].name);
        if (strcmp(files[i].name, applied[a].name) != 0)
            return todo_err_set(err, TODO_EPRECOND, "applied migration %s was renamed to %s", applied[a].name,
                                files[i].name);
        if (strcmp(files[i].checksum, applied[a].checksum) != 0)
            return todo_err_set(err, TODO_EPRECOND,
                                "applied migration %s changed since it was applied (checksum %.12s..., now %.12s...); "
                                "applied migrations are never edited: add a new one",
                                files[i].name, applied[a].checksum, files[i].checksum);
        i++;
    }
    *first_new = i;
    return TODO_OK;
}

static const char *const SETUP_SCHEMA_SQL = "create schema if not exists todo_meta";
static const char *const SETUP_TABLE_SQL =
    "create table if not exists todo_meta.schema_migrations ("
    "  version integer primary key, name text not null, checksum text not null,"
    "  applied_at timestamptz not null default now())";

int migrate_run(const char *url, const char *dir, int *applied_now, todo_err *err)
{
    migrate_file *files = NULL;
    migrate_applied *applied = NULL;
    size_t n = 0, n_applied = 0, first = 0;
    PGconn *c = NULL;
    PGresult *r = NULL;
    int rc;

    *applied_now = 0;
    if ((rc = migrate_scan(dir, &files, &n, err)) != 0) return rc;
    if ((c = pgx_connect(url, "todoctl-migrate", err)) == NULL) {
        migrate_files_free(files, n);
        return TODO_EUNAVAIL;
    }
    if ((rc = pgx_cmd(c, "select pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, err)) != 0) goto done;
    if ((rc = pgx_cmd(c, SETUP_SCHEMA_SQL, 0, NULL, err)) != 0) goto done;
    if ((rc = pgx_cmd(c, SETUP_TABLE_SQL, 0, NULL, err)) != 0) goto done;
    r = pgx_exec(c, "select version, name, checksum from todo_meta.schema_migrations order by version", 0, NULL, err);
    if (r == NULL) {
        rc = err->code;
        goto done;
    }
    n_applied = (size_t)PQntuples(r);
    applied = calloc(n_applied + 1, sizeof *applied);
    for (size_t i = 0; i < n_applied; i++) {
        applied[i].version = atoi(PQgetvalue(r, (int)i, 0));
        snprintf(applied[i].name, sizeof applied[i].name, "%s", PQgetvalue(r, (int)i, 1));
        snprintf(applied[i].checksum, sizeof applied[i].checksum, "%s", PQgetvalue(r, (int)i, 2));
    }
    PQclear(r);
    if ((rc = migrate_check(files, n, applied, n_applied, &first, err)) != 0) goto done;

    for (size_t i = first; i < n; i++) {
        char version[16];
        const char *params[3] = {version, files[i].name, files[i].checksum};
        snprintf(version, sizeof version, "%d", files[i].version);
        if ((rc = pgx_cmd(c, "begin", 0, NULL, err)) != 0) goto done;
        /* PQexec (not PQexecParams) runs a file of several statements. */
        r = PQexec(c, files[i].sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = todo_err_set(err, TODO_EINVAL, "migration %s failed: %s", files[i].name, PQresultErrorMessage(r));
            PQclear(r);
            pgx_cmd(c, "rollback", 0, NULL, NULL);
            goto done;
        }
        PQclear(r);
        if ((rc = pgx_cmd(c, "insert into todo_meta.schema_migrations (version, name, checksum) values ($1, $2, $3)",
                          3, params, err)) != 0 ||
            (rc = pgx_cmd(c, "commit", 0, NULL, err)) != 0) {
            pgx_cmd(c, "rollback", 0, NULL, NULL);
            goto done;
        }
        log_info("migrate", "applied", "migration=%s", files[i].name);
        (*applied_now)++;
    }
    rc = TODO_OK;
done:
    if (c != NULL && PQstatus(c) == CONNECTION_OK) pgx_cmd(c, "select pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL);
    pgx_close(c);
    free(applied);
    migrate_files_free(files, n);
    return rc;
}
