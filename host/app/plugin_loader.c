#include "plugin_loader.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include "trust_win.h"
#else
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

struct plugin_module {
  void *library;
  /* The host's copy: the plugin's first min(struct_size, sizeof) bytes, the
   * rest zero. Never the plugin's own struct, which may be shorter. */
  iocphost_plugin_t descriptor;
  uint32_t struct_size; /* as the plugin declared it */
  uint16_t abi_minor;
  char *config_name;
  char *path;
  char *name;
  char *version;
};

/* Room for a reason that quotes a path or two. */
#define PATH_MAX_REASON 2048

/* The header every descriptor of every ABI starts with. */
#define DESCRIPTOR_HEADER_SIZE                                                 \
  (offsetof(iocphost_plugin_t, abi_minor) +                                    \
   sizeof(((iocphost_plugin_t *)0)->abi_minor))

static void set_error(char *err, size_t err_len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void set_error(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

static char *copy_string(const char *text) {
  size_t len = strlen(text);
  char *copy = malloc(len + 1);
  if (copy != NULL)
    memcpy(copy, text, len + 1);
  return copy;
}

/* The platform's library calls. Each failing call writes the system's own
 * reason into reason. */
#ifdef _WIN32

static void system_reason(char *reason, size_t len) {
  DWORD code = GetLastError();
  DWORD n =
      FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                     NULL, code, 0, reason, (DWORD)len, NULL);
  /* FormatMessage ends its text with a line break; a message is one line. */
  while (n > 0 && (reason[n - 1] == '\r' || reason[n - 1] == '\n' ||
                   reason[n - 1] == ' ' || reason[n - 1] == '.'))
    reason[--n] = '\0';
  if (n == 0)
    snprintf(reason, len, "error %lu", (unsigned long)code);
}

static void *library_open(const char *path, char *reason, size_t len) {
  /* By full path, so the plugin's own folder (and not the current one) is
   * searched for its dependencies, and with no error dialog. */
  int wlen =
      MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
  if (wlen <= 0) {
    snprintf(reason, len, "the path is not valid UTF-8");
    return NULL;
  }
  wchar_t *wide = malloc((size_t)wlen * sizeof *wide);
  if (wide == NULL) {
    snprintf(reason, len, "out of memory");
    return NULL;
  }
  MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, wlen);
  DWORD full_len = GetFullPathNameW(wide, 0, NULL, NULL);
  wchar_t *full = full_len > 0 ? malloc(full_len * sizeof *full) : NULL;
  if (full == NULL || GetFullPathNameW(wide, full_len, full, NULL) == 0) {
    snprintf(reason, len, "cannot resolve the full path");
    free(full);
    free(wide);
    return NULL;
  }
  /* Windows says "module not found" both for a missing file and for a
   * missing dependency: tell them apart. */
  DWORD attributes = GetFileAttributesW(full);
  if (attributes == INVALID_FILE_ATTRIBUTES ||
      (attributes & FILE_ATTRIBUTE_DIRECTORY)) {
    snprintf(reason, len, "%s",
             attributes == INVALID_FILE_ATTRIBUTES
                 ? "No such file or directory"
                 : "it is a folder, not a file");
    free(full);
    free(wide);
    return NULL;
  }
  /* Dependencies are searched in the plugin's own folder, then in the
   * process's safe default folders (System32 and folders added on purpose:
   * main.c calls SetDefaultDllDirectories), never the current folder. */
  DWORD old_mode = 0;
  SetThreadErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX,
                     &old_mode);
  HMODULE library =
      LoadLibraryExW(full, NULL,
                     LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR |
                         LOAD_LIBRARY_SEARCH_DEFAULT_DIRS);
  if (library == NULL) {
    DWORD code = GetLastError();
    char text[PATH_MAX_REASON / 2];
    system_reason(text, sizeof text);
    if (code == ERROR_MOD_NOT_FOUND)
      snprintf(reason, len,
               "a DLL it depends on was not found (%s): put it beside the "
               "plugin",
               text);
    else
      snprintf(reason, len, "%s", text);
  }
  SetThreadErrorMode(old_mode, NULL);
  free(full);
  free(wide);
  return (void *)library;
}

