/*
 * Paths as the host shows them: every path that reaches a log line, a
 * status reply or a message goes through path_normalise once, where it is
 * made (config.c resolves every configured path with it), so that
 * "/srv/game/conf/../build/plugins/echo/echo.so" reads
 * "/srv/game/build/plugins/echo/echo.so".
 */
#ifndef IOCPHOST_PATH_H
#define IOCPHOST_PATH_H

/* Normalises path in place, lexically: empty and "." components and
 * repeated separators go, "name/.." folds away, a trailing separator goes.
 * Nothing is looked up on disk, so symbolic links are not resolved (the
 * config's own folder is already a real path, so "folder/.." is its real
 * parent). A relative path keeps the ".." it starts with; an absolute one
 * cannot climb above its root. An empty result is ".". On Windows both
 * separators count, a drive ("C:") or UNC ("\\server") prefix stays, and
 * the path is written with the separator it used first. The result is
 * never longer than the input. */
void path_normalise(char *path);

#endif /* IOCPHOST_PATH_H */
