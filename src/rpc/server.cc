// Server: takes requests off the request channel, hands them to handlers, queues responses on
// the calling client's response channel (server.h; docs/decisions/0050-rpc.md).
#include "xproc/rpc/server.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>

#include "rpc_internal.h"
#include "xproc/bulk/transfer.h"
#include "xproc/sys/error.h"

namespace xproc::rpc {
namespace detail {

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(std::unique_ptr<shm::Segment> segment, SegmentView view, const ServerOptions& options,
             std::unique_ptr<shm::Segment> bulk_segment, bulk::TransferEndpoint bulk) noexcept
      : segment_(std::move(segment)),
        view_(std::move(view)),
        options_(options),
        bulk_segment_(std::move(bulk_segment)),
        bulk_(std::move(bulk)) {
    view_.requests.set_wait_policy(options.wait_policy);
  }

  shm::Segment& segment() noexcept { return *segment_; }
  const ServerConfig& config() const noexcept { return view_.config; }
  ServerHeader& header() noexcept { return *view_.header; }

  // One request off the channel, validated and handled. `deadline` nullptr: try once.
  // {} handled one; would_block / timed_out none came; corrupt_segment. A wake-up (an empty
  // message) ends the call with would_block when `return_on_wake` (workers: to look at their
  // stop flag), and is skipped otherwise.
  // `bulk_buffer` receives bulk request bodies (its capacity is reused like `buffer`'s).
  std::error_code take_one(const Server::Handler& handler, std::vector<std::byte>& buffer,
                           std::vector<std::byte>& bulk_buffer, const sync::Deadline* deadline,
                           bool return_on_wake = false);

  // Sends a response: inline, or in bulk when the body is above the threshold and the client
  // may pull (not `inline_only`); then waits for the client's pull (bounded: response_timeout,
  // the client's liveness). Falls back to inline when the client's pull is refused.
  std::error_code respond(std::uint32_t slot, std::uint32_t generation, std::uint64_t correlation,
                          std::span<const std::byte> body, std::uint32_t status, bool inline_only);
  // The largest body respond() takes.
  std::size_t max_response() const noexcept {
    return view_.config.bulk_threshold != 0 ? view_.config.max_bulk_body
                                            : view_.config.max_response_body;
  }
  // Frees the slots of dead clients (one F_OFD_GETLK per held slot); one sweeper at a time.
  void sweep();
  // sweep() when the last one is kSweepPeriod old (busy workers call it after each request).
  void maybe_sweep() {
    // relaxed: a time hint; two workers sweeping at once is excluded by sweeping_.
    if (sync::Clock::now().time_since_epoch().count() -
            last_sweep_.load(std::memory_order_relaxed) >=
        std::chrono::duration_cast<sync::Clock::duration>(kSweepPeriod).count()) {
      sweep();
    }
  }
  // Queues an empty message on the request channel: a wake-up for one parked worker.
  void wake() noexcept { (void)view_.requests.try_send({}); }
  void count_abandoned() noexcept { abandoned_.fetch_add(1, std::memory_order_relaxed); }

  // The cancellation table (ServerOptions::track_cancellation): requests being handled, by
  // slot, generation and correlation id.
  std::shared_ptr<std::atomic<bool>> track(const RequestFrame& frame);
  void forget(std::uint32_t slot, std::uint32_t generation, std::uint64_t correlation) noexcept;
  void cancel(const RequestFrame& frame) noexcept;

  ServerStatistics statistics() const noexcept;
  // This server's id in the bulk segment (0: bulk off).
  std::uint32_t bulk_self() const noexcept { return bulk_.valid() ? bulk_.self().pack() : 0; }

  // Withdraws this server from the header (destruction): clients see no live server.
  void withdraw() noexcept {
    std::uint32_t expected = segment_->self().id().pack();
    // release: orders every response queued before it ahead of clients' acquire load of the
    // server word (a client that sees 0 has seen the responses sent before).
    view_.header->server.compare_exchange_strong(expected, 0, std::memory_order_release,
                                                 std::memory_order_relaxed);
  }

