// Client: claims a slot, sends request frames, and matches responses to calls by correlation id
// (client.h; docs/decisions/0050-rpc.md). Responses are taken off the response channel by one
// leader at a time: a caller waiting for its own call, else the receiver thread (decision 0054).
#include "xproc/rpc/client.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>

#include "rpc_internal.h"
#include "xproc/bulk/transfer.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/error.h"

namespace xproc::rpc {
namespace detail {

// Where call_many() learns which of its calls completed, in completion order.
struct CompletionQueue {
  std::mutex mutex;
  std::condition_variable ready_cv;
  std::deque<std::size_t> ready;  // tags of completed calls, oldest first
};

struct CallState {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;  // outcome is set (under mutex)
  // `done` for waiters that spin before they lock and park: stored true (release) after the
  // outcome, under the mutex; pairs with the acquire loads in PendingCall::wait_until().
  std::atomic<bool> finished{false};
  bool taken = false;  // outcome was handed to a waiter
  Result<Response> outcome{std::error_code(errc::invalid_argument)};

  // Set before the state is shared, never changed afterwards.
  std::shared_ptr<ClientCore> core;
  std::uint64_t id = 0;  // 0: never registered (completed at once)
  sync::Deadline deadline{};
  std::uint32_t server = 0;  // the server word the request went to
  std::shared_ptr<CompletionQueue> sink;
  std::size_t tag = 0;
  std::uint32_t method = 0;
  std::vector<std::byte> owned_body;  // async_call's copy of a bulk body (set before sharing)

  // A bulk request (decision 0055): its registration, and the body it names (the caller's span,
  // or owned_body) for an inline resend should the server's pull be refused. Both are let go by
  // release_body() before the outcome reaches the caller (call() and call_many() return only
  // after that, so the caller's span is never read afterwards). Declared after `core`: the
  // Transfer must not outlive the endpoint it refers to.
  std::mutex body_mutex;  // guards body and transfer (the leader's resend vs release_body)
  std::span<const std::byte> body{};
  bulk::Transfer transfer;
};

// Lets go of a call's bulk body: withdraws its transfer if still open, or waits while the
// server copies it (bounded by the server's liveness: transfer.h, Deaths).
void release_body(CallState& state) noexcept {
  bulk::Transfer transfer;
  {
    const std::lock_guard lock(state.body_mutex);
    if (!state.transfer.valid()) return;
    transfer = std::move(state.transfer);
    state.body = {};
  }
  // `transfer` goes here, outside the mutex.
}

namespace {
void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
}

void complete(CallState& state, Result<Response> outcome) {
  {
    const std::lock_guard lock(state.mutex);
    state.outcome = std::move(outcome);
    state.done = true;
    state.finished.store(true, std::memory_order_release);  // see CallState::finished
  }
  state.done_cv.notify_all();
  if (state.sink != nullptr) {
    {
      const std::lock_guard lock(state.sink->mutex);
      state.sink->ready.push_back(state.tag);
    }
    state.sink->ready_cv.notify_all();
  }
}
}  // namespace

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(std::unique_ptr<shm::Segment> segment, SegmentView view, std::uint32_t slot,
             std::uint32_t generation, const channel::WaitPolicy& wait_policy,
             std::unique_ptr<shm::Segment> bulk_segment, bulk::TransferEndpoint bulk,
             bool may_pull) noexcept
      : segment_(std::move(segment)),
        view_(std::move(view)),
        slot_(slot),
        generation_(generation),
        me_(segment_->self().id().pack()),
        wait_policy_(wait_policy),
        bulk_segment_(std::move(bulk_segment)),
        bulk_(std::move(bulk)),
        may_pull_(may_pull) {}

  // How callers wait before they park (ClientOptions::wait_policy).
  const channel::WaitPolicy& wait_policy() const noexcept { return wait_policy_; }

  // Starts the receiver thread (after construction: it needs shared_from_this-free `this`).
  void start_receiver() {
    receiver_ = std::thread([this] { receive_loop(); });
  }

  // Leadership of the response channel (decision 0054). try_lead: true when the caller became
  // the leader; it must then call lead(), which gives leadership up before it returns.
  bool try_lead() noexcept {
    // relaxed: a hint that spares the CAS (and its cache-line transfer) while somebody leads.
    if (leader_.load(std::memory_order_relaxed)) return false;
    bool expected = false;
    // acquire: pairs with lead()'s release of the flag: the previous leader's use of
    // leader_buffer_ happens before ours. (Taking the lead needs no store-load order with
    // start(): a call it misses is seen by lead()'s check when the lead is given up.)
    return leader_.compare_exchange_strong(expected, true, std::memory_order_acquire,
                                           std::memory_order_relaxed);
  }
  // Takes responses off the channel (dispatching every one, whoever it is for) until `state` is
  // complete, `until` or the call's deadline passes, or its server is gone; then gives up
  // leadership, handing the channel to the receiver thread when calls are still pending.
  void lead(const CallState& state, sync::Deadline until);

