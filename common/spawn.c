#include "common/spawn.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Appends what fd has now to b (up to the cap); 0 at end of stream. */
static int drain(int fd, qp_buf *b)
{
    char chunk[8192];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n > 0 && b && b->len < QP_SPAWN_MAX_OUTPUT) {
        size_t keep = (size_t)n;
        if (keep > QP_SPAWN_MAX_OUTPUT - b->len)
            keep = QP_SPAWN_MAX_OUTPUT - b->len;
        qp_buf_append(b, chunk, keep);
    }
    return n > 0;
}

int qp_spawn_capture(const char *const *argv, qp_buf *out, qp_buf *err, int *exit_code)
{
    return qp_spawn_capture_timed(argv, out, err, exit_code, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int qp_spawn_capture_timed(const char *const *argv, qp_buf *out, qp_buf *err, int *exit_code, int timeout_s)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = 0, have_fa = 0, have_attr = 0;
    pid_t pid = -1;
    *exit_code = -1;
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot make a pipe", argv[0]);
        goto done;
    }
    if (posix_spawn_file_actions_init(&fa) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot start", argv[0]);
        goto done;
    }
    have_fa = 1;
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    /* the child starts with default signal handling and an empty mask,
     * whatever this process installed (the executor's Ctrl-C handler) */
    posix_spawnattr_init(&attr);
    have_attr = 1;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    /* its own process group: a Ctrl-C at the terminal reaches this process
     * only, which then decides (an sbatch killed half-way could have
     * submitted a job whose id nobody learns) */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    int e = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, environ);
    if (e != 0) {
        pid = -1;
        errno = e;
        rc = qp_error_errno(e == ENOENT ? QP_ENOTFOUND : QP_ERROR, "%s: cannot run it", argv[0]);
        goto done;
    }
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2, timed_out = 0;
    double deadline = timeout_s > 0 ? now_s() + timeout_s : 0;
    while (open_fds > 0) {
        int wait_ms = -1;
        if (deadline > 0) {
            double left = deadline - now_s();
            if (left <= 0) {
                timed_out = 1;
                kill(-pid, SIGKILL);   /* its group: whatever it started too */
                break;
            }
            wait_ms = (int)(left * 1000) + 1;
        }
        if (poll(fds, 2, wait_ms) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (!drain(fds[i].fd, i == 0 ? out : err)) {
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    if (timed_out)
        rc = qp_error_set(QP_ERROR, "%s: no answer in %d s; stopped it", argv[0], timeout_s);
done:
    if (have_fa)
        posix_spawn_file_actions_destroy(&fa);
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    return rc;
}