 private:
  // Validates a request frame; the request's header when it passes, counting the failure when
  // not.
  bool check(std::span<const std::byte> message, RequestFrame& frame) noexcept;
  // Pulls a bulk request's body (the frame's `body` is its descriptor) into `into`. {} or the
  // error that dropped the request (counted; the client got an error frame unless it is dead).
  std::error_code pull_request(const RequestFrame& frame, std::span<const std::byte> body,
                               std::vector<std::byte>& into);
  // Queues one response frame on the slot's channel (the protocol of respond(); waits for room
  // until `give_up`). Counts failures, not successes.
  std::error_code queue(std::uint32_t slot, std::uint32_t generation, std::uint64_t correlation,
                        std::uint16_t flags, std::uint32_t status, std::span<const std::byte> body,
                        sync::Deadline give_up);
  // An error frame (kResponseError) for call `correlation`: best effort, the client's deadline
  // covers a loss.
  void reject(const RequestFrame& frame, errc error) noexcept;
  // The bulk half of respond(): `transfer` registered, its descriptor queued, the pull awaited.
  std::error_code respond_bulk(std::uint32_t slot, std::uint32_t generation,
                               std::uint64_t correlation, std::span<const std::byte> body,
                               std::uint32_t status, bulk::Transfer& transfer);

  std::unique_ptr<shm::Segment> segment_;
  SegmentView view_;
  ServerOptions options_;
  std::atomic<bool> sweeping_{false};
  // The companion bulk segment and this process's endpoint of its transfer table (bulk on);
  // the endpoint refers to the segment, so it is declared (and destroyed) after it.
  std::unique_ptr<shm::Segment> bulk_segment_;
  bulk::TransferEndpoint bulk_;

  struct Key {
    std::uint64_t correlation;
    std::uint32_t slot;
    std::uint32_t generation;
    friend bool operator==(const Key&, const Key&) noexcept = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& key) const noexcept {
      return std::hash<std::uint64_t>()(key.correlation ^
                                        (std::uint64_t{key.slot} << 32 | key.generation));
    }
  };
  std::mutex tracked_mutex_;  // guards tracked_
  std::unordered_map<Key, std::shared_ptr<std::atomic<bool>>, KeyHash> tracked_;
  std::atomic<sync::Clock::rep> last_sweep_{0};  // steady clock ticks of the last sweep

  // Statistics: relaxed counters (no order is needed among them; snapshots are approximate).
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> responses_{0};
  std::atomic<std::uint64_t> abandoned_{0};
  std::atomic<std::uint64_t> handler_exceptions_{0};
  std::atomic<std::uint64_t> bad_version_{0};
  std::atomic<std::uint64_t> bad_length_{0};
  std::atomic<std::uint64_t> bad_flags_{0};
  std::atomic<std::uint64_t> bad_slot_{0};
  std::atomic<std::uint64_t> stale_requests_{0};
  std::atomic<std::uint64_t> responses_dead_client_{0};
  std::atomic<std::uint64_t> responses_timed_out_{0};
  std::atomic<std::uint64_t> slots_freed_{0};
  std::atomic<std::uint64_t> cancels_{0};
  std::atomic<std::uint64_t> cancels_ignored_{0};
  std::atomic<std::uint64_t> bulk_requests_{0};
  std::atomic<std::uint64_t> bulk_responses_{0};
  std::atomic<std::uint64_t> bulk_fallbacks_{0};
  std::atomic<std::uint64_t> bulk_rejected_{0};
  std::atomic<std::uint64_t> bulk_dead_client_{0};
};

namespace {
void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
}
}  // namespace

