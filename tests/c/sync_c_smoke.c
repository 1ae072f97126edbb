/* Compiles the C API as C11 and runs a few calls from C: the static initializers, constants
 * and a lock/unlock round trip. Exit 0 on success; the failing line otherwise. */

#include <errno.h>
#include <stdio.h>

#include "xproc/c/sync.h"

static xproc_mutex_t static_mutex = XPROC_MUTEX_INITIALIZER;

#define CHECK(expression)                           \
  do {                                              \
    if (!(expression)) {                            \
      fprintf(stderr, "failed: %s\n", #expression); \
      return __LINE__;                              \
    }                                               \
  } while (0)

int main(void) {
  CHECK(XPROC_PROCESS_SHARED == 1);
  CHECK(xproc_mutex_lock(&static_mutex) == 0);
  CHECK(xproc_mutex_trylock(&static_mutex) == EBUSY);
  CHECK(xproc_mutex_unlock(&static_mutex) == 0);
  return 0;
}
