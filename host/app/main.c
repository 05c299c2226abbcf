/*
 * iocphost: the command line (SPEC section 8): options and dispatch. The
 * commands live in commands.c, run.c and win_service.c (cli.h says which).
 *
 * Exit codes: 0 ok, 1 invalid config or plugin, 2 usage, 3 runtime failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "iocphost/plugin.h"
#include "version.h"

/* What the command line asked for. */
typedef struct options {
  const char *command;
  const char *subcommand; /* service install|uninstall|start|stop */
  const char *file;
  const char *name; /* --name: the Windows service's name */
  int json;
  int dry_run; /* reload --dry-run: say what a reload would do */
  const char *service_name; /* sessions --service NAME */
  const char *session_id;   /* kick ID */
  int service; /* run --service: started by the Windows service manager */
} options_t;

static void print_help(FILE *out) {
  fprintf(out,
          "iocphost %s - a plugin-hosting TCP server for game servers\n"
          "\n"
          "usage:\n"
          "  iocphost run     [-c FILE]            run in the foreground\n"
          "  iocphost check   [-c FILE]            validate the config, load "
          "and ABI-check every plugin\n"
          "  iocphost status  [-c FILE] [--json]   ask the running instance: "
          "services, sessions, plugins, counters\n"
          "  iocphost reload  [-c FILE] [--dry-run]  redeploy changed "
          "plugins and settings\n"
          "                                        (--dry-run: check them and "
          "say what would change)\n"
          "  iocphost reopen-logs [-c FILE]        reopen log.file after a "
          "rotation renamed it\n"
          "  iocphost stop    [-c FILE]            stop the running instance "
          "gracefully and wait for it\n"
          "  iocphost sessions [-c FILE] [--service NAME] [--json]\n"
          "                                        list the sessions: id, "
          "service, peer, age, bytes,\n"
          "                                        queued bytes, plugin "
          "generation, rooms\n"
          "  iocphost kick ID [-c FILE]            disconnect session ID "
          "(reason local)\n"
          "  iocphost service install|uninstall|start|stop [-c FILE] [--name "
          "NAME]\n"
          "                                        a Windows service "
          "(default NAME: the config's \"name\");\n"
          "                                        on Linux use systemd "
          "(conf/iocphost.service)\n"
          "  iocphost --version | --help\n"
          "\n"
          "FILE defaults to %s. Exit codes: 0 ok, 1 invalid config or "
          "plugin,\n2 usage, 3 runtime failure (e.g. address in use).\n"
          "Plugin ABI %d.%d.\n",
          IOCPHOST_VERSION, DEFAULT_CONFIG, IOCPHOST_ABI_MAJOR,
          IOCPHOST_ABI_MINOR);
}

int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "iocphost: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'iocphost --help' for usage.\n");
  return EXIT_USAGE;
}

/* ---- main ---- */

static int parse_options(int argc, char **argv, options_t *o) {
  memset(o, 0, sizeof *o);
  o->command = argv[1];
  o->file = DEFAULT_CONFIG;
  int i = 2;
  if (strcmp(o->command, "service") == 0 && argc > 2 && argv[2][0] != '-')
    o->subcommand = argv[i++];
  if (strcmp(o->command, "kick") == 0 && argc > 2 && argv[2][0] != '-')
    o->session_id = argv[i++];
  for (; i < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc)
        return usage_error("%s needs a file name", argv[i]);
      o->file = argv[++i];
    } else if (strcmp(argv[i], "--json") == 0 &&
               (strcmp(o->command, "status") == 0 ||
                strcmp(o->command, "sessions") == 0)) {
      o->json = 1;
    } else if (strcmp(argv[i], "--service") == 0 &&
               strcmp(o->command, "sessions") == 0) {
      if (i + 1 >= argc || argv[i + 1][0] == '\0')
        return usage_error("%s needs a service name", argv[i]);
      o->service_name = argv[++i];
    } else if (strcmp(argv[i], "--dry-run") == 0 &&
               strcmp(o->command, "reload") == 0) {
      o->dry_run = 1;
    } else if (strcmp(argv[i], "--name") == 0) {
      if (i + 1 >= argc || argv[i + 1][0] == '\0')
        return usage_error("%s needs a service name", argv[i]);
      o->name = argv[++i];
    } else if (strcmp(argv[i], "--service") == 0 &&
               strcmp(o->command, "run") == 0) {
      o->service = 1; /* the Windows service manager's; see run_as_service */
    } else {
      return usage_error("unknown option '%s'", argv[i]);
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (platform_init() != 0)
    return EXIT_RUNTIME;
  if (argc < 2) {
    print_help(stderr);
    return EXIT_USAGE;
  }
  const char *command = argv[1];
  if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
      strcmp(command, "help") == 0) {
    print_help(stdout);
    return EXIT_OK;
  }
  if (strcmp(command, "--version") == 0 || strcmp(command, "version") == 0) {
    printf("iocphost %s (plugin ABI %d.%d)\n", IOCPHOST_VERSION,
           IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR);
    return EXIT_OK;
  }
  options_t o;
  if (parse_options(argc, argv, &o) != 0)
    return EXIT_USAGE;
  if (strcmp(command, "run") == 0) {
    if (o.service)
      return run_as_service(o.file, o.name ? o.name : "iocphost");
    return cmd_run(o.file, 0);
  }
  if (strcmp(command, "check") == 0)
    return cmd_check(o.file);
  if (strcmp(command, "status") == 0 || strcmp(command, "reload") == 0 ||
      strcmp(command, "stop") == 0 || strcmp(command, "reopen-logs") == 0)
    return cmd_control(o.file, command, o.json, o.dry_run);
  if (strcmp(command, "service") == 0)
    return cmd_service(o.subcommand, o.file, o.name);
  if (strcmp(command, "sessions") == 0)
    return cmd_sessions(o.file, o.service_name, o.json);
  if (strcmp(command, "kick") == 0)
    return cmd_kick(o.file, o.session_id);
  return usage_error("unknown command '%s'", command);
}