  // `copy_body`: a bulk body is copied into the call first (async_call: the caller's span may
  // go as soon as start() returns).
  std::shared_ptr<CallState> start(std::uint32_t method, std::span<const std::byte> body,
                                   sync::Deadline deadline, std::shared_ptr<CompletionQueue> sink,
                                   std::size_t tag, bool copy_body = false);
  // Completes call `id` with `error` if it is still pending. True when this call completed it.
  bool finish(std::uint64_t id, std::error_code error);
  // Tells the server that call `id` was cancelled (layout.h, kFlagCancel), if the request ring
  // has room now: best effort, never waits.
  void notify_cancel(std::uint64_t id) noexcept;
  void shut_down() noexcept;

  // True when `server` (a packed id a call went to) no longer serves: the header names another
  // server (or none), or that participant is dead. One F_OFD_GETLK.
  bool server_gone(std::uint32_t server) const noexcept {
    // acquire: pairs with the server's release CAS (takeover, withdrawal).
    return view_.header->server.load(std::memory_order_acquire) != server ||
           !packed_alive(segment_->self(), server);
  }

  // True when `server` (the header's word now) is alive: looked up (one F_OFD_GETLK, ~1 µs on
  // these VMs, a third of a spinning round trip) at most once per kPeerCheckPeriod, not per call.
  // A death inside the period is seen by the call's waiter or the receiver within one period, as
  // for calls already in flight; a server that shut down or was replaced changed the word, which
  // every call reads.
  bool server_seen_alive(std::uint32_t server) noexcept {
    const std::int64_t now = sync::Clock::now().time_since_epoch().count();
    // relaxed (both): a cache of a liveness answer, no data hangs on it; a torn pair across
    // threads pairs a server word with another thread's time of a successful look, at most one
    // period old.
    if (server == alive_server_.load(std::memory_order_relaxed) &&
        now < alive_until_.load(std::memory_order_relaxed)) {
      return true;
    }
    if (!packed_alive(segment_->self(), server)) return false;
    alive_server_.store(server, std::memory_order_relaxed);
    alive_until_.store(
        now + std::chrono::duration_cast<sync::Clock::duration>(channel::kPeerCheckPeriod).count(),
        std::memory_order_relaxed);
    return true;
  }

  std::uint32_t slot() const noexcept { return slot_; }
  const ServerConfig& config() const noexcept { return view_.config; }
  shm::Segment& segment() noexcept { return *segment_; }
  ClientStatistics statistics() const noexcept;

 private:
  void receive_loop() noexcept;
  void dispatch(std::span<const std::byte> message);
  // Pulls a bulk response (the frame's body is its descriptor) into `into`. {}, would_block
  // (our pull was refused: the server sends the body inline or an error frame next), or the
  // error the call completes with.
  std::error_code pull_response(std::span<const std::byte> body, std::vector<std::byte>& into);
  // An error frame (kResponseError): resends a refused bulk request inline, or completes the call
  // with the error.
  void on_error_frame(const ResponseFrame& frame);
  // Resends call `id`'s body inline when the server's pull of it was refused. False when the
  // call is not such a call (then the error frame completes it).
  bool resend_inline(std::uint64_t id);
  // Completes call `id` with `error` (a frame's answer), or counts the frame as late/unknown.
  void fail_call(std::uint64_t id, std::error_code error);
  std::uint16_t request_flags() const noexcept {
    // relaxed: a sticky hint (true -> false once); a stale true costs one refused pull.
    return may_pull_.load(std::memory_order_relaxed) ? 0 : kFlagInlineResponse;
  }
  // Fails the pending calls whose server is gone (all of them when no live server holds the
  // segment). One F_OFD_GETLK.
  void check_server();
  void fail_all(std::error_code error);
  void count(std::error_code error) noexcept;
  // The request frame into a reservation, or the error that ended the wait for room.
  std::error_code send(const RequestFrame& frame, std::span<const std::byte> body,
                       sync::Deadline deadline, std::uint32_t server);

  std::unique_ptr<shm::Segment> segment_;
  SegmentView view_;
  std::uint32_t slot_;
  std::uint32_t generation_;
  std::uint32_t me_;
  channel::WaitPolicy wait_policy_;

  std::mutex mutex_;  // guards pending_, next_id_
  std::unordered_map<std::uint64_t, std::shared_ptr<CallState>> pending_;
  std::uint64_t next_id_ = 1;
  // pending_.size(), readable without the mutex (relaxed: the receiver's choice of check
  // period only).
  std::atomic<std::size_t> pending_count_{0};
  std::uint32_t last_server_ = 0;  // receiver thread only

  std::thread receiver_;
  std::atomic<bool> stopping_{false};

  // True while a caller is the leader (receives from the response channel); the receiver thread
  // then waits on receiver_cv_ instead of on the channel, so the server's commits never wake it.
  std::atomic<bool> leader_{false};
  // server_seen_alive()'s cache: the server word last seen alive, and until when (Clock ticks).
  std::atomic<std::uint32_t> alive_server_{0};
  std::atomic<std::int64_t> alive_until_{0};
  std::vector<std::byte> leader_buffer_;  // the leader's (one at a time)
  std::mutex receiver_mutex_;             // with receiver_cv_: the receiver's wait off the channel
  std::condition_variable receiver_cv_;
  // Wakes the receiver thread from its wait off the channel (leadership given up with calls
  // pending, a call nobody leads for, shutdown).
  void wake_receiver() noexcept;

