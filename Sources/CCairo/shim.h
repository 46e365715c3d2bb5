#ifndef PGCANVAS_CCAIRO_SHIM_H
#define PGCANVAS_CCAIRO_SHIM_H
#include <cairo/cairo.h>
#include <cairo/cairo-pdf.h>
/* mallopt, for the heap settings of a process that writes lists (StationListRenderer.keepFreedMemory). */
#include <malloc.h>
#endif