bool ServerCore::check(std::span<const std::byte> message, RequestFrame& frame) noexcept {
  if (message.size() < sizeof(RequestFrame)) {
    bump(bad_length_);
    return false;
  }
  std::memcpy(&frame, message.data(), sizeof(RequestFrame));
  if (frame.version != kFrameVersion) {
    bump(bad_version_);
    return false;
  }
  if (frame.body_length != message.size() - sizeof(RequestFrame) ||
      frame.body_length > view_.config.max_request_body) {
    bump(bad_length_);
    return false;
  }
  if ((frame.flags & ~kKnownRequestFlags) != 0 || frame.reserved != 0 || frame.correlation == 0 ||
      ((frame.flags & kFlagCancel) != 0 &&
       (frame.flags != kFlagCancel || frame.body_length != 0 || frame.method != 0)) ||
      ((frame.flags & kFlagBulk) != 0 && view_.config.bulk_threshold == 0)) {
    bump(bad_flags_);
    return false;
  }
  if (frame.client_slot >= view_.config.max_clients) {
    bump(bad_slot_);
    return false;
  }
  const ClientSlot& slot = view_.slots[frame.client_slot];
  // relaxed: a hint only; respond() re-checks before it queues, and the client drops a response
  // of another generation anyway.
  if (slot.generation.load(std::memory_order_relaxed) != frame.generation ||
      slot.owner.load(std::memory_order_relaxed) == 0) {
    bump(stale_requests_);
    return false;
  }
  return true;
}

std::error_code ServerCore::pull_request(const RequestFrame& frame, std::span<const std::byte> body,
                                         std::vector<std::byte>& into) {
  bulk::TransferDescriptor descriptor{};
  if (body.size() != sizeof descriptor) {
    bump(bulk_rejected_);
    reject(frame, errc::bad_descriptor);
    return errc::bad_descriptor;
  }
  std::memcpy(&descriptor, body.data(), sizeof descriptor);
  // The length sizes our buffer: validated before anything is allocated.
  if (descriptor.total_length <= view_.config.bulk_threshold ||
      descriptor.total_length > view_.config.max_bulk_body) {
    bump(bulk_rejected_);
    reject(frame, errc::message_too_large);
    return errc::message_too_large;
  }
  // Only the requesting client's own transfers: a forged frame must not make us claim (and so
  // take away) another member's. relaxed: the client stored it before sending this request,
  // and our receive of the request orders that store before this load.
  const std::uint32_t owner =
      view_.slots[frame.client_slot].bulk_owner.load(std::memory_order_relaxed);
  if (owner == 0 || descriptor.owner != owner) {
    bump(bulk_rejected_);
    reject(frame, errc::bad_descriptor);
    return errc::bad_descriptor;
  }
  try {
    into.resize(static_cast<std::size_t>(descriptor.total_length));
  } catch (const std::bad_alloc&) {
    bump(bulk_rejected_);
    reject(frame, errc::limit_reached);
    return errc::limit_reached;
  }
  const Result<std::size_t> pulled = bulk_.pull(descriptor, std::span<std::byte>(into));
  if (pulled) {
    bump(bulk_requests_);
    return {};
  }
  const std::error_code error = pulled.error();
  if (error == errc::peer_dead) {
    bump(bulk_dead_client_);  // the client died before or during the copy: nobody to answer
    return error;
  }
  if (error == errc::permission_denied) {
    bump(bulk_fallbacks_);  // the client resends inline (or fails the call) on this answer
    reject(frame, errc::permission_denied);
    return error;
  }
  // Forged or foreign (bad_descriptor), withdrawn by a client that gave up (not_found), a
  // second pull (already_returned), a slot no member writes (corrupt_segment).
  bump(bulk_rejected_);
  reject(frame, error == errc::not_found || error == errc::already_returned
                    ? static_cast<errc>(error.value())
                    : errc::bad_descriptor);
  return error;
}

void ServerCore::reject(const RequestFrame& frame, errc error) noexcept {
  (void)queue(frame.client_slot, frame.generation, frame.correlation, kResponseError,
              static_cast<std::uint32_t>(error), {},
              sync::Clock::now() + options_.response_timeout);
}