  // The companion bulk segment and our endpoint of its table (bulk on; the endpoint after the
  // segment it refers to). may_pull_: we may read the server's memory (probe at connect; false
  // for good once a pull is refused). server_may_pull_: the server may read ours (false for
  // good once it refused a pull).
  std::unique_ptr<shm::Segment> bulk_segment_;
  bulk::TransferEndpoint bulk_;
  std::atomic<bool> may_pull_{true};
  std::atomic<bool> server_may_pull_{true};

  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> responses_{0};
  std::atomic<std::uint64_t> timed_out_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> peer_dead_{0};
  std::atomic<std::uint64_t> late_responses_{0};
  std::atomic<std::uint64_t> unknown_responses_{0};
  std::atomic<std::uint64_t> stale_responses_{0};
  std::atomic<std::uint64_t> malformed_responses_{0};
  std::atomic<std::uint64_t> cancel_notices_{0};
  std::atomic<std::uint64_t> bulk_requests_{0};
  std::atomic<std::uint64_t> bulk_responses_{0};
  std::atomic<std::uint64_t> bulk_fallbacks_{0};
  std::atomic<std::uint64_t> bulk_rejected_{0};
};

void ClientCore::count(std::error_code error) noexcept {
  if (error == errc::timed_out) bump(timed_out_);
  if (error == errc::cancelled) bump(cancelled_);
  if (error == errc::peer_dead) bump(peer_dead_);
}

std::shared_ptr<CallState> ClientCore::start(std::uint32_t method, std::span<const std::byte> body,
                                             sync::Deadline deadline,
                                             std::shared_ptr<CompletionQueue> sink, std::size_t tag,
                                             bool copy_body) {
  auto state = std::make_shared<CallState>();
  state->core = shared_from_this();
  state->deadline = deadline;
  state->sink = std::move(sink);
  state->tag = tag;
  state->method = method;
  bump(calls_);
  const ServerConfig& config = view_.config;
  const bool large = config.bulk_threshold != 0 && body.size() > config.bulk_threshold;
  if (body.size() > (config.bulk_threshold != 0 ? config.max_bulk_body : config.max_request_body)) {
    complete(*state, std::error_code(errc::message_too_large));
    return state;
  }
  // relaxed: a sticky hint (see server_may_pull_).
  bool bulk = large && server_may_pull_.load(std::memory_order_relaxed);
  if (large && !bulk) {
    bump(bulk_fallbacks_);
    if (body.size() > config.max_request_body) {
      complete(*state, std::error_code(errc::permission_denied));
      return state;
    }
  }
  // acquire: pairs with the server's release CAS (takeover, withdrawal).
  state->server = view_.header->server.load(std::memory_order_acquire);
  if (!server_seen_alive(state->server)) {
    count(errc::peer_dead);
    complete(*state, std::error_code(errc::peer_dead));
    return state;
  }
  {
    const std::lock_guard lock(mutex_);
    state->id = next_id_++;
    pending_.emplace(state->id, state);
    // seq_cst: pairs with the leader's "leader_ = false, then pending_count_ load" (lead()).
    pending_count_.store(pending_.size(), std::memory_order_seq_cst);
  }
  // Nobody leads (an async call, or a caller that follows another's lead): the receiver thread
  // must be on the channel. seq_cst: see above.
  if (!leader_.load(std::memory_order_seq_cst)) wake_receiver();
  RequestFrame frame{};
  frame.version = kFrameVersion;
  frame.flags = request_flags();
  frame.client_slot = slot_;
  frame.generation = generation_;
  frame.method = method;
  frame.correlation = state->id;
  std::array<std::byte, sizeof(bulk::TransferDescriptor)> descriptor_bytes{};
  if (bulk) {
    std::error_code refused;
    try {
      if (copy_body) {
        state->owned_body.assign(body.begin(), body.end());
        body = state->owned_body;
      }
      Result<bulk::Transfer> transfer = bulk_.register_source(body);
      if (transfer) {
        std::memcpy(descriptor_bytes.data(), &transfer->descriptor(), descriptor_bytes.size());
        const std::lock_guard lock(state->body_mutex);
        state->transfer = std::move(*transfer);
        state->body = body;
      } else {
        refused = transfer.error();  // limit_reached: every transfer slot busy
      }
    } catch (const std::bad_alloc&) {
      refused = make_error_code(std::errc::not_enough_memory);
    }
    if (refused) {
      bump(bulk_fallbacks_);
      if (body.size() > config.max_request_body) {
        (void)finish(state->id, refused);
        return state;
      }
      bulk = false;
    }
  }
  if (bulk) {
    bump(bulk_requests_);
    frame.flags = static_cast<std::uint16_t>(frame.flags | kFlagBulk);
    body = descriptor_bytes;
  }
  frame.body_length = static_cast<std::uint32_t>(body.size());
  if (std::error_code error = send(frame, body, deadline, state->server)) {
    (void)finish(state->id, error);
  }
  return state;
}

