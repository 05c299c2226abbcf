/*
 * Whether a file may become a generation of a plugin (SPEC sections 4 and
 * 10): the one decision `run`, `check` and `reload` share, so a file that
 * `check` refuses can never be loaded by a reload.
 *
 * A file is admitted when the host may trust it (trust.h: its owner, its
 * and every folder's write bits, links), it loads and passes the ABI checks
 * (plugin_loader.h), its descriptor's name is the config's name for the
 * plugin, and it has the receive callback every service using it needs.
 * Nothing of the plugin runs but its entry symbol.
 */
#ifndef IOCPHOST_ADMISSION_H
#define IOCPHOST_ADMISSION_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "plugin_loader.h"

typedef struct plugin_admitted {
  plugin_module_t *module;
  char *shadow_path; /* the copy loaded (malloc'd); NULL when in place */
  uint64_t hash;     /* of the bytes loaded */
} plugin_admitted_t;

/* Admits the file at path as plugin `name`, served by the services of
 * `served` that name it. With shadow_dir, the checked file's bytes are
 * copied to <shadow_dir>/<name>.<generation><suffix> (shadow.h) and loaded
 * from there; without, it is loaded in place (for `check`). Returns 0 and
 * fills *out, or -1 with the reason in err (one line naming the plugin and
 * the path) and nothing left behind. */
int plugin_admit(const char *name, const char *path, const config_t *served,
                 const char *shadow_dir, unsigned generation,
                 plugin_admitted_t *out, char *err, size_t err_len);

/* Closes the module and removes its copy: for a file admitted but not
 * used. */
void plugin_admitted_release(plugin_admitted_t *admitted);

#endif /* IOCPHOST_ADMISSION_H */
