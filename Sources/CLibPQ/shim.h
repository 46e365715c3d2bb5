#ifndef PGCANVAS_CLIBPQ_SHIM_H
#define PGCANVAS_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#include <poll.h>
#endif