std::error_code ClientCore::send(const RequestFrame& frame, std::span<const std::byte> body,
                                 sync::Deadline deadline, std::uint32_t server) {
  const channel::Endpoint& out = view_.requests;
  const std::size_t size = sizeof(RequestFrame) + body.size();
  Result<channel::Reservation> reservation = out.try_reserve(size);
  while (!reservation) {
    if (reservation.error() != errc::would_block && reservation.error() != errc::timed_out) {
      return reservation.error();
    }
    // The request ring is full: wait for room a check period at a time, looking at the server
    // between periods (its role in the channel is not tracked: clients share the segment).
    // acquire: as in start().
    if (view_.header->server.load(std::memory_order_acquire) != server ||
        !packed_alive(segment_->self(), server)) {
      return errc::peer_dead;
    }
    const sync::Deadline now = sync::Clock::now();
    if (now >= deadline) return errc::timed_out;
    reservation = out.reserve_until(size, std::min(deadline, now + channel::kPeerCheckPeriod));
  }
  std::memcpy(reservation->data().data(), &frame, sizeof frame);
  if (!body.empty()) {
    std::memcpy(reservation->data().data() + sizeof frame, body.data(), body.size());
  }
  return out.commit(*reservation);
}

bool ClientCore::finish(std::uint64_t id, std::error_code error) {
  std::shared_ptr<CallState> state;
  {
    const std::lock_guard lock(mutex_);
    const auto found = pending_.find(id);
    if (found == pending_.end()) return false;
    state = std::move(found->second);
    pending_.erase(found);
    pending_count_.store(pending_.size(), std::memory_order_relaxed);
  }
  count(error);
  complete(*state, error);
  return true;
}

void ClientCore::notify_cancel(std::uint64_t id) noexcept {
  RequestFrame frame{};
  frame.version = kFrameVersion;
  frame.flags = kFlagCancel;
  frame.client_slot = slot_;
  frame.generation = generation_;
  frame.correlation = id;
  std::array<std::byte, sizeof frame> message{};
  std::memcpy(message.data(), &frame, sizeof frame);
  if (!view_.requests.try_send(message)) bump(cancel_notices_);
}

void ClientCore::fail_all(std::error_code error) {
  std::unordered_map<std::uint64_t, std::shared_ptr<CallState>> failed;
  {
    const std::lock_guard lock(mutex_);
    failed.swap(pending_);
    pending_count_.store(0, std::memory_order_relaxed);
  }
  for (auto& [id, state] : failed) {
    count(error);
    complete(*state, error);
  }
}