std::error_code ServerCore::take_one(const Server::Handler& handler, std::vector<std::byte>& buffer,
                                     std::vector<std::byte>& bulk_buffer,
                                     const sync::Deadline* deadline, bool return_on_wake) {
  for (;;) {
    // Into a vector (its capacity is reused): never message_too_large, whatever a peer wrote;
    // the frame's own lengths are checked below. std::bad_alloc leaves the message queued.
    std::error_code error;
    try {
      error = deadline == nullptr ? view_.requests.try_receive(buffer)
                                  : view_.requests.receive_until(buffer, *deadline);
    } catch (const std::bad_alloc&) {
      error = make_error_code(std::errc::not_enough_memory);
    }
    if (error) return error;
    const std::span<const std::byte> message(buffer.data(), buffer.size());
    if (message.empty()) {  // a wake-up (Server::stop)
      if (return_on_wake) return errc::would_block;
      continue;
    }
    RequestFrame frame{};
    if (!check(message, frame)) continue;
    if ((frame.flags & kFlagCancel) != 0) {
      cancel(frame);
      continue;
    }
    std::span<const std::byte> body = message.subspan(sizeof(RequestFrame));
    if ((frame.flags & kFlagBulk) != 0) {
      if (pull_request(frame, body, bulk_buffer)) continue;  // dropped (counted)
      body = std::span<const std::byte>(bulk_buffer.data(), bulk_buffer.size());
    }
    bump(requests_);
    Request request;
    request.method = frame.method;
    request.body = body;
    request.client_slot = frame.client_slot;
    request.correlation_id = frame.correlation;
    try {
      handler(request,
              Responder(shared_from_this(), frame.client_slot, frame.generation, frame.correlation,
                        options_.track_cancellation ? track(frame) : nullptr,
                        (frame.flags & kFlagInlineResponse) != 0));
    } catch (...) {
      // The handler's Responder (a by-value argument) was destroyed during unwinding: the call
      // got kStatusAbandoned. The worker goes on.
      bump(handler_exceptions_);
    }
    return {};
  }
}

std::error_code ServerCore::respond(std::uint32_t slot, std::uint32_t generation,
                                    std::uint64_t correlation, std::span<const std::byte> body,
                                    std::uint32_t status, bool inline_only) {
  const sync::Deadline give_up = sync::Clock::now() + options_.response_timeout;
  const ServerConfig& config = view_.config;
  if (config.bulk_threshold != 0 && body.size() > config.bulk_threshold) {
    std::error_code refused = errc::permission_denied;  // the client said it may not pull
    if (!inline_only) {
      Result<bulk::Transfer> transfer = bulk_.register_source(body);
      if (transfer) return respond_bulk(slot, generation, correlation, body, status, *transfer);
      refused = transfer.error();  // limit_reached: every transfer slot busy
    }
    bump(bulk_fallbacks_);
    if (body.size() > config.max_response_body) {
      // Fits no path: the call fails with a named error.
      (void)queue(slot, generation, correlation, kResponseError,
                  static_cast<std::uint32_t>(refused.value()), {}, give_up);
      return refused;
    }
  }
  if (std::error_code error = queue(slot, generation, correlation, 0, status, body, give_up)) {
    return error;
  }
  bump(responses_);
  return {};
}

std::error_code ServerCore::respond_bulk(std::uint32_t slot_index, std::uint32_t generation,
                                         std::uint64_t correlation, std::span<const std::byte> body,
                                         std::uint32_t status, bulk::Transfer& transfer) {
  // Every return below leaves `transfer` to its owner's destructor (respond()'s Result):
  // withdrawn if still open, or waited for while the client copies (bounded by its liveness).
  const sync::Deadline give_up = sync::Clock::now() + options_.response_timeout;
  const bulk::TransferDescriptor& descriptor = transfer.descriptor();
  std::array<std::byte, sizeof descriptor> frame_body{};
  std::memcpy(frame_body.data(), &descriptor, sizeof descriptor);
  if (std::error_code error =
          queue(slot_index, generation, correlation, kResponseBulk, status, frame_body, give_up)) {
    return error;
  }
  const ClientSlot& slot = view_.slots[slot_index];
  const sync::Participant& self = segment_->self();
  for (;;) {
    const sync::Deadline now = sync::Clock::now();
    // Waits a check period at a time: while the transfer is open nobody is known to claim it,
    // so the client's liveness is looked at here (once claimed, the transfer layer watches the
    // claimer itself).
    const std::error_code result =
        transfer.wait_until(std::min(give_up, now + channel::kPeerCheckPeriod));
    if (!result) {
      bump(bulk_responses_);
      bump(responses_);
      return {};
    }
    if (result == errc::timed_out) {
      // acquire: as in queue(): the current claim's owner and generation.
      const std::uint32_t owner = slot.owner.load(std::memory_order_acquire);
      if (owner == 0 || slot.generation.load(std::memory_order_acquire) != generation ||
          !packed_alive(self, owner)) {
        bump(responses_dead_client_);
        return errc::peer_dead;
      }
      if (sync::Clock::now() >= give_up) {
        bump(responses_timed_out_);  // a live client that does not take its responses
        return errc::timed_out;
      }
      continue;
    }
    if (result == errc::permission_denied) {
      // The client may not read us: it keeps the call pending and takes the inline copy (or the
      // error frame) instead.
      bump(bulk_fallbacks_);
      if (body.size() > view_.config.max_response_body) {
        (void)queue(slot_index, generation, correlation, kResponseError,
                    static_cast<std::uint32_t>(errc::permission_denied), {}, give_up);
        return result;
      }
      if (std::error_code error = queue(slot_index, generation, correlation, 0, status, body,
                                        sync::Clock::now() + options_.response_timeout)) {
        return error;
      }
      bump(responses_);
      return {};
    }
    if (result == errc::peer_dead) {
      bump(responses_dead_client_);  // the client died while it copied
      return result;
    }
    bump(bulk_rejected_);  // the client hit something else (bad_descriptor, corrupt_segment)
    return result;
  }
}

