#pragma once
// xproc::rpc::Server: the serving side of request/response over channels, in a named segment of
// kind rpc (layout.h, docs/layout/rpc.md; decisions: docs/decisions/0050-rpc.md).
//
// Clients (client.h) in any number of processes send requests on the segment's request channel;
// the server takes them one at a time, in its own worker threads (serve()) or in the caller's
// loop (poll_one()/serve_one()), and calls a Handler with the request and a Responder. The
// Responder may respond at once, or later from any thread (asynchronous handlers): each response
// goes straight to the calling client's own response channel, so responses leave in completion
// order, never behind a slower earlier request.
//
// Thread-safety: every member may be called from any thread, concurrently, except that the
// Server object itself is not moved or destroyed while another thread uses it. A Responder is a
// move-only value: one thread at a time. Handlers run concurrently on `threads` workers (plus
// any thread in poll_one/serve_one).
// Blocking: serve() returns at once (workers run until stop()/destruction); serve_one() blocks
// up to its deadline; poll_one() never parks. Responder::respond() does not block while the
// client's response ring has room; when it is full it waits (bounded by
// ServerOptions::response_timeout and by the client's liveness, looked at every
// channel::kPeerCheckPeriod). A body above ServerConfig::bulk_threshold goes in bulk
// (decision 0055): respond() registers it and waits until the client has pulled it, bounded the
// same way (response_timeout, the client's liveness); the body stays untouched until respond()
// returns. A bulk request is pulled by the worker before the handler runs (a copy, page faults
// only: never a wait on the client).
// Failures: create: invalid_argument (name, config, participant_capacity below max_clients + 2),
// already_exists (a live server serves that name), the segment's errors (segment.h), and the
// layout's (layout_mismatch, corrupt_segment), and with bulk on those of the companion segment
// "<name>.bulk" and its transfer table (transfer.h). Requests that fail a check (layout.h,
// Frames) are dropped and counted in statistics(), never handed to a handler; a bulk request
// whose descriptor fails (wrong size, length out of range, forged or withdrawn) is answered with
// an error frame (the call fails with bad_descriptor / message_too_large / not_found) and
// counted in bulk_rejected. A bulk request the server may not read (permission_denied: the
// client is not ptrace-readable) is answered permission_denied: the client resends it inline
// when it fits max_request_body (counted in bulk_fallbacks).
// Deaths:
//   * a client dies while the server pulls its bulk request (or before): the pull gets
//     peer_dead, the request is dropped and counted (bulk_dead_client). A client that dies
//     while a bulk response waits for its pull: respond() returns peer_dead within a check
//     period (open transfer) or one transfer liveness period (claimed).
//   * a client dies (calls in flight or not): its responses are dropped (counted) and its slot
//     freed, by the worker that finds the owner dead when it responds or by the sweep that runs
//     whenever a worker waited kSweepPeriod for a request; a new client can then claim the slot.
//     A client that dies mid-send leaves a record the channel skips (endpoint.h, Deaths).
//   * this server dies: clients with calls in flight get errc::peer_dead (client.h). The segment
//     stays; the next Server::create of the name takes it over (server word CAS, epoch bump), so
//     connected clients are served again without reconnecting. Requests the dead server had
//     taken are lost (their calls got peer_dead); requests still queued are served by the new
//     server and their responses, if their calls already failed, dropped as late by the client.
//   * Server::create of a name whose segment has another config and no live server unlinks the
//     old name and creates a new segment; clients of the old one get peer_dead and must connect
//     again (Client::connect).
// Destruction: stops and joins the workers, then withdraws the server word (clients' calls still
// in flight get peer_dead). Responders still held keep the mapping alive; their responses are
// still sent. The name goes when the last participant detaches (unlink_when_last_detaches).
// fork(): a child's copy of a Server serves nothing (no workers, a detached participant): it must
// not be used; it may be destroyed.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "xproc/bulk/transfer.h"
#include "xproc/channel/endpoint.h"
#include "xproc/rpc/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/sync/scope.h"
#include "xproc/sys/result.h"

