/*
 * Shadow copies of plugin files (SPEC section 10). Every generation of a
 * plugin is loaded from its own copy under runtime_dir, so the deployed file
 * is never mapped (Linux) nor locked (Windows) and can be replaced at any
 * time by copy or rename.
 *
 * The copies of one instance live in <runtime_dir>/plugins-<name>-<pid>/,
 * removed when the instance ends; folders left by instances that died are
 * removed at the next start, and so is one with this process's own pid (a
 * container's pid 1 killed and started again). On POSIX everything is done
 * relative to descriptors of folders checked by trust.h, never following a
 * link: runtime_dir is the host's own, and so is everything in it.
 */
#ifndef IOCPHOST_SHADOW_H
#define IOCPHOST_SHADOW_H

#include <stddef.h>
#include <stdint.h>

/* Creates this process's shadow folder (0700) and removes the folders of
 * dead processes with the same name (and an old one of this pid). *dir is
 * malloc'd. */
int shadow_dir_create(const char *runtime_dir, const char *name, char **dir,
                      char *err, size_t err_len);
/* Removes the folder and what is left in it. */
void shadow_dir_remove(const char *dir);

/* Copies what source_fd holds (from its start: the descriptor of the file
 * that trust_open_plugin_file checked, named source in messages) to a new
 * <dir>/<plugin>.<generation><suffix>, and hashes what it copied (the hash
 * of the bytes loaded, not of a file that may change meanwhile). *path is
 * malloc'd. */
int shadow_copy(const char *dir, const char *plugin, unsigned generation,
                int source_fd, const char *source, char **path, uint64_t *hash,
                char *err, size_t err_len);
void shadow_remove(const char *path);

/* A 64-bit FNV-1a hash of a file's contents; 0, or -1 and a reason if
 * unreadable. fd_hash reads an open descriptor to its end (source names it
 * in messages). */
int file_hash(const char *path, uint64_t *hash, char *err, size_t err_len);
int fd_hash(int fd, const char *source, uint64_t *hash, char *err,
            size_t err_len);

#endif /* IOCPHOST_SHADOW_H */