std::error_code ServerCore::queue(std::uint32_t slot_index, std::uint32_t generation,
                                  std::uint64_t correlation, std::uint16_t flags,
                                  std::uint32_t status, std::span<const std::byte> body,
                                  sync::Deadline give_up) {
  ClientSlot& slot = view_.slots[slot_index];  // slot_index was checked against max_clients
  const channel::Endpoint& out = view_.responses[slot_index];
  const auto size = sizeof(ResponseFrame) + body.size();
  const sync::Participant& self = segment_->self();
  Result<channel::Reservation> reservation = out.try_reserve(size);
  for (;;) {
    // acquire: pairs with the claimer's release CAS of owner (client.cc, claim step 1) and the
    // release bump of generation (step 2): the owner and generation read here are the
    // current claim's, checked right before the response is written.
    const std::uint32_t owner = slot.owner.load(std::memory_order_acquire);
    if (owner == 0 || slot.generation.load(std::memory_order_acquire) != generation) {
      bump(responses_dead_client_);  // the client left (or died and its slot was taken): the
      return errc::peer_dead;        // reservation, if any, is abandoned by its destructor
    }
    if (reservation) {
      ResponseFrame frame{};
      frame.version = kFrameVersion;
      frame.flags = flags;
      frame.status = status;
      frame.correlation = correlation;
      frame.generation = generation;
      frame.body_length = static_cast<std::uint32_t>(body.size());
      std::memcpy(reservation->data().data(), &frame, sizeof frame);
      if (!body.empty()) {
        std::memcpy(reservation->data().data() + sizeof frame, body.data(), body.size());
      }
      return out.commit(*reservation);
    }
    if (reservation.error() != errc::would_block && reservation.error() != errc::timed_out) {
      return reservation.error();
    }
    // The ring is full: the client reads slowly, or is dead. Look, then wait a check period.
    if (!packed_alive(self, owner)) {
      if (free_slot(slot, owner)) bump(slots_freed_);
      bump(responses_dead_client_);
      return errc::peer_dead;
    }
    const sync::Deadline now = sync::Clock::now();
    if (now >= give_up) {
      bump(responses_timed_out_);
      return errc::timed_out;
    }
    reservation = out.reserve_until(size, std::min(give_up, now + channel::kPeerCheckPeriod));
  }
}

std::shared_ptr<std::atomic<bool>> ServerCore::track(const RequestFrame& frame) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  const std::lock_guard lock(tracked_mutex_);
  tracked_.insert_or_assign(Key{frame.correlation, frame.client_slot, frame.generation}, flag);
  return flag;
}

void ServerCore::forget(std::uint32_t slot, std::uint32_t generation,
                        std::uint64_t correlation) noexcept {
  const std::lock_guard lock(tracked_mutex_);
  tracked_.erase(Key{correlation, slot, generation});
}