namespace xproc::rpc {

// How long a worker waits for a request before it sweeps the client slots for dead owners.
inline constexpr std::chrono::milliseconds kSweepPeriod{128};

struct ServerOptions {
  ServerConfig config{};
  shm::SegmentOptions segment{};  // mode, participant_capacity (>= max_clients + 2), ...
  // A live client that does not read its responses: a response that cannot be queued within
  // this time is dropped (counted in responses_timed_out).
  std::chrono::milliseconds response_timeout{2000};
  channel::WaitPolicy wait_policy{};  // how workers wait for requests (endpoint.h)
  // Keep a table of the requests being handled, so that a client's cancel notice (layout.h,
  // kFlagCancel) reaches the Responder (Responder::cancelled()). Costs a mutex and a hash-map
  // insert and erase per request; off: cancel notices are dropped (cancels_ignored).
  bool track_cancellation = false;
  // The endpoint of the companion segment's transfer table (bulk on; decision 0055): e.g.
  // allow_any_reader under Yama ptrace_scope 1, so that clients that are not this process's
  // descendants may pull its responses (transfer.h).
  bulk::TransferEndpointOptions bulk{};
};

// One request, as a handler sees it. `body` points into the worker's buffer and is valid only
// during the handler call: an asynchronous handler copies what it keeps.
struct Request {
  std::uint32_t method = 0;
  std::span<const std::byte> body{};
  std::uint32_t client_slot = 0;
  std::uint64_t correlation_id = 0;
};

struct ServerStatistics {
  std::uint64_t requests = 0;               // handed to a handler
  std::uint64_t responses = 0;              // queued to a client
  std::uint64_t abandoned = 0;              // Responders destroyed unanswered (kStatusAbandoned)
  std::uint64_t handler_exceptions = 0;     // handlers that threw (their Responder abandoned)
  std::uint64_t bad_version = 0;            // request frames of another version
  std::uint64_t bad_length = 0;             // shorter than a frame header, or lengths disagree
  std::uint64_t bad_flags = 0;              // unknown flag bits or nonzero reserved fields
  std::uint64_t bad_slot = 0;               // client slot out of range
  std::uint64_t stale_requests = 0;         // generation not the slot's, or a free slot
  std::uint64_t responses_dead_client = 0;  // dropped: the client died or left its slot
  std::uint64_t responses_timed_out = 0;    // dropped: the client's ring stayed full
  std::uint64_t slots_freed = 0;            // slots of dead clients freed by this server
  std::uint64_t cancels = 0;                // cancel notices that marked a request being handled
  std::uint64_t cancels_ignored = 0;  // for no request being handled (answered, not yet taken,
                                      // or tracking off)
  // Bulk bodies (ServerConfig::bulk_threshold; decision 0055):
  std::uint64_t bulk_requests = 0;     // request bodies pulled from a client
  std::uint64_t bulk_responses = 0;    // response bodies a client pulled
  std::uint64_t bulk_fallbacks = 0;    // bodies above the threshold that went inline or failed
                                       // because a pull was refused (permission_denied), the
                                       // client asked for inline responses, or the table was full
  std::uint64_t bulk_rejected = 0;     // bulk request frames refused (wrong size, length out of
                                       // range, forged or withdrawn descriptor) and responses the
                                       // client's pull failed on for another reason
  std::uint64_t bulk_dead_client = 0;  // bulk requests dropped: the client died before or
                                       // during the pull
};

namespace detail {
class ServerCore;
}

// The right and duty to answer one request, exactly once.
class Responder {
 public:
  Responder() noexcept = default;
  Responder(Responder&&) noexcept = default;
  Responder& operator=(Responder&& other) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();  // unanswered: responds kStatusAbandoned with an empty body

