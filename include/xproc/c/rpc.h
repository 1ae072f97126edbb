#pragma once
/* The C API of the client side of xproc's rpc layer (include/xproc/rpc/client.h): calls to a
 * named rpc server in another process, answered in completion order, many in flight at once.
 *
 * What it defines: the opaque handles xproc_rpc_client_t (an xproc::rpc::Client: a claimed
 * client slot of the server's segment and its receiver thread) and xproc_rpc_call_t (a call in
 * flight: an xproc::rpc::PendingCall), the response record (status and a body the library
 * allocates) and the functions. Semantics are those of client.h: correlation ids never reused,
 * a late response (after a deadline or a cancel) dropped and never handed to another call.
 *
 * Return values: every function returns 0 or an errno value and never sets errno, except
 * xproc_rpc_call_poll (1 complete, 0 in flight). Codes used:
 *   ETIMEDOUT  the call's deadline passed (or, xproc_rpc_call_wait, the wait's deadline passed
 *              while the call goes on)
 *   ECANCELED  the call was cancelled (xproc_rpc_call_cancel, or the client was closed)
 *   EOWNERDEAD no live server: it died or shut down before answering, or none serves the name
 *              now (a restarted server is found again without reconnecting: client.h)
 *   EMSGSIZE   request body above the server's max_request_body (max_bulk_body when the server
 *              has bulk bodies on: larger bodies then travel by one cross-memory copy, and
 *              xproc_rpc_call_async copies them first, so the caller's buffer may go at once)
 *   ENOENT     no server segment of that name (connect)
 *   EAGAIN     every client slot of the server is held by a live client (connect)
 *   EALREADY   xproc_rpc_call_wait on a call whose outcome was already handed over
 *   EINVAL     a NULL or bad argument, a bad name, a segment that is not an rpc server of this
 *              layout, or a corrupt one (refused, never undefined behaviour)
 *   EACCES     permission denied (also: a bulk body one side may not pull, too large for
 *              inline; decision 0055)     ENOMEM / other OS errno: as the OS reports
 * No C++ exception crosses this API. Interrupted waits are resumed, never EINTR.
 *
 * Deadlines: ABSOLUTE CLOCK_MONOTONIC (as xproc/c/sync.h and xproc/c/channel.h), built with
 * clock_gettime(CLOCK_MONOTONIC, ...); NULL means none (wait until the outcome: the server's
 * death still ends the wait). tv_nsec outside [0, 999999999]: EINVAL.
 *
 * Thread-safety: every function may be called concurrently on one client handle from any
 * thread, except xproc_rpc_close (no other call on the client in progress or following). A
 * call handle is for one thread at a time; different call handles may be used concurrently.
 * Blocking: xproc_rpc_call and xproc_rpc_call_wait block until the outcome, the deadline or
 * the server's death; sending waits while the server's request ring is full (bounded the same
 * way). poll, cancel and free never block.
 * Deaths: the server dies: calls in flight end with EOWNERDEAD about 2 ms after the death.
 * This process dies: the server drops its responses and frees its slot.
 * fork(): a client handle inherited by a fork child must not be used (no receiver thread
 * there); the child connects again. It may be closed.
 */

#include <stddef.h>
#include <stdint.h>
#include <time.h> /* struct timespec */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xproc_rpc_client xproc_rpc_client_t;     /* opaque */
typedef struct xproc_rpc_pending_call xproc_rpc_call_t; /* opaque */

/* A response: the server's status (0xFFFFFFFF: the server's handler dropped the request
 * unanswered) and its body, allocated by the library (NULL when size is 0). Free the body with
 * xproc_rpc_response_free. */
typedef struct xproc_rpc_response {
  uint32_t status;
  void* body;
  size_t size;
} xproc_rpc_response_t;

/* Connects to the rpc server named `name` (the name its Server::create used): claims a client
 * slot and starts the receiver thread. 0 and *out = a new handle; ENOENT, EAGAIN (no free
 * slot), EINVAL, EACCES, or an OS errno. */
int xproc_rpc_connect(const char* name, xproc_rpc_client_t** out);
/* Completes calls still in flight with ECANCELED, frees the slot and the handle. NULL: 0.
 * Call handles of this client stay valid (their calls are complete) and must still be freed. */
int xproc_rpc_close(xproc_rpc_client_t* client);

/* One call: sends `size` bytes at `body` for `method` and waits for the response until
 * `deadline`. 0 and *response filled (free its body with xproc_rpc_response_free), or a code
 * above (*response then has status 0, body NULL, size 0). */
int xproc_rpc_call(xproc_rpc_client_t* client, uint32_t method, const void* body, size_t size,
                   const struct timespec* deadline, xproc_rpc_response_t* response);

/* Starts a call whose deadline is `deadline`; never waits for the response. 0 and *out = a
 * call handle (a call that could not be sent is a handle already complete with its error), or
 * EINVAL (NULL arguments, bad deadline) / ENOMEM. */
int xproc_rpc_call_async(xproc_rpc_client_t* client, uint32_t method, const void* body, size_t size,
                         const struct timespec* deadline, xproc_rpc_call_t** out);
/* Waits for the call's outcome until `wait_deadline` (NULL: until the outcome). 0 and
 * *response filled; the call's error; ETIMEDOUT when the wait's deadline passed while the call
 * is still in flight (it goes on: wait again); EALREADY once the outcome was handed over. */
int xproc_rpc_call_wait(xproc_rpc_call_t* call, const struct timespec* wait_deadline,
                        xproc_rpc_response_t* response);
/* 1 when the call is complete (xproc_rpc_call_wait returns without blocking), 0 otherwise
 * (and for NULL). */
int xproc_rpc_call_poll(const xproc_rpc_call_t* call);
/* Completes the call with ECANCELED if it is still in flight and tells the server (best
 * effort). No effect on a complete call. EINVAL for NULL. */
int xproc_rpc_call_cancel(xproc_rpc_call_t* call);
/* Frees the handle; a call still in flight is cancelled first. NULL: no effect. */
void xproc_rpc_call_free(xproc_rpc_call_t* call);

/* Frees a response's body and clears the record. NULL: no effect. */
void xproc_rpc_response_free(xproc_rpc_response_t* response);

#ifdef __cplusplus
}
#endif
