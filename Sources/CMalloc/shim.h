#ifndef PGCANVAS_CMALLOC_SHIM_H
#define PGCANVAS_CMALLOC_SHIM_H
// glibc's allocator settings (mallopt), which Swift's Glibc module leaves out. Other C libraries
// (musl, Darwin's) have no mallopt: nothing is declared there, and Allocator does nothing.
#if defined(__linux__)
#include <features.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#endif
#endif
