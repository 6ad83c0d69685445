/* The program's exit codes: the one place a qp_err becomes a process status. */
#include "cli/cli.h"
#include "common/error.h"

int qp_exit_status(int code)
{
    switch (code) {
    case QP_OK:      return 0;
    case QP_EUSAGE:  return 2;
    case QP_EGATE:   return 3;
    case QP_EVERIFY: return 4;
    default:         return 1;
    }
}