void ClientCore::check_server() {
  // acquire: pairs with the server's release CAS (takeover, withdrawal).
  const std::uint32_t server = view_.header->server.load(std::memory_order_acquire);
  const bool alive = packed_alive(segment_->self(), server);
  if (alive && server == last_server_) return;
  last_server_ = server;
  std::vector<std::shared_ptr<CallState>> failed;
  {
    const std::lock_guard lock(mutex_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (!alive || it->second->server != server) {
        failed.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    pending_count_.store(pending_.size(), std::memory_order_relaxed);
  }
  for (const auto& state : failed) {
    count(errc::peer_dead);
    complete(*state, std::error_code(errc::peer_dead));
  }
}

void ClientCore::dispatch(std::span<const std::byte> message) {
  if (message.empty()) return;  // a wake-up (shut_down)
  ResponseFrame frame{};
  if (message.size() < sizeof frame) {
    bump(malformed_responses_);
    return;
  }
  std::memcpy(&frame, message.data(), sizeof frame);
  if (frame.version != kFrameVersion ||
      (frame.flags != 0 && frame.flags != kResponseBulk && frame.flags != kResponseError) ||
      (frame.flags != 0 && view_.config.bulk_threshold == 0) ||
      frame.body_length != message.size() - sizeof frame ||
      (frame.flags == kResponseError && frame.body_length != 0)) {
    bump(malformed_responses_);
    return;
  }
  if (frame.generation != generation_) {
    bump(stale_responses_);  // meant for this slot's previous owner
    return;
  }
  if (frame.flags == kResponseError) {
    on_error_frame(frame);
    return;
  }
  const std::span<const std::byte> body = message.subspan(sizeof frame);
  Response response;
  response.status = frame.status;
  if (frame.flags == kResponseBulk) {
    // Pulled whether or not the call still waits: the server's respond() waits for the pull,
    // and a late call's pull ends that wait at once.
    const std::error_code error = pull_response(body, response.body);
    if (error == errc::would_block) return;  // refused: the inline copy or an error follows
    if (error) {
      fail_call(frame.correlation, error);
      return;
    }
  } else {
    response.body.assign(body.begin(), body.end());
  }
  std::shared_ptr<CallState> state;
  {
    const std::lock_guard lock(mutex_);
    const auto found = pending_.find(frame.correlation);
    if (found == pending_.end()) {
      const bool issued = frame.correlation != 0 && frame.correlation < next_id_;
      bump(issued ? late_responses_ : unknown_responses_);
      return;
    }
    state = std::move(found->second);
    pending_.erase(found);
    pending_count_.store(pending_.size(), std::memory_order_relaxed);
  }
  if (sync::Clock::now() > state->deadline) {
    bump(late_responses_);
    count(errc::timed_out);
    complete(*state, std::error_code(errc::timed_out));
    return;
  }
  bump(responses_);
  complete(*state, std::move(response));
}

std::error_code ClientCore::pull_response(std::span<const std::byte> body,
                                          std::vector<std::byte>& into) {
  bulk::TransferDescriptor descriptor{};
  if (body.size() != sizeof descriptor) {
    bump(bulk_rejected_);
    return errc::bad_descriptor;
  }
  std::memcpy(&descriptor, body.data(), sizeof descriptor);
  // The length sizes our buffer: validated before anything is allocated.
  if (descriptor.total_length <= view_.config.bulk_threshold ||
      descriptor.total_length > view_.config.max_bulk_body) {
    bump(bulk_rejected_);
    return errc::message_too_large;
  }
  // Only the server's own transfers: a forged frame must not make us claim another member's.
  // acquire: pairs with the server's release store after its takeover.
  if (descriptor.owner == 0 ||
      descriptor.owner != view_.header->bulk_server.load(std::memory_order_acquire)) {
    bump(bulk_rejected_);
    return errc::bad_descriptor;
  }
  into.resize(static_cast<std::size_t>(descriptor.total_length));  // bad_alloc: the caller's
  const Result<std::size_t> pulled = bulk_.pull(descriptor, std::span<std::byte>(into));
  if (pulled) {
    bump(bulk_responses_);
    return {};
  }
  if (pulled.error() == errc::permission_denied) {
    // relaxed: a sticky hint; later requests ask for inline responses (request_flags()).
    may_pull_.store(false, std::memory_order_relaxed);
    bump(bulk_fallbacks_);
    return errc::would_block;
  }
  if (pulled.error() != errc::peer_dead) bump(bulk_rejected_);
  // peer_dead: the server died before or during the copy; else forged, foreign or withdrawn.
  return pulled.error() == errc::peer_dead || pulled.error() == errc::not_found
             ? pulled.error()
             : std::error_code(errc::bad_descriptor);
}

void ClientCore::on_error_frame(const ResponseFrame& frame) {
  const auto error = static_cast<errc>(frame.status);
  switch (error) {
    case errc::permission_denied:
      if (resend_inline(frame.correlation)) return;
      break;
    case errc::bad_descriptor:
    case errc::message_too_large:
    case errc::not_found:
    case errc::already_returned:
    case errc::limit_reached:
      break;
    default:
      bump(malformed_responses_);  // no error a server sends
      return;
  }
  fail_call(frame.correlation, error);
}

bool ClientCore::resend_inline(std::uint64_t id) {
  std::shared_ptr<CallState> state;
  {
    const std::lock_guard lock(mutex_);
    const auto found = pending_.find(id);
    if (found == pending_.end()) return false;
    state = found->second;
  }
  std::unique_lock body_lock(state->body_mutex);
  // The server's pull of our body failed with permission_denied (its error frame is ordered
  // after the transfer's failed state: the slot's release CAS, then the channel commit).
  if (!state->transfer.valid() || state->transfer.poll() != errc::permission_denied) return false;
  // relaxed: a sticky hint (start() reads it).
  server_may_pull_.store(false, std::memory_order_relaxed);
  bump(bulk_fallbacks_);
  if (state->body.size() > view_.config.max_request_body) return false;  // permission_denied
  RequestFrame frame{};
  frame.version = kFrameVersion;
  frame.flags = request_flags();
  frame.client_slot = slot_;
  frame.generation = generation_;
  frame.method = state->method;
  frame.correlation = id;
  frame.body_length = static_cast<std::uint32_t>(state->body.size());
  // Waits for room up to the call's deadline (and the server's liveness), as the first send.
  const std::error_code error = send(frame, state->body, state->deadline, state->server);
  body_lock.unlock();
  if (error) (void)finish(id, error);
  return true;
}

void ClientCore::fail_call(std::uint64_t id, std::error_code error) {
  if (finish(id, error)) return;
  bool issued = false;
  {
    const std::lock_guard lock(mutex_);
    issued = id != 0 && id < next_id_;
  }
  bump(issued ? late_responses_ : unknown_responses_);
}

void ClientCore::receive_loop() noexcept {
  const channel::Endpoint& in = view_.responses[slot_];
  std::vector<std::byte> buffer;
  sync::Deadline next_check = sync::Clock::now();
  // acquire: pairs with the release store in shut_down() (nothing else is published by it).
  while (!stopping_.load(std::memory_order_acquire)) {
    const bool busy = pending_count_.load(std::memory_order_relaxed) != 0;
    sync::Deadline now = sync::Clock::now();
    if (busy && now >= next_check) {
      check_server();
      next_check = now + channel::kPeerCheckPeriod;
    }
    const sync::Deadline until = busy ? next_check : now + channel::kIdlePeerCheckPeriod;
    // relaxed: a hint; a leader that gives up with calls pending wakes us (lead()).
    if (leader_.load(std::memory_order_relaxed)) {
      // A caller receives for itself: wait off the channel, where every response's commit would
      // wake this thread for nothing (and take the caller's CPU).
      std::unique_lock lock(receiver_mutex_);
      receiver_cv_.wait_until(lock, until, [this] {
        // acquire (stopping_): as the loop's; relaxed (leader_): re-read after the wait anyway.
        return stopping_.load(std::memory_order_acquire) ||
               !leader_.load(std::memory_order_relaxed);
      });
      continue;
    }
    std::error_code error;
    try {
      error = in.receive_until(buffer, until);
    } catch (const std::bad_alloc&) {
      error = make_error_code(std::errc::not_enough_memory);  // the message stays queued
    }
    if (!error) {
      try {
        dispatch(buffer);
      } catch (const std::bad_alloc&) {
        // A response body could not be copied: the call will time out; nothing else to do.
        bump(malformed_responses_);
      }
    } else if (error != errc::timed_out) {
      // corrupt_segment (a peer scribbled on the ring) or no memory: nothing can be received
      // now. Fail what is pending rather than let it wait for its deadline, and do not spin.
      fail_all(error == errc::corrupt_segment ? error : std::error_code(errc::peer_dead));
      std::this_thread::sleep_for(channel::kPeerCheckPeriod);
    } else if (!busy) {
      next_check = sync::Clock::now();  // a call that starts now gets a prompt first look
    }
  }
}

void ClientCore::wake_receiver() noexcept {
  // The receiver evaluates its wait's predicate under receiver_mutex_: taking it here orders
  // our change of leader_ / stopping_ before that evaluation or before its wait, never between.
  { const std::lock_guard lock(receiver_mutex_); }
  receiver_cv_.notify_one();
}

void ClientCore::lead(const CallState& state, sync::Deadline until) {
  const channel::Endpoint& in = view_.responses[slot_];
  sync::Deadline next_look = sync::Clock::now() + channel::kPeerCheckPeriod;
  // acquire (finished): pairs with complete()'s release store; (stopping_): as receive_loop's.
  while (!state.finished.load(std::memory_order_acquire) &&
         !stopping_.load(std::memory_order_acquire)) {
    const sync::Deadline now = sync::Clock::now();
    if (now >= until || now >= state.deadline) break;  // the caller's wait ends the call
    if (now >= next_look) {
      if (server_gone(state.server)) break;  // likewise: peer_dead
      next_look = now + channel::kPeerCheckPeriod;
    }
    std::error_code error;
    try {
      // Spins and yields by the response endpoint's WaitPolicy, then parks on the channel: the
      // server's commit wakes this thread itself, not a receiver that would then wake it.
      error = in.receive_until(leader_buffer_, std::min({until, state.deadline, next_look}));
      if (!error) dispatch(leader_buffer_);
    } catch (const std::bad_alloc&) {
      break;  // the receiver thread takes over (the message stays queued, or was counted)
    }
    if (error && error != errc::timed_out) break;  // corrupt_segment: the receiver reports it
  }
  // seq_cst: pairs with start()'s "pending_count_ store, then leader_ load": either it sees no
  // leader and wakes the receiver itself, or we see its call pending below. Also a release:
  // hands leader_buffer_ to the next leader (try_lead()'s acquire).
  leader_.store(false, std::memory_order_seq_cst);
  if (pending_count_.load(std::memory_order_seq_cst) != 0) wake_receiver();
}

void ClientCore::shut_down() noexcept {
  if (!receiver_.joinable()) return;
  if (!segment_->self().attached()) {
    // A fork child's copy: the receiver thread does not exist here, nothing may be joined.
    receiver_.detach();
    return;
  }
  stopping_.store(true, std::memory_order_release);  // pairs with the receiver's acquire load
  // Wake the receiver: an empty message on this client's own response channel. A full ring
  // needs none (the receiver is busy and sees the flag).
  (void)view_.responses[slot_].try_send({});
  wake_receiver();  // in case it waits off the channel while a caller leads
  receiver_.join();
  fail_all(errc::cancelled);
  free_slot(view_.slots[slot_], me_);
}

ClientStatistics ClientCore::statistics() const noexcept {
  const auto get = [](const std::atomic<std::uint64_t>& counter) {
    return counter.load(std::memory_order_relaxed);  // relaxed: a statistic
  };
  ClientStatistics s;
  s.calls = get(calls_);
  s.responses = get(responses_);
  s.timed_out = get(timed_out_);
  s.cancelled = get(cancelled_);
  s.peer_dead = get(peer_dead_);
  s.late_responses = get(late_responses_);
  s.unknown_responses = get(unknown_responses_);
  s.stale_responses = get(stale_responses_);
  s.malformed_responses = get(malformed_responses_);
  s.cancel_notices = get(cancel_notices_);
  s.bulk_requests = get(bulk_requests_);
  s.bulk_responses = get(bulk_responses_);
  s.bulk_fallbacks = get(bulk_fallbacks_);
  s.bulk_rejected = get(bulk_rejected_);
  return s;
}

}  // namespace detail

// --- PendingCall

PendingCall& PendingCall::operator=(PendingCall&& other) noexcept {
  if (this != &other) {
    if (state_ != nullptr && !poll()) cancel();
    state_ = std::move(other.state_);
  }
  return *this;
}

PendingCall::~PendingCall() {
  if (state_ != nullptr && !poll()) cancel();
}

Result<Response> PendingCall::wait() {
  return wait_until(sync::Deadline::max());
}

Result<Response> PendingCall::wait_until(sync::Deadline deadline) {
  if (state_ == nullptr) return make_error_code(errc::invalid_argument);
  return wait_until(deadline, state_->core->try_lead());
}

Result<Response> PendingCall::wait_until(sync::Deadline deadline, bool leading) {
  detail::CallState& state = *state_;
  if (!leading) {
    // A follower: spin, then yield, before parking (a response that comes within microseconds
    // is taken without a futex sleep and wake-up; ClientOptions::wait_policy), and take the lead
    // should it become free meanwhile.
    const auto is_finished = [&state, &leading] {
      // acquire: pairs with complete()'s release store.
      return state.finished.load(std::memory_order_acquire) || (leading = state.core->try_lead());
    };
    const channel::WaitPolicy& policy = state.core->wait_policy();
    if (!sync::detail::spin_until(is_finished, policy.spin_rounds,
                                  channel::WaitPolicy::kMaxPausesPerRound)) {
      (void)sync::detail::yield_until(is_finished, policy.yield_rounds);
    }
  }
  // The leader receives its own response (and any other) until its call completes or its wait
  // ends; then, or as a follower, it waits below for the outcome (complete() notifies).
  if (leading) state.core->lead(state, deadline);
  std::unique_lock lock(state.mutex);
  sync::Deadline next_look = sync::Clock::now() + channel::kPeerCheckPeriod;
  for (;;) {
    if (state.done) {
      if (state.taken) return make_error_code(errc::invalid_argument);
      state.taken = true;
      Result<Response> outcome = std::move(state.outcome);
      lock.unlock();
      // A bulk body is let go before the caller sees the outcome (its span may go then).
      detail::release_body(state);
      return outcome;
    }
    const sync::Deadline now = sync::Clock::now();
    std::error_code ending;
    if (now >= state.deadline) {
      ending = errc::timed_out;  // the call's own deadline
    } else if (now >= next_look) {
      // The waiter looks at the server itself every check period, so a death is seen promptly
      // even while the receiver sleeps its idle period.
      if (state.core->server_gone(state.server)) ending = errc::peer_dead;
      next_look = now + channel::kPeerCheckPeriod;
    }
    if (ending) {
      // Complete it here (the receiver may be completing it at this moment with its response;
      // then finish() finds nothing and the wait below is short).
      lock.unlock();
      const bool finished = state.core->finish(state.id, ending);
      lock.lock();
      if (!finished) state.done_cv.wait(lock, [&state] { return state.done; });
      continue;
    }
    if (now >= deadline) return make_error_code(errc::timed_out);
    state.done_cv.wait_until(lock, std::min({deadline, state.deadline, next_look}));
  }
}

bool PendingCall::poll() const noexcept {
  if (state_ == nullptr) return false;
  const std::lock_guard lock(state_->mutex);
  return state_->done;
}

void PendingCall::cancel() noexcept {
  if (state_ == nullptr || state_->id == 0) return;
  if (state_->core->finish(state_->id, errc::cancelled)) {
    state_->core->notify_cancel(state_->id);
  }
}

// --- Client

Result<Client> Client::connect(std::string_view name, const ClientOptions& options) {
  Result<shm::Segment> segment = shm::Segment::open(name, shm::SegmentKind::rpc, options.segment);
  if (!segment) return segment.error();
  auto owned = std::make_unique<shm::Segment>(std::move(*segment));
  detail::SegmentView view;
  if (std::error_code error = detail::open_view(*owned, view)) return error;
  for (channel::Endpoint& endpoint : view.responses) endpoint.set_wait_policy(options.wait_policy);
  // Bulk on: open the companion segment's table (decision 0055) and probe whether we may pull
  // from the server (a refusal sends every response of ours inline; kFlagInlineResponse).
  std::unique_ptr<shm::Segment> bulk_segment;
  bulk::TransferEndpoint bulk_endpoint;
  bool may_pull = true;
  if (view.config.bulk_threshold != 0) {
    Result<shm::Segment> opened = shm::Segment::open(std::string(name) + detail::kBulkSuffix,
                                                     shm::SegmentKind::raw, options.segment);
    if (!opened) return opened.error();
    bulk_segment = std::make_unique<shm::Segment>(std::move(*opened));
    Result<bulk::TransferEndpoint> endpoint =
        bulk::TransferEndpoint::open(*bulk_segment, options.bulk);
    if (!endpoint) return endpoint.error();
    bulk_endpoint = std::move(*endpoint);
    // acquire: pairs with the server's release store after its takeover.
    const std::uint32_t server = view.header->bulk_server.load(std::memory_order_acquire);
    if (server != 0 &&
        bulk_endpoint.probe(sync::ParticipantId::unpack(server)).error == errc::permission_denied) {
      may_pull = false;
    }
  }
  const sync::Participant& self = owned->self();
  const std::uint32_t me = self.id().pack();
  // Claim, step 1: a free slot, or one whose owner is dead (two passes: a slot freed by a
  // concurrent sweep between our look and our CAS is found on the second).
  std::uint32_t claimed = view.config.max_clients;
  for (int pass = 0; pass < 2 && claimed == view.config.max_clients; ++pass) {
    for (std::uint32_t index = 0; index < view.config.max_clients; ++index) {
      detail::ClientSlot& slot = view.slots[index];
      // acquire: pairs with the release CAS that freed or claimed the slot.
      std::uint32_t owner = slot.owner.load(std::memory_order_acquire);
      if (owner != 0 && detail::packed_alive(self, owner)) continue;
      // acq_rel: acquire as above; release publishes the claim (with step 2's bump, which the
      // server reads after an acquire load of owner).
      if (slot.owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
        claimed = index;
        break;
      }
    }
  }
  if (claimed == view.config.max_clients) return make_error_code(errc::limit_reached);
  detail::ClientSlot& slot = view.slots[claimed];
  // Step 2: a new generation (never 0). release: pairs with the server's acquire load in
  // respond(); only the owner writes it, so the RMW never races another writer.
  std::uint32_t generation = slot.generation.fetch_add(1, std::memory_order_release) + 1;
  if (generation == 0) generation = slot.generation.fetch_add(1, std::memory_order_release) + 1;
  // Bulk on: publish our id in the companion segment for the server's descriptor check.
  // relaxed: read by the server only after it received a request of ours (the channel's
  // commit/receive orders it).
  slot.bulk_owner.store(bulk_endpoint.valid() ? bulk_endpoint.self().pack() : 0,
                        std::memory_order_relaxed);
  // Step 3: drop what the previous owner left in the response ring (its generation differs;
  // the receiver would drop it too, this only frees the room at once).
  std::vector<std::byte> stale;
  while (!view.responses[claimed].try_receive(stale)) {
  }
  Client client;
  client.core_ = std::make_shared<detail::ClientCore>(
      std::move(owned), std::move(view), claimed, generation, options.wait_policy,
      std::move(bulk_segment), std::move(bulk_endpoint), may_pull);
  client.core_->start_receiver();
  return client;
}

Client::Client(Client&& other) noexcept : core_(std::move(other.core_)) {}

Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    if (core_ != nullptr) core_->shut_down();
    core_ = std::move(other.core_);
  }
  return *this;
}