  // Sends the response. {} (queued; with a bulk body: pulled by the client; the responder is
  // spent), or: message_too_large (body above max_response_body, or max_bulk_body with bulk on;
  // the responder stays active, respond again), invalid_argument (already spent), peer_dead
  // (the client died or left: dropped, spent), timed_out (the client's ring stayed full, or it
  // did not pull a bulk body, for response_timeout: dropped, spent), permission_denied (a bulk
  // body the client may not pull and too large for inline: the call fails with it, spent),
  // limit_reached (likewise, every transfer slot busy), corrupt_segment (spent).
  [[nodiscard]] std::error_code respond(std::span<const std::byte> body, std::uint32_t status = 0);
  bool active() const noexcept { return core_ != nullptr; }
  // True once the client's cancel notice for this request arrived (with
  // ServerOptions::track_cancellation; always false without). The client has given up on the
  // call: a handler may stop early; whatever it responds is dropped by the client as late.
  bool cancelled() const noexcept;

 private:
  friend class detail::ServerCore;
  Responder(std::shared_ptr<detail::ServerCore> core, std::uint32_t slot, std::uint32_t generation,
            std::uint64_t correlation, std::shared_ptr<std::atomic<bool>> cancelled,
            bool inline_only) noexcept
      : core_(std::move(core)),
        cancelled_(std::move(cancelled)),
        slot_(slot),
        generation_(generation),
        correlation_(correlation),
        inline_only_(inline_only) {}
  // Answers kStatusAbandoned (destruction, move-assignment over an active responder).
  void abandon() noexcept;

  std::shared_ptr<detail::ServerCore> core_;
  std::shared_ptr<std::atomic<bool>> cancelled_;  // the tracking table's flag; null: untracked
  std::uint32_t slot_ = 0;
  std::uint32_t generation_ = 0;
  std::uint64_t correlation_ = 0;
  bool inline_only_ = false;  // the request carried kFlagInlineResponse
};

class Server {
 public:
  using Handler = std::function<void(const Request& request, Responder responder)>;

  // Creates /dev/shm/xproc.<name> (or takes over the segment of a dead server of that name, see
  // Deaths) and becomes its server. Serves nothing until serve() or poll_one()/serve_one().
  static Result<Server> create(std::string_view name, const ServerOptions& options = {});

  Server() noexcept = default;
  Server(Server&& other) noexcept;
  Server& operator=(Server&& other) noexcept;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // Starts `threads` workers that call `handler` for each request until stop(). invalid_argument
  // when threads is 0, the server is empty or already serving; the OS error of thread creation.
  [[nodiscard]] std::error_code serve(Handler handler, unsigned threads);
  // Stops the workers (each finishes the handler it runs) and joins them. Idempotent. Not from
  // a handler running on a worker (it would join itself).
  void stop();

  // Handles one request in the calling thread if one is queued: true when a request went to
  // `handler`, false when none was ready (malformed requests met on the way are dropped and
  // counted), or corrupt_segment / ENOMEM (std::errc::not_enough_memory: the request stays
  // queued).
  Result<bool> poll_one(const Handler& handler);
  // Waits for one request until `deadline` and handles it: {} or timed_out / corrupt_segment /
  // ENOMEM.
  [[nodiscard]] std::error_code serve_one(const Handler& handler, sync::Deadline deadline);

  ServerStatistics statistics() const noexcept;
  // This server's takeover count of the segment (1 for the server that created it).
  std::uint32_t epoch() const noexcept { return epoch_; }
  const ServerConfig& config() const noexcept;
  shm::Segment& segment() const noexcept;
  bool valid() const noexcept { return core_ != nullptr; }

 private:
  void shut_down() noexcept;

  std::shared_ptr<detail::ServerCore> core_;
  std::vector<std::thread> workers_;
  std::shared_ptr<std::atomic<bool>> stopping_;
  std::uint32_t epoch_ = 0;
};

}  // namespace xproc::rpc
