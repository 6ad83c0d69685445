#ifndef QP_COMMON_VERSION_H
#define QP_COMMON_VERSION_H
/* qpipe's version: goes into every run record and package. */
#define QP_VERSION "0.1.0"
#endif