static iocphost_plugin_entry_fn library_entry(void *library) {
  FARPROC symbol = GetProcAddress((HMODULE)library, IOCPHOST_PLUGIN_ENTRY_NAME);
  return (iocphost_plugin_entry_fn)(void (*)(void))symbol;
}

static void library_close(void *library) { FreeLibrary((HMODULE)library); }

#else

static void *library_open(const char *path, char *reason, size_t len) {
  /* A path without a slash would make dlopen search the library path. */
  char *relative = NULL;
  if (strchr(path, '/') == NULL) {
    size_t path_len = strlen(path);
    relative = malloc(path_len + 3);
    if (relative == NULL) {
      snprintf(reason, len, "out of memory");
      return NULL;
    }
    memcpy(relative, "./", 2);
    memcpy(relative + 2, path, path_len + 1);
  }
  dlerror();
  void *library = dlopen(relative ? relative : path, RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    /* dlerror usually starts with the path, which the message has already. */
    const char *text = dlerror();
    size_t path_len = strlen(path);
    if (text == NULL)
      text = "unknown dlopen error";
    else if (strncmp(text, path, path_len) == 0 &&
             strncmp(text + path_len, ": ", 2) == 0)
      text += path_len + 2;
    snprintf(reason, len, "%s", text);
  }
  free(relative);
  return library;
}

static iocphost_plugin_entry_fn library_entry(void *library) {
  dlerror();
  void *symbol = dlsym(library, IOCPHOST_PLUGIN_ENTRY_NAME);
  if (symbol == NULL)
    dlerror();
  /* POSIX guarantees a data pointer from dlsym converts to a function. */
  return (iocphost_plugin_entry_fn)symbol;
}

static void library_close(void *library) { dlclose(library); }

/* A plugin runs with the host's rights, so whoever can change its file can
 * run code as the host. Refused: a file other users may write, and a
 * folder other users may write (they could put another file in its place),
 * unless the folder is sticky (like /tmp) and the file is the host user's
 * or root's, so others cannot rename or delete it. Symbolic links are
 * followed: what is checked is the file dlopen maps. Returns 0, or -1 with
 * the problem and the fix in reason. */
static int check_not_writable_by_others(const char *path, char *reason,
                                        size_t len) {
  char *real = realpath(path, NULL);
  if (real == NULL)
    return 0; /* missing or unreadable: dlopen says so in its own words */
  struct stat file, folder;
  int rc = -1;
  char *slash = strrchr(real, '/');
  char *dir = NULL;
  if (slash != NULL)
    dir = slash == real ? strdup("/") : strndup(real, (size_t)(slash - real));
  if (dir == NULL) {
    snprintf(reason, len, "out of memory");
  } else if (stat(real, &file) != 0 || stat(dir, &folder) != 0) {
    snprintf(reason, len, "cannot stat %s: %s", real, strerror(errno));
  } else if (file.st_mode & S_IWOTH) {
    snprintf(reason, len,
             "the file %s is writable by other users (mode %04o), so anyone "
             "on this machine could replace the code the host runs; fix: "
             "chmod o-w %s",
             real, (unsigned)(file.st_mode & 07777), real);
  } else if ((folder.st_mode & S_IWOTH) &&
             !((folder.st_mode & S_ISVTX) &&
               (file.st_uid == geteuid() || file.st_uid == 0))) {
    snprintf(reason, len,
             "its folder %s is writable by other users (mode %04o), so "
             "anyone on this machine could put another file in its place; "
             "fix: chmod o-w %s, or move the plugin to a folder only its "
             "owner can write",
             dir, (unsigned)(folder.st_mode & 07777), dir);
  } else {
    rc = 0;
  }
  free(dir);
  free(real);
  return rc;
}

#endif

/* Checks a descriptor read from the plugin; on success fills the module's
 * copy. Reads nothing beyond the plugin's struct_size. */
