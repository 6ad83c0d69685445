/* Running a program and reading what it prints: the Slurm executor's
 * sbatch, scontrol and scancel (pipeline/slurm.c).
 *
 * No shell is involved: argv goes to the program as it is, so a stage id
 * or a path can never be read as shell syntax.  posix_spawnp, not fork,
 * because the runner calls this from several worker threads at once.  The
 * program runs in a process group of its own: Ctrl-C at the terminal is
 * this process's to handle, never a half-finished sbatch's. */
#ifndef QP_COMMON_SPAWN_H
#define QP_COMMON_SPAWN_H

#include <stddef.h>

#include "common/buf.h"

/* At most this many bytes of each stream are kept (the rest is read and
 * dropped, so a chatty program cannot fill memory or block on its pipe). */
#define QP_SPAWN_MAX_OUTPUT (1u << 20)

/* Runs argv[0] (looked up in PATH) with argv, the environment of this
 * process and stdin from /dev/null; collects its stdout into out and its
 * stderr into err (either may be NULL: discarded) and waits for it.
 * *exit_code: its exit status, or 128 + the signal that ended it.
 * Returns 0 when it ran (whatever its exit status), QP_ERROR with a
 * message when it could not be started (not installed: QP_ENOTFOUND). */
int qp_spawn_capture(const char *const *argv, qp_buf *out, qp_buf *err, int *exit_code);
/* The same with a limit: a program still running after timeout_s seconds
 * (> 0) is killed, with its process group, and QP_ERROR says so. */
int qp_spawn_capture_timed(const char *const *argv, qp_buf *out, qp_buf *err, int *exit_code, int timeout_s);

#endif
