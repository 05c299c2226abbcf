/*
 * Windows: may the host load code from this file? (Linux's counterpart is
 * the permission check in plugin_loader.c.)
 *
 * A plugin runs inside the host, often a service, so whoever can change its
 * file or put another file in its place runs code as the host. Only the
 * host's own account (the process token's user), SYSTEM, Administrators and
 * TrustedInstaller may hold such rights; anyone else who does makes the file
 * untrusted:
 *   - the file: write, append, delete, change permissions, take ownership;
 *   - its folder: the same, and add a file (a DLL the plugin depends on is
 *     searched there first), add a subfolder, delete what is inside;
 *   - every folder above, up to the root: delete it or what is inside,
 *     change permissions, take ownership (adding new entries replaces
 *     nothing; Windows grants Authenticated Users "add subfolder" on C:\).
 * An owner may always change an object's permissions, so an owner outside
 * the trusted four is refused as well (unless an OWNER RIGHTS entry says
 * otherwise). A NULL DACL grants everyone everything.
 */
#ifndef IOCPHOST_TRUST_WIN_H
#define IOCPHOST_TRUST_WIN_H

#ifdef _WIN32
#include <stddef.h>
#include <windows.h>

typedef enum {
  TRUST_WIN_FILE,     /* the plugin file itself */
  TRUST_WIN_FOLDER,   /* the folder that holds it */
  TRUST_WIN_ANCESTOR, /* every folder above that one */
} trust_win_kind_t;

/* The decision, a pure function of a security descriptor: 0 when sd (which
 * must carry its owner and DACL) lets no one but self (the host's account),
 * SYSTEM, Administrators and TrustedInstaller change what the host would
 * load through an object of this kind; -1 otherwise, with a one-line reason
 * in why naming path (UTF-8, only for the message), the principal, the
 * rights and the icacls command that fixes it. */
int trust_win_decide(PSECURITY_DESCRIPTOR sd, PSID self, trust_win_kind_t kind,
                     const char *path, char *why, size_t why_len);

/* Reads the owner and DACL of the file at path and of every folder up to
 * its root (GetNamedSecurityInfoW), and of the real path's as well when
 * links lead elsewhere, and applies trust_win_decide with the process
 * token's user as self. 0 when trusted or when the file does not exist (the
 * loader says so in its own words); -1 with the reason in why. */
int trust_win_check_path(const wchar_t *path, char *why, size_t why_len);
/* The same for a UTF-8 path. */
int trust_win_check_path_utf8(const char *path, char *why, size_t why_len);

/* Creates the folder at path (UTF-8) with a DACL of its own, not inherited:
 * full control for the host's account, SYSTEM and Administrators, nothing
 * for anyone else (under C:\ProgramData a folder would otherwise inherit
 * "Users may add files", and with it a planted DLL beside the shadow
 * copies). A folder already there is kept only if trust_win_decide trusts
 * it as a plugin's folder; then it gets the same DACL. 0, or -1 with errno
 * set (EACCES when the folder is not trusted or its DACL cannot be set) and
 * the reason logged. */
int trust_win_make_private_dir(const char *path);

/* The platform half of the host's trust decision (trust.h where it exists),
 * for Windows; the same signatures as the POSIX versions.
 *
 * trust_open_plugin_file: opens the plugin file shared for reading only, so
 * that while the descriptor is open no one can write, rename or delete it,
 * then applies trust_win_check_path. Returns a read-only descriptor (_open)
 * of the very file checked, or -1 with the reason.
 *
 * trust_prepare_runtime_dir: creates runtime_dir if missing (its missing
 * parents inheriting as usual, itself with the private DACL of
 * trust_win_make_private_dir), then requires it to be trusted as a plugin's
 * folder is (no one else may add, delete or relabel anything in it) and
 * every folder above as those above a plugin. Never changes the DACL of a
 * folder that existed. 0, or -1 with the folder at fault and the fix. */
int trust_open_plugin_file(const char *path, char *reason, size_t len);
int trust_prepare_runtime_dir(const char *path, char *reason, size_t len);
#endif

#endif /* IOCPHOST_TRUST_WIN_H */