static int check_descriptor(plugin_module_t *m, const iocphost_plugin_t *d,
                            char *err, size_t err_len) {
  const char *cname = m->config_name;
  const char *path = m->path;
  uint32_t size = d->struct_size;
  if (size < DESCRIPTOR_HEADER_SIZE) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor too small: expected struct_size "
              "of at least %u bytes (ABI %d.%d, up to on_disconnected), found "
              "%u; initialise the descriptor with IOCPHOST_PLUGIN_HEADER",
              cname, path, (unsigned)IOCPHOST_PLUGIN_MIN_SIZE,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, (unsigned)size);
    return -1;
  }
  if (d->abi_major != IOCPHOST_ABI_MAJOR) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): ABI major %u is not supported: this host "
              "speaks ABI %d.x; rebuild the plugin against this host's SDK",
              cname, path, (unsigned)d->abi_major, IOCPHOST_ABI_MAJOR);
    return -1;
  }
  if (d->abi_minor > IOCPHOST_ABI_MINOR) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): ABI %u.%u is newer than this host's ABI "
              "%d.%d: expected minor %d or lower, found %u; upgrade the host "
              "or rebuild the plugin against this host's SDK",
              cname, path, (unsigned)d->abi_major, (unsigned)d->abi_minor,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, IOCPHOST_ABI_MINOR,
              (unsigned)d->abi_minor);
    return -1;
  }
  if (size < IOCPHOST_PLUGIN_MIN_SIZE) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor too small: expected struct_size "
              "of at least %u bytes (ABI %d.%d, up to on_disconnected), found "
              "%u; initialise the descriptor with IOCPHOST_PLUGIN_HEADER",
              cname, path, (unsigned)IOCPHOST_PLUGIN_MIN_SIZE,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, (unsigned)size);
    return -1;
  }

  iocphost_plugin_t *c = &m->descriptor;
  memset(c, 0, sizeof *c);
  memcpy(c, d, size < sizeof *c ? size : sizeof *c);
  m->struct_size = size;
  m->abi_minor = d->abi_minor;

  if (c->name == NULL || c->name[0] == '\0') {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor has no name: expected a "
              "non-empty name, found %s; set .name in the descriptor",
              cname, path, c->name == NULL ? "NULL" : "\"\"");
    return -1;
  }
  if (c->version == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor has no version: expected a "
              "version string such as \"1.0.0\", found NULL; set .version in "
              "the descriptor",
              cname, path);
    return -1;
  }
  const char *missing = NULL;
  if (c->on_connected == NULL)
    missing = "on_connected";
  else if (c->on_disconnected == NULL)
    missing = "on_disconnected";
  if (missing != NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): required callback %s is missing: expected "
              "a function, found NULL; set .%s in the descriptor",
              cname, path, missing, missing);
    return -1;
  }
  if (c->on_recv == NULL && c->on_packet == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no receive callback: expected on_recv "
              "(raw framing) or on_packet (packet framing), found neither; "
              "set at least one in the descriptor",
              cname, path);
    return -1;
  }
  return 0;
}

