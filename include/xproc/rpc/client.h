#pragma once
// xproc::rpc::Client: the calling side of request/response over channels (server.h; layout.h;
// docs/decisions/0050-rpc.md).
//
// Client::connect(name) opens a server's segment and claims one client slot (its own response
// channel). Calls carry a correlation id (per client, growing from 1); responses are taken off
// the response channel, and the matching call completed whatever the order the server answers
// in, by one leader at a time: a thread blocked in call() or PendingCall::wait*() receives for
// itself (and for every other call) while it waits, so the server's commit wakes the caller
// directly; while no caller waits, the Client's receiver thread does it (decision 0054).
// Many calls may be in flight at once, from any number of threads:
// call() (blocking), async_call() (a PendingCall handle: wait, wait_until, poll, cancel) and
// call_many() (responses handed to a callback in completion order, each with its request index).
//
// Deadlines are the client's: a call not answered by its deadline completes with timed_out; a
// response that comes later is dropped and counted (late_responses), never handed to another
// call (correlation ids are never reused within a Client; the slot generation in each frame
// tells a response meant for a slot's previous owner). Cancellation completes the call with
// errc::cancelled at once, and queues a cancel notice to the server if the request ring has room
// (never waits): a server that tracks cancellation shows it to the handler
// (Responder::cancelled()); the response, if one still comes, is dropped as late.
//
// Thread-safety: every Client member may be called concurrently from any thread (not while the
// Client is moved or destroyed). A PendingCall is a value for one thread at a time; different
// PendingCalls of one Client may be used concurrently.
// Blocking: call() and PendingCall::wait*() block until the response, the deadline, or the
// server's death; sending blocks while the request ring is full (bounded the same way).
// Bulk bodies (ServerConfig::bulk_threshold, decision 0055): a request body above the threshold
// is registered for the server to pull instead of copied into the ring. call() and call_many()
// read the caller's span until they return (they let go of the registration first, waiting
// while the server copies, bounded by its liveness); async_call() copies such a body into the
// call before it returns (the caller may free its buffer at once), as it copies an inline one
// into the ring. A bulk response is pulled by whoever dispatches it (a leading caller or the
// receiver thread) straight into Response::body.
// call_many() blocks until every call completed. poll() and cancel() never block.
// Failures (of a call): timed_out, cancelled, peer_dead (no live server: the server died or
// shut down before answering, or none serves the segment now), message_too_large (body above the
// server's max_request_body, or max_bulk_body with bulk on; or a bulk response frame whose
// length is out of range), corrupt_segment (a channel no correct peer writes); with bulk on:
// permission_denied (a body above the threshold that one side may not pull, too large for
// inline), bad_descriptor (a bulk frame the server rejected, or a bulk response this client
// could not pull: forged), not_found (the server found the request withdrawn), limit_reached
// (every transfer slot busy and the body too large for inline). connect: the segment's errors
// (not_found when nobody created the name; with bulk on also for "<name>.bulk"), the layout's
// (layout_mismatch, corrupt_segment), the transfer table's (transfer.h), limit_reached (every
// slot held by a live client). A pull refused either way falls back to inline when the body
// fits (counted in bulk_fallbacks); the client probes at connect whether it may pull from the
// server and learns at the first refused request that the server may not pull from it.
// Responses that fail a check (layout.h, Frames) are dropped and counted in statistics().
// Deaths:
//   * the server dies (or shuts down): calls in flight complete with peer_dead about
//     channel::kPeerCheckPeriod (2 ms) after the death: a caller blocked in call(),
//     PendingCall::wait*() or call_many() looks at the server itself every kPeerCheckPeriod, and
//     the receiver thread does so for every pending call every kPeerCheckPeriod while calls are
//     pending (every kIdlePeerCheckPeriod while none is). New calls fail with peer_dead at once
//     when the segment names no server (it shut down) or a server seen dead, and otherwise
//     within kPeerCheckPeriod of a death like calls in flight (the server's liveness is looked
//     up at most once per kPeerCheckPeriod, not per call: the lookup is a system call).
//   * a restarted server (Server::create of the same name taking the segment over) serves this
//     client again without reconnecting: calls made after it took over succeed; calls in flight
//     across the restart fail with peer_dead (the epoch they went to is gone). A server that had
//     to create a new segment (another config) is found only by a new Client::connect.
//   * the server dies while a bulk request of a call is open or being pulled: the call gets
//     peer_dead as above; its registration is withdrawn (open) or let go once the transfer
//     layer sees the dead claimer (one liveness period, 10 ms) before the outcome is returned.
//   * this client dies: the server drops its responses and frees its slot (server.h); a bulk
//     request of it is dropped when the server's pull finds it dead.
// Destruction: stops the receiver, completes calls in flight with cancelled, frees the slot.
// fork(): a child's copy of a Client has no receiver thread and a detached participant: it must
// not be used; connect again in the child.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>

#include "xproc/bulk/transfer.h"
#include "xproc/channel/endpoint.h"
#include "xproc/rpc/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/result.h"

