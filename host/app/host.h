/*
 * The host: wires a validated config and its plugins onto the engine. It
 * owns the cores, the services and the loaded plugins, implements the plugin
 * API (iocphost_api_t) and the framing of SPEC section 5.
 */
#ifndef IOCPHOST_HOST_H
#define IOCPHOST_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct host host_t;

/* Loads and ABI-checks every plugin of the config (no plugin code but the
 * entry symbol runs). Returns 0, or -1 with the reason in err. */
int host_open(const config_t *config, host_t **out, char *err, size_t err_len);
/* Runs every plugin's on_load, creates the cores, binds every server
 * service and starts the client services. Returns 0; -1 when a plugin
 * refused to load (exit code 1); -3 for a runtime failure such as an
 * address in use (exit code 3). Nothing stays bound on failure. */
int host_start(host_t *host, char *err, size_t err_len);
/* Graceful stop (SPEC section 9): stop accepting, on_stopping, flush and
 * close every session with host_stopping, wait up to drain_timeout_ms,
 * close the rest, on_unload. */
void host_stop(host_t *host);
/* The answer to `iocphost status` (with "ok\n" first), text or JSON;
 * malloc'd. Safe while the host runs, from any thread. */
char *host_status(host_t *host, int json, uint64_t uptime_ms);
/* The answers to `iocphost sessions [--service NAME] [--json]` and
 * `iocphost kick ID` (sessions.c): malloc'd, "ok\n" or "error: " first. */
char *host_sessions(host_t *host, const char *service, int json);
char *host_kick(host_t *host, uint64_t id);
/* Redeploys every plugin whose file, path or settings changed in
 * config_file (SPEC section 10): all changed plugins load, pass the ABI
 * checks and on_load, or nothing changes. New sessions get the new
 * generations; existing ones keep theirs, which are unloaded after their
 * last session. Changes that need a restart are reported, not applied.
 * dry_run only says what would change. Returns a malloc'd reply starting
 * with "ok\n" or "error: ". */
char *host_reload(host_t *host, const char *config_file, int dry_run);
/* Frees everything; stops first if needed. */
void host_close(host_t *host);

#endif /* IOCPHOST_HOST_H */