int plugin_module_open(const char *config_name, const char *path,
                       plugin_module_t **out, char *err, size_t err_len) {
  *out = NULL;
  if (config_name == NULL)
    config_name = "";
  if (path == NULL || path[0] == '\0') {
    set_error(err, err_len,
              "plugin \"%s\": no path: expected the path of a plugin library, "
              "found none",
              config_name);
    return -1;
  }
  plugin_module_t *m = calloc(1, sizeof *m);
  if (m == NULL || (m->config_name = copy_string(config_name)) == NULL ||
      (m->path = copy_string(path)) == NULL) {
    set_error(err, err_len, "plugin \"%s\" (%s): out of memory", config_name,
              path);
    plugin_module_close(m);
    return -1;
  }

  char reason[PATH_MAX_REASON];
#ifdef _WIN32
  int untrusted = trust_win_check_path_utf8(path, reason, sizeof reason);
#else
  int untrusted = check_not_writable_by_others(path, reason, sizeof reason);
#endif
  if (untrusted != 0) {
    set_error(err, err_len, "plugin \"%s\" (%s): refusing to load: %s",
              config_name, path, reason);
    plugin_module_close(m);
    return -1;
  }
  m->library = library_open(path, reason, sizeof reason);
  if (m->library == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): cannot load the library: expected a shared "
              "library built for this platform, found: %s; check the path, "
              "the file and its dependencies",
              config_name, path, reason);
    plugin_module_close(m);
    return -1;
  }

  iocphost_plugin_entry_fn entry = library_entry(m->library);
  if (entry == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no entry point: expected the exported "
              "function %s, found no such symbol; declare it with "
              "IOCPHOST_PLUGIN_ENTRY and build with iocphost_add_plugin()",
              config_name, path, IOCPHOST_PLUGIN_ENTRY_NAME);
    plugin_module_close(m);
    return -1;
  }

  /* The one piece of plugin code run before the checks: it must only
   * return the address of its descriptor. */
  const iocphost_plugin_t *descriptor = entry();
  if (descriptor == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no descriptor: expected %s() to return the "
              "address of the plugin's iocphost_plugin_t, found NULL; return "
              "a static descriptor",
              config_name, path, IOCPHOST_PLUGIN_ENTRY_NAME);
    plugin_module_close(m);
    return -1;
  }
  if (check_descriptor(m, descriptor, err, err_len) != 0) {
    plugin_module_close(m);
    return -1;
  }

  m->name = copy_string(m->descriptor.name);
  m->version = copy_string(m->descriptor.version);
  if (m->name == NULL || m->version == NULL) {
    set_error(err, err_len, "plugin \"%s\" (%s): out of memory", config_name,
              path);
    plugin_module_close(m);
    return -1;
  }
  *out = m;
  return 0;
}

void plugin_module_close(plugin_module_t *module) {
  if (module == NULL)
    return;
  if (module->library != NULL)
    library_close(module->library);
  free(module->config_name);
  free(module->path);
  free(module->name);
  free(module->version);
  free(module);
}

const iocphost_plugin_t *plugin_module_descriptor(const plugin_module_t *m) {
  return &m->descriptor;
}

const char *plugin_module_name(const plugin_module_t *m) { return m->name; }

const char *plugin_module_version(const plugin_module_t *m) {
  return m->version;
}

const char *plugin_module_config_name(const plugin_module_t *m) {
  return m->config_name;
}

const char *plugin_module_path(const plugin_module_t *m) { return m->path; }

uint32_t plugin_module_struct_size(const plugin_module_t *m) {
  return m->struct_size;
}

uint16_t plugin_module_abi_minor(const plugin_module_t *m) {
  return m->abi_minor;
}

int plugin_modules_check_unique(plugin_module_t *const *modules, size_t count,
                                char *err, size_t err_len) {
  for (size_t i = 1; i < count; i++) {
    for (size_t j = 0; j < i; j++) {
      const plugin_module_t *a = modules[j];
      const plugin_module_t *b = modules[i];
      if (strcmp(a->name, b->name) != 0)
        continue;
      set_error(err, err_len,
                "plugin \"%s\" (%s): duplicate plugin name: expected a name "
                "no other plugin has, found \"%s\", already the name of "
                "plugin \"%s\" (%s); give each plugin its own .name",
                b->config_name, b->path, b->name, a->config_name, a->path);
      return -1;
    }
  }
  return 0;
}

int plugin_module_check_framing(const plugin_module_t *m, int needs_packet,
                                const char *service_name, char *err,
                                size_t err_len) {
  const iocphost_plugin_t *d = &m->descriptor;
  if (needs_packet ? d->on_packet != NULL : d->on_recv != NULL)
    return 0;
  set_error(
      err, err_len,
      "service \"%s\": plugin \"%s\" (%s) cannot serve %s framing: "
      "expected %s, found NULL (the plugin has only %s); implement %s "
      "or set the service's \"framing\" to \"%s\"",
      service_name ? service_name : "", m->config_name, m->path,
      needs_packet ? "packet" : "raw", needs_packet ? "on_packet" : "on_recv",
      needs_packet ? "on_recv" : "on_packet",
      needs_packet ? "on_packet" : "on_recv", needs_packet ? "raw" : "packet");
  return -1;
}