Client::~Client() {
  if (core_ != nullptr) core_->shut_down();
}

Result<Response> Client::call(std::uint32_t method, std::span<const std::byte> body,
                              sync::Deadline deadline) {
  if (core_ == nullptr) return make_error_code(errc::invalid_argument);
  // Lead before sending: then start() needs no receiver on the channel (no wake-up of it).
  const bool leading = core_->try_lead();
  PendingCall pending(core_->start(method, body, deadline, nullptr, 0));
  return pending.wait_until(sync::Deadline::max(), leading);
}

PendingCall Client::async_call(std::uint32_t method, std::span<const std::byte> body,
                               sync::Deadline deadline) {
  if (core_ == nullptr) return PendingCall();
  return PendingCall(core_->start(method, body, deadline, nullptr, 0, /*copy_body=*/true));
}

void Client::call_many(std::span<const CallSpec> requests, sync::Deadline deadline,
                       const Completion& on_complete) {
  if (core_ == nullptr) {
    for (std::size_t i = 0; i < requests.size(); ++i) {
      on_complete(i, make_error_code(errc::invalid_argument));
    }
    return;
  }
  auto sink = std::make_shared<detail::CompletionQueue>();
  std::vector<PendingCall> calls;
  calls.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    calls.push_back(
        PendingCall(core_->start(requests[i].method, requests[i].body, deadline, sink, i)));
  }
  bool expired = false;
  for (std::size_t handed = 0; handed < requests.size(); ++handed) {
    std::size_t tag = 0;
    {
      std::unique_lock lock(sink->mutex);
      while (sink->ready.empty()) {
        const sync::Deadline look = sync::Clock::now() + channel::kPeerCheckPeriod;
        if (!expired && look < deadline) {
          // As PendingCall::wait_until: look at the server every check period.
          if (sink->ready_cv.wait_until(lock, look) == std::cv_status::timeout) {
            lock.unlock();
            for (PendingCall& call : calls) {
              const detail::CallState& state = *call.state_;
              if (state.id != 0 && core_->server_gone(state.server)) {
                (void)core_->finish(state.id, errc::peer_dead);
              }
            }
            lock.lock();
          }
        } else if (!expired &&
                   sink->ready_cv.wait_until(lock, deadline) == std::cv_status::timeout) {
          // Every call still in flight completes with timed_out (and lands in the sink).
          expired = true;
          lock.unlock();
          for (PendingCall& call : calls) {
            if (call.state_ != nullptr && call.state_->id != 0) {
              (void)core_->finish(call.state_->id, errc::timed_out);
            }
          }
          lock.lock();
        } else if (expired) {
          sink->ready_cv.wait(lock, [&sink] { return !sink->ready.empty(); });
        }
      }
      tag = sink->ready.front();
      sink->ready.pop_front();
    }
    on_complete(tag, calls[tag].wait());
  }
}

ClientStatistics Client::statistics() const noexcept {
  return core_ == nullptr ? ClientStatistics{} : core_->statistics();
}

std::uint32_t Client::slot() const noexcept {
  return core_->slot();
}

const ServerConfig& Client::config() const noexcept {
  return core_->config();
}

}  // namespace xproc::rpc
