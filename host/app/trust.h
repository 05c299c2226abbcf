/*
 * Which files and folders the host may trust (SPEC sections 4 and 10).
 *
 * A plugin runs with the host's rights, and runtime_dir holds the control
 * socket and the copies the host maps: whoever can change one of them can
 * run code as the host, or answer in its name. So the host trusts a file or
 * folder only when nobody but its own user and root can change it: the
 * thing itself and every folder on the way from the root, links and their
 * targets alike. A refusal names the path at fault, why, and the fix.
 *
 * The decision is per platform, behind the three functions below:
 * trust_posix.c (owners and mode bits, walked with openat and O_NOFOLLOW);
 * on Windows trust_win.c decides from the DACLs. Until it lands,
 * trust_win_interim.c keeps Windows' earlier behaviour (no ownership check);
 * it goes when trust_win.c comes.
 */
#ifndef IOCPHOST_TRUST_H
#define IOCPHOST_TRUST_H

#include <stddef.h>

/* Opens a plugin file for reading if the host may trust it: a regular file
 * owned by the host's user or root, writable by neither its group nor
 * others, reached through folders and links that are the same (a sticky
 * folder, like /tmp, is fine for the entries its users cannot touch: the
 * host's user's and root's). Returns a descriptor of the very file checked,
 * so what is copied or hashed next is what was checked; or -1 with the
 * reason in reason. */
int trust_open_plugin_file(const char *path, char *reason, size_t len);

/* Makes sure runtime_dir is the host's own before anything is put there:
 * creates it if missing (mode 0700, with its missing parents, never inside a
 * folder the host may not trust), then requires it to be owned by the host's
 * user, writable by neither group nor others, on a trusted path. Never
 * changes the mode of an existing folder. Returns 0, or -1 with the folder
 * at fault and the fix in reason. */
int trust_prepare_runtime_dir(const char *path, char *reason, size_t len);

#ifndef _WIN32
#include <sys/stat.h>
#include <sys/types.h>

/* Opens a folder of the host's own (runtime_dir, a shadow folder) for
 * openat-style use after the checks of trust_prepare_runtime_dir; create
 * makes it (and missing parents) first. Returns a descriptor (O_DIRECTORY)
 * or -1 with the reason. */
int trust_open_private_dir(const char *path, int create, char *reason,
                           size_t len);

/* The decisions themselves, one step at a time (pure: unit-tested with
 * made-up owners and modes). user is the host's effective uid. Each
 * returns 0, or -1 with the reason naming the path and the fix. */

/* entry (a file, folder or link) found in folder: may someone other than
 * user and root change or replace it? */
int trust_check_entry(const struct stat *folder, const char *folder_path,
                      const struct stat *entry, const char *entry_path,
                      uid_t user, char *reason, size_t len);
/* The plugin file itself (its owner was checked as an entry): a regular
 * file that neither its group nor others may write. */
int trust_check_file(const struct stat *file, const char *path, char *reason,
                     size_t len);
/* runtime_dir or a folder the host made in it: a folder owned by user
 * himself (not root's, unless user is root) that neither its group nor
 * others may write. */
int trust_check_private_dir(const struct stat *dir, const char *path,
                            uid_t user, char *reason, size_t len);
#endif

#endif /* IOCPHOST_TRUST_H */