void ServerCore::cancel(const RequestFrame& frame) noexcept {
  std::shared_ptr<std::atomic<bool>> flag;
  if (options_.track_cancellation) {
    const std::lock_guard lock(tracked_mutex_);
    const auto found = tracked_.find(Key{frame.correlation, frame.client_slot, frame.generation});
    if (found != tracked_.end()) flag = found->second;
  }
  if (flag == nullptr) {
    bump(cancels_ignored_);
    return;
  }
  // release: pairs with the acquire load in Responder::cancelled() (a plain flag: nothing else
  // is published with it).
  flag->store(true, std::memory_order_release);
  bump(cancels_);
}

void ServerCore::sweep() {
  // acquire/relaxed: a try-flag among this process's workers; acquire pairs with the release
  // store below so sweeps do not overlap.
  if (sweeping_.exchange(true, std::memory_order_acquire)) return;
  const sync::Participant& self = segment_->self();
  for (std::uint32_t index = 0; index < view_.config.max_clients; ++index) {
    ClientSlot& slot = view_.slots[index];
    // relaxed: free_slot's CAS decides; a stale read only skips or retries a slot.
    const std::uint32_t owner = slot.owner.load(std::memory_order_relaxed);
    if (owner != 0 && !packed_alive(self, owner) && free_slot(slot, owner)) bump(slots_freed_);
  }
  last_sweep_.store(sync::Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  sweeping_.store(false, std::memory_order_release);  // pairs with the exchange above
}

ServerStatistics ServerCore::statistics() const noexcept {
  const auto get = [](const std::atomic<std::uint64_t>& counter) {
    return counter.load(std::memory_order_relaxed);  // relaxed: a statistic
  };
  ServerStatistics s;
  s.requests = get(requests_);
  s.responses = get(responses_);
  s.abandoned = get(abandoned_);
  s.handler_exceptions = get(handler_exceptions_);
  s.bad_version = get(bad_version_);
  s.bad_length = get(bad_length_);
  s.bad_flags = get(bad_flags_);
  s.bad_slot = get(bad_slot_);
  s.stale_requests = get(stale_requests_);
  s.responses_dead_client = get(responses_dead_client_);
  s.responses_timed_out = get(responses_timed_out_);
  s.slots_freed = get(slots_freed_);
  s.cancels = get(cancels_);
  s.cancels_ignored = get(cancels_ignored_);
  s.bulk_requests = get(bulk_requests_);
  s.bulk_responses = get(bulk_responses_);
  s.bulk_fallbacks = get(bulk_fallbacks_);
  s.bulk_rejected = get(bulk_rejected_);
  s.bulk_dead_client = get(bulk_dead_client_);
  return s;
}

}  // namespace detail

// --- Responder

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    abandon();
    core_ = std::move(other.core_);
    cancelled_ = std::move(other.cancelled_);
    slot_ = other.slot_;
    generation_ = other.generation_;
    correlation_ = other.correlation_;
    inline_only_ = other.inline_only_;
  }
  return *this;
}

Responder::~Responder() {
  abandon();
}

void Responder::abandon() noexcept {
  if (core_ == nullptr) return;
  const std::shared_ptr<detail::ServerCore> core = std::move(core_);
  if (cancelled_ != nullptr) core->forget(slot_, generation_, correlation_);
  cancelled_.reset();
  core->count_abandoned();
  // Best effort: the client learns its call will never be answered (or times out if this
  // fails too).
  (void)core->respond(slot_, generation_, correlation_, {}, kStatusAbandoned, true);
}

std::error_code Responder::respond(std::span<const std::byte> body, std::uint32_t status) {
  if (core_ == nullptr) return errc::invalid_argument;
  if (body.size() > core_->max_response()) return errc::message_too_large;
  const std::shared_ptr<detail::ServerCore> core = std::move(core_);  // spent from here on
  if (cancelled_ != nullptr) core->forget(slot_, generation_, correlation_);
  cancelled_.reset();
  return core->respond(slot_, generation_, correlation_, body, status, inline_only_);
}

bool Responder::cancelled() const noexcept {
  // acquire: pairs with the release store in ServerCore::cancel().
  return cancelled_ != nullptr && cancelled_->load(std::memory_order_acquire);
}

// --- Server

