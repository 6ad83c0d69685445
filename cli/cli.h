/* Sub-commands other than run/plan/verify (which go through the runner). */
#ifndef QP_CLI_CLI_H
#define QP_CLI_CLI_H

/* Each returns the process exit status; argv[0] is the sub-command name. */
int qp_cli_graph(int argc, char **argv);
int qp_cli_stages(int argc, char **argv);
int qp_cli_log(int argc, char **argv);
int qp_cli_diff(int argc, char **argv);
int qp_cli_tokenize(int argc, char **argv);
int qp_cli_cache(int argc, char **argv, const char *default_cache_dir);

/* Process exit status for a qp_err code: 0 ok, 1 error, 2 usage/recipe,
 * 3 gate rejected, 4 verify mismatch (README: exit codes). */
int qp_exit_status(int code);

#endif
