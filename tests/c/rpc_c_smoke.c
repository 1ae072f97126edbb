/* The rpc client C API (xproc/c/rpc.h) compiled as strict C11 and called from C: the codes a
 * program sees without a server (rpc_c_test.cc covers calls against a live server). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "xproc/c/rpc.h"

static int failures = 0;

static void expect(int condition, const char* what) {
  if (!condition) {
    fprintf(stderr, "rpc_c_smoke: FAILED: %s\n", what);
    ++failures;
  }
}

int main(void) {
  xproc_rpc_client_t* client = NULL;
  xproc_rpc_call_t* call = NULL;
  xproc_rpc_response_t response;
  struct timespec deadline;
  char name[64];
  snprintf(name, sizeof name, "capi-rpc-smoke-missing-%ld", (long)clock());
  expect(xproc_rpc_connect(name, &client) == ENOENT, "connect to a missing server: ENOENT");
  expect(client == NULL, "no handle after a failed connect");
  expect(xproc_rpc_connect(NULL, &client) == EINVAL, "connect(NULL): EINVAL");
  expect(xproc_rpc_call(NULL, 1, "a", 1, NULL, &response) == EINVAL, "call(NULL client)");
  expect(response.body == NULL && response.size == 0, "response cleared on error");
  expect(clock_gettime(CLOCK_MONOTONIC, &deadline) == 0, "clock_gettime");
  deadline.tv_nsec = 1000000000L;
  expect(xproc_rpc_call_async(NULL, 1, "a", 1, &deadline, &call) == EINVAL, "async(NULL)");
  expect(call == NULL, "no call handle after a failed async call");
  expect(xproc_rpc_call_wait(NULL, NULL, &response) == EINVAL, "wait(NULL)");
  expect(xproc_rpc_call_poll(NULL) == 0, "poll(NULL)");
  expect(xproc_rpc_call_cancel(NULL) == EINVAL, "cancel(NULL)");
  xproc_rpc_call_free(NULL);
  xproc_rpc_response_free(&response);
  expect(xproc_rpc_close(NULL) == 0, "close(NULL)");
  if (failures == 0) printf("rpc_c_smoke: ok\n");
  return failures == 0 ? 0 : 1;
}