namespace xproc::rpc {

struct ClientOptions {
  shm::SegmentOptions segment{};  // mode checks, allow_other_owner, ready_timeout...
  // How the leader (a waiting caller, or the receiver thread) waits for responses, and how
  // other callers blocked in call() or PendingCall::wait*() spin and yield before they park
  // (endpoint.h, WaitPolicy).
  channel::WaitPolicy wait_policy{};
  // The endpoint of the server's companion transfer table (bulk on; decision 0055): e.g.
  // allow_any_reader under Yama ptrace_scope 1, so that the server may pull this process's
  // bulk requests (transfer.h).
  bulk::TransferEndpointOptions bulk{};
};

struct Response {
  std::uint32_t status = 0;  // the server's status (kStatusAbandoned: the handler dropped it)
  std::vector<std::byte> body;
};

struct ClientStatistics {
  std::uint64_t calls = 0;                // calls started
  std::uint64_t responses = 0;            // delivered to their call
  std::uint64_t timed_out = 0;            // calls completed with timed_out
  std::uint64_t cancelled = 0;            // calls completed with cancelled
  std::uint64_t peer_dead = 0;            // calls completed with peer_dead
  std::uint64_t late_responses = 0;       // for a call that had timed out or was cancelled
  std::uint64_t unknown_responses = 0;    // a correlation id this client never issued
  std::uint64_t stale_responses = 0;      // another generation of the slot (a previous owner's)
  std::uint64_t malformed_responses = 0;  // bad version, lengths or flags
  std::uint64_t cancel_notices = 0;       // cancel notices queued to the server
  // Bulk bodies (ServerConfig::bulk_threshold; decision 0055):
  std::uint64_t bulk_requests = 0;   // requests sent as a descriptor for the server to pull
  std::uint64_t bulk_responses = 0;  // response bodies pulled from the server
  std::uint64_t bulk_fallbacks = 0;  // bodies above the threshold that went inline (or failed)
                                     // because a pull was refused either way, or the table
                                     // was full
  std::uint64_t bulk_rejected = 0;   // bulk response frames refused (wrong size, length out of
                                     // range, a pull that failed other than by death)
};

// One request of call_many().
struct CallSpec {
  std::uint32_t method = 0;
  std::span<const std::byte> body{};
};

namespace detail {
class ClientCore;
struct CallState;
}  // namespace detail

// A call in flight (async_call()). Destroying it before completion cancels the call.
class PendingCall {
 public:
  PendingCall() noexcept = default;
  PendingCall(PendingCall&&) noexcept = default;
  PendingCall& operator=(PendingCall&& other) noexcept;
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  ~PendingCall();

  // The outcome, once complete: the response, or the call's error. Blocks until the response,
  // the call's deadline, or the server's death. An empty PendingCall: invalid_argument.
  // The outcome is handed over once: a second wait() returns invalid_argument.
  Result<Response> wait();
  // As wait(), but returns timed_out at `deadline` if the call is still in flight then (the
  // call itself goes on, up to its own deadline).
  Result<Response> wait_until(sync::Deadline deadline);
  // True once the call completed (wait() then returns without blocking).
  bool poll() const noexcept;
  // Completes the call with errc::cancelled if it is still in flight (its response, should it
  // come, is dropped as late) and tells the server (best effort, see the banner). No effect on
  // a completed call.
  void cancel() noexcept;
  bool valid() const noexcept { return state_ != nullptr; }

 private:
  friend class detail::ClientCore;
  friend class Client;
  explicit PendingCall(std::shared_ptr<detail::CallState> state) noexcept
      : state_(std::move(state)) {}
  // wait_until() by a caller that already leads the response channel (leading) or not.
  Result<Response> wait_until(sync::Deadline deadline, bool leading);
  std::shared_ptr<detail::CallState> state_;
};

class Client {
 public:
  static Result<Client> connect(std::string_view name, const ClientOptions& options = {});

  Client() noexcept = default;
  Client(Client&& other) noexcept;
  Client& operator=(Client&& other) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // One call, blocking until its outcome (banner: Failures).
  Result<Response> call(std::uint32_t method, std::span<const std::byte> body,
                        sync::Deadline deadline);
  // Starts a call; its outcome comes from the handle. Never fails itself: a call that could not
  // be sent is a handle already complete with the error. The body is copied before this returns
  // (into the ring, or, for a bulk body, into storage the call owns until it completes): the
  // caller may reuse or free it at once.
  PendingCall async_call(std::uint32_t method, std::span<const std::byte> body,
                         sync::Deadline deadline);
  // Starts every request, then calls on_complete(index, outcome) once per request, in the order
  // the outcomes arrive, from the calling thread; returns when all have been handed over.
  // Requests still in flight at `deadline` complete with timed_out.
  using Completion = std::function<void(std::size_t index, Result<Response> outcome)>;
  void call_many(std::span<const CallSpec> requests, sync::Deadline deadline,
                 const Completion& on_complete);

  ClientStatistics statistics() const noexcept;
  std::uint32_t slot() const noexcept;
  const ServerConfig& config() const noexcept;
  bool valid() const noexcept { return core_ != nullptr; }

 private:
  std::shared_ptr<detail::ClientCore> core_;
};

}  // namespace xproc::rpc
