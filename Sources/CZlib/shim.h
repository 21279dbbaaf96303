// C glue for zlib: the headers the gzip codec uses.
#ifndef WRAPFS_CZLIB_SHIM_H
#define WRAPFS_CZLIB_SHIM_H
#include <zlib.h>
#endif
