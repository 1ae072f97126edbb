// xproc_rpc_*: the C face of xproc::rpc::Client (include/xproc/c/rpc.h).
//
// Both handles are heap objects: a client holds an rpc::Client, a call an rpc::PendingCall and
// whether its outcome was handed over. Response bodies are copied into malloc'ed memory so that
// C frees them with free() (xproc_rpc_response_free). Every entry point catches exceptions
// (guarded) and returns an errno value through to_errno.

#include "xproc/c/rpc.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

#include "sync_internal.h"
#include "xproc/rpc/client.h"

struct xproc_rpc_client {
  xproc::rpc::Client client;
};

struct xproc_rpc_pending_call {
  xproc::rpc::PendingCall call;
  bool taken = false;  // the outcome went to a caller of xproc_rpc_call_wait
};

namespace xproc::c_api {
namespace {

void clear(xproc_rpc_response_t* response) noexcept {
  response->status = 0;
  response->body = nullptr;
  response->size = 0;
}

// NULL: no deadline.
int deadline_or_forever(const struct timespec* abstime, sync::Deadline& deadline) noexcept {
  if (abstime == nullptr) {
    deadline = sync::Deadline::max();
    return 0;
  }
  return to_deadline(abstime, deadline);
}

// Copies a response into *out (malloc'ed body). ENOMEM leaves *out cleared.
int hand_over(rpc::Response& response, xproc_rpc_response_t* out) noexcept {
  clear(out);
  if (!response.body.empty()) {
    void* body = std::malloc(response.body.size());
    if (body == nullptr) return ENOMEM;
    std::memcpy(body, response.body.data(), response.body.size());
    out->body = body;
    out->size = response.body.size();
  }
  out->status = response.status;
  return 0;
}

std::span<const std::byte> body_of(const void* body, std::size_t size) noexcept {
  return {static_cast<const std::byte*>(body), size};
}

}  // namespace
}  // namespace xproc::c_api

using xproc::c_api::guarded;
using xproc::c_api::to_errno;

extern "C" {

int xproc_rpc_connect(const char* name, xproc_rpc_client_t** out) {
  if (name == nullptr || out == nullptr) return EINVAL;
  *out = nullptr;
  return guarded([&] {
    auto client = xproc::rpc::Client::connect(name);
    if (!client) return to_errno(client.error());
    auto* handle = new xproc_rpc_client{std::move(*client)};
    *out = handle;
    return 0;
  });
}

int xproc_rpc_close(xproc_rpc_client_t* client) {
  delete client;  // ~Client: calls in flight complete with cancelled; noexcept
  return 0;
}

int xproc_rpc_call(xproc_rpc_client_t* client, uint32_t method, const void* body, size_t size,
                   const struct timespec* deadline, xproc_rpc_response_t* response) {
  if (response != nullptr) xproc::c_api::clear(response);
  if (client == nullptr || response == nullptr || (body == nullptr && size != 0)) return EINVAL;
  xproc::sync::Deadline until;
  if (int code = xproc::c_api::deadline_or_forever(deadline, until)) return code;
  return guarded([&] {
    auto outcome = client->client.call(method, xproc::c_api::body_of(body, size), until);
    if (!outcome) return to_errno(outcome.error());
    return xproc::c_api::hand_over(*outcome, response);
  });
}

int xproc_rpc_call_async(xproc_rpc_client_t* client, uint32_t method, const void* body, size_t size,
                         const struct timespec* deadline, xproc_rpc_call_t** out) {
  if (out != nullptr) *out = nullptr;
  if (client == nullptr || out == nullptr || (body == nullptr && size != 0)) return EINVAL;
  xproc::sync::Deadline until;
  if (int code = xproc::c_api::deadline_or_forever(deadline, until)) return code;
  return guarded([&] {
    auto* handle = new xproc_rpc_pending_call{};
    handle->call = client->client.async_call(method, xproc::c_api::body_of(body, size), until);
    *out = handle;
    return 0;
  });
}

int xproc_rpc_call_wait(xproc_rpc_call_t* call, const struct timespec* wait_deadline,
                        xproc_rpc_response_t* response) {
  if (response != nullptr) xproc::c_api::clear(response);
  if (call == nullptr || response == nullptr) return EINVAL;
  if (call->taken) return EALREADY;
  xproc::sync::Deadline until;
  if (int code = xproc::c_api::deadline_or_forever(wait_deadline, until)) return code;
  return guarded([&] {
    auto outcome = call->call.wait_until(until);
    if (!outcome && outcome.error() == xproc::errc::timed_out && !call->call.poll()) {
      // Still in flight: the wait's own deadline. The call goes on.
      return ETIMEDOUT;
    }
    if (!outcome && outcome.error() == xproc::errc::timed_out) {
      // Complete now: either the outcome was the call's own timed_out (handed over already:
      // a second look answers invalid_argument), or the response came right after the wait's
      // deadline (a second look hands it over).
      auto again = call->call.wait_until(xproc::sync::Clock::now());
      if (!again && again.error() == xproc::errc::invalid_argument) {
        call->taken = true;
        return ETIMEDOUT;
      }
      outcome = std::move(again);
    }
    call->taken = true;
    if (!outcome) return to_errno(outcome.error());
    return xproc::c_api::hand_over(*outcome, response);
  });
}

int xproc_rpc_call_poll(const xproc_rpc_call_t* call) {
  return call != nullptr && call->call.poll() ? 1 : 0;
}

int xproc_rpc_call_cancel(xproc_rpc_call_t* call) {
  if (call == nullptr) return EINVAL;
  call->call.cancel();  // noexcept
  return 0;
}

void xproc_rpc_call_free(xproc_rpc_call_t* call) {
  delete call;  // ~PendingCall cancels a call in flight; noexcept
}

void xproc_rpc_response_free(xproc_rpc_response_t* response) {
  if (response == nullptr) return;
  std::free(response->body);
  xproc::c_api::clear(response);
}

}  // extern "C"
