#include "admission.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <io.h>
#define close_fd _close
#else
#include <unistd.h>
#define close_fd close
#endif

#include "shadow.h"
#include "trust.h"

/* The descriptor's name is the plugin's identity: a file that calls itself
 * otherwise is another plugin's build (chat.so copied over arena.so), and
 * would serve every new session of the wrong game. */
static int check_name(const plugin_module_t *m, const char *name,
                      const char *path, char *err, size_t err_len) {
  const char *found = plugin_module_name(m);
  if (strcmp(found, name) == 0)
    return 0;
  snprintf(err, err_len,
           "plugin \"%s\" (%s): descriptor name is \"%s\", expected \"%s\" "
           "(the plugin's name in the config): the file is another "
           "plugin's build; deploy %s's own file, or name the plugin \"%s\" "
           "in the config",
           name, path, found, name, name, found);
  return -1;
}

static int check_services(const plugin_module_t *m, const char *name,
                          const config_t *served, char *err, size_t err_len) {
  for (size_t i = 0; served && i < served->service_count; i++) {
    const config_service_t *cs = &served->services[i];
    if (strcmp(cs->plugin, name) != 0)
      continue;
    if (plugin_module_check_framing(m, cs->framing == CONFIG_FRAMING_PACKET,
                                    cs->name, err, err_len) != 0)
      return -1;
  }
  return 0;
}

int plugin_admit(const char *name, const char *path, const config_t *served,
                 const char *shadow_dir, unsigned generation,
                 plugin_admitted_t *out, char *err, size_t err_len) {
  memset(out, 0, sizeof *out);
  char reason[2048];
  int fd = trust_open_plugin_file(path, reason, sizeof reason);
  if (fd < 0) {
    snprintf(err, err_len, "plugin \"%s\" (%s): refusing to load: %s", name,
             path, reason);
    return -1;
  }
  /* What is loaded is what was checked: copied (or hashed) from the
   * descriptor the check opened, never from the path again. */
  int rc = shadow_dir ? shadow_copy(shadow_dir, name, generation, fd, path,
                                    &out->shadow_path, &out->hash, reason,
                                    sizeof reason)
                      : fd_hash(fd, path, &out->hash, reason, sizeof reason);
  close_fd(fd);
  if (rc != 0) {
    snprintf(err, err_len, "plugin \"%s\" (%s): %s", name, path, reason);
    return -1;
  }
  const char *load_path = shadow_dir ? out->shadow_path : path;
  if (plugin_module_open(name, load_path, &out->module, err, err_len) != 0 ||
      check_name(out->module, name, path, err, err_len) != 0 ||
      check_services(out->module, name, served, err, err_len) != 0) {
    plugin_admitted_release(out);
    return -1;
  }
  return 0;
}

void plugin_admitted_release(plugin_admitted_t *a) {
  plugin_module_close(a->module);
  shadow_remove(a->shadow_path);
  free(a->shadow_path);
  memset(a, 0, sizeof *a);
}