Result<Server> Server::create(std::string_view name, const ServerOptions& options) {
  const detail::Layout layout = detail::layout_for(options.config);
  if (!layout.valid) return make_error_code(errc::invalid_argument);
  if (options.segment.participant_capacity < options.config.max_clients + 2) {
    return make_error_code(errc::invalid_argument);
  }
  shm::SegmentOptions segment_options = options.segment;
  segment_options.unlink_when_last_detaches = true;
  segment_options.if_exists = shm::IfExists::fail;
  // Bulk on: the companion segment "<name>.bulk" with the transfer table (decision 0055),
  // created or, after a restart while clients still hold it, opened as it is.
  std::unique_ptr<shm::Segment> bulk_segment;
  bulk::TransferEndpoint bulk_endpoint;
  if (options.config.bulk_threshold != 0) {
    if (!shm::valid_segment_name(name)) return make_error_code(errc::invalid_argument);
    shm::SegmentOptions bulk_options = segment_options;
    bulk_options.if_exists = shm::IfExists::open;
    const bulk::TransferTableOptions table{};
    const std::string bulk_name = std::string(name) + detail::kBulkSuffix;
    Result<shm::Segment> opened = shm::Segment::create(
        bulk_name, shm::SegmentKind::raw,
        bulk::transfer_table_size(table, bulk_options.participant_capacity), bulk_options,
        bulk::transfer_table_init(table, bulk_options.participant_capacity));
    if (!opened) return opened.error();
    bulk_segment = std::make_unique<shm::Segment>(std::move(*opened));
    Result<bulk::TransferEndpoint> endpoint =
        bulk::TransferEndpoint::open(*bulk_segment, options.bulk);
    if (!endpoint) return endpoint.error();
    bulk_endpoint = std::move(*endpoint);
  }
  // A few rounds cover the races with a concurrent creator, takeover or unlink; each round
  // either returns or saw another process change the name's state.
  for (int round = 0; round < 8; ++round) {
    bool fresh = true;
    Result<shm::Segment> segment = shm::Segment::create(
        name, shm::SegmentKind::rpc, layout.body_size, segment_options,
        [&options](std::span<std::byte> body) { return detail::format(body, options.config); });
    if (!segment) {
      if (segment.error() != errc::already_exists) return segment.error();
      fresh = false;
      segment = shm::Segment::open(name, shm::SegmentKind::rpc, segment_options);
      if (!segment) {
        if (segment.error() == errc::not_found) continue;  // unlinked meanwhile
        return segment.error();
      }
    }
    auto owned = std::make_unique<shm::Segment>(std::move(*segment));
    detail::SegmentView view;
    if (std::error_code error = detail::open_view(*owned, view)) return error;
    const std::uint32_t me = owned->self().id().pack();
    std::uint32_t current = view.header->server.load(std::memory_order_acquire);
    // (acquire: pairs with the release CAS of the previous server's takeover or withdrawal.)
    if (current != 0 && detail::packed_alive(owned->self(), current)) {
      return make_error_code(errc::already_exists);
    }
    const ServerConfig& found = view.config;
    if (!fresh && (found.max_clients != options.config.max_clients ||
                   found.request_capacity != options.config.request_capacity ||
                   found.response_capacity != options.config.response_capacity ||
                   found.max_request_body != options.config.max_request_body ||
                   found.max_response_body != options.config.max_response_body ||
                   found.bulk_threshold != options.config.bulk_threshold ||
                   found.max_bulk_body != options.config.max_bulk_body)) {
      // A dead server's segment of another shape: replace it (its clients must reconnect).
      (void)owned->unlink();
      continue;
    }
    // acq_rel: acquire pairs with the previous holder's release; release publishes this
    // server's id after its view is open (clients only read the word).
    if (!view.header->server.compare_exchange_strong(current, me, std::memory_order_acq_rel,
                                                     std::memory_order_relaxed)) {
      continue;  // another server took it first: look again
    }
    // relaxed: the epoch is read by clients only as a changed/unchanged hint next to the
    // server word, whose CAS above orders it.
    const std::uint32_t epoch =
        view.header->server_epoch.fetch_add(1, std::memory_order_relaxed) + 1;
    // release: a hint for clients' permission probe at connect (layout.h); pairs with their
    // acquire load.
    view.header->bulk_server.store(bulk_endpoint.valid() ? bulk_endpoint.self().pack() : 0,
                                   std::memory_order_release);
    Server server;
    server.core_ =
        std::make_shared<detail::ServerCore>(std::move(owned), std::move(view), options,
                                             std::move(bulk_segment), std::move(bulk_endpoint));
    server.stopping_ = std::make_shared<std::atomic<bool>>(false);
    server.epoch_ = epoch;
    return server;
  }
  return make_error_code(errc::already_exists);
}

Server::Server(Server&& other) noexcept
    : core_(std::move(other.core_)),
      workers_(std::move(other.workers_)),
      stopping_(std::move(other.stopping_)),
      epoch_(other.epoch_) {}

Server& Server::operator=(Server&& other) noexcept {
  if (this != &other) {
    shut_down();
    core_ = std::move(other.core_);
    workers_ = std::move(other.workers_);
    stopping_ = std::move(other.stopping_);
    epoch_ = other.epoch_;
  }
  return *this;
}

Server::~Server() {
  shut_down();
}

void Server::shut_down() noexcept {
  stop();
  // A fork child's copy (detached participant) withdraws nothing: the parent still serves.
  if (core_ != nullptr && core_->segment().self().attached()) core_->withdraw();
  core_.reset();
}

std::error_code Server::serve(Handler handler, unsigned threads) {
  if (core_ == nullptr || threads == 0 || !workers_.empty() || !handler) {
    return errc::invalid_argument;
  }
  stopping_->store(false, std::memory_order_relaxed);  // no worker runs yet
  auto shared_handler = std::make_shared<Handler>(std::move(handler));
  for (unsigned i = 0; i < threads; ++i) {
    try {
      workers_.emplace_back([core = core_, stopping = stopping_, shared_handler] {
        std::vector<std::byte> buffer;
        std::vector<std::byte> bulk_buffer;
        // acquire: pairs with the release store in stop(); nothing else is published by it.
        while (!stopping->load(std::memory_order_acquire)) {
          const sync::Deadline deadline = sync::Clock::now() + kSweepPeriod;
          const std::error_code error =
              core->take_one(*shared_handler, buffer, bulk_buffer, &deadline,
                             /*return_on_wake=*/true);
          if (!error) {
            core->maybe_sweep();
          } else if (error == errc::timed_out) {
            core->sweep();
          } else if (error && error != errc::would_block) {
            // corrupt_segment (the channel holds nothing we can read) or no memory. Do not spin:
            // wait a sweep period, as if idle, and try again (stop() still ends the loop).
            std::this_thread::sleep_for(kSweepPeriod);
          }
        }
      });
    } catch (const std::system_error& error) {
      stop();
      return error.code();
    }
  }
  return {};
}

void Server::stop() {
  if (workers_.empty()) return;
  stopping_->store(true, std::memory_order_release);  // pairs with the workers' acquire load
  // Wake every worker parked on the request channel (an empty message is a wake-up, never a
  // request). When the ring is full none is needed: the workers are busy and see the flag.
  for (std::size_t i = 0; i < workers_.size(); ++i) core_->wake();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

Result<bool> Server::poll_one(const Handler& handler) {
  if (core_ == nullptr) return make_error_code(errc::invalid_argument);
  std::vector<std::byte> buffer;
  std::vector<std::byte> bulk_buffer;
  const std::error_code error = core_->take_one(handler, buffer, bulk_buffer, nullptr);
  if (!error) return true;
  if (error == errc::would_block) return false;
  return error;
}

std::error_code Server::serve_one(const Handler& handler, sync::Deadline deadline) {
  if (core_ == nullptr) return errc::invalid_argument;
  std::vector<std::byte> buffer;
  std::vector<std::byte> bulk_buffer;
  return core_->take_one(handler, buffer, bulk_buffer, &deadline);
}

ServerStatistics Server::statistics() const noexcept {
  return core_ == nullptr ? ServerStatistics{} : core_->statistics();
}

const ServerConfig& Server::config() const noexcept {
  return core_->config();
}

shm::Segment& Server::segment() const noexcept {
  return core_->segment();
}

}  // namespace xproc::rpc
