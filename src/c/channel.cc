// xproc_channel_*: the C face of xproc::channel::Channel (include/xproc/c/channel.h).
//
// The handle is a heap object (allocated by create/open/adopt, freed by close); reservations and
// messages are C++ Reservation/Message objects placed in the caller's record after a magic word,
// so the send/receive/reserve/peek paths allocate nothing. Every entry point catches exceptions
// (guarded) and returns an errno value: would_block -> EAGAIN here (to_errno gives EBUSY, the
// locks' convention), the rest through to_errno.

#include "xproc/c/channel.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <string_view>

#include "sync_internal.h"
#include "xproc/channel/channel.h"
#include "xproc/channel/readiness.h"

struct xproc_channel {
  xproc::channel::Channel channel;
  std::mutex readiness_mutex;  // creation of the readiness descriptor only
  std::unique_ptr<xproc::channel::ReadinessFd> readiness;
};

namespace xproc::c_api {
namespace {

using channel::Channel;
using channel::ChannelConfig;
using channel::Message;
using channel::Reservation;

// Word 0 of a live record's opaque bytes; 0 once finished (commit/abandon/release).
constexpr std::uint64_t kReservationMagic = 0x7872657365727665ULL;  // "xreserve"
constexpr std::uint64_t kMessageMagic = 0x786d657373616765ULL;      // "xmessage"
constexpr std::size_t kObjectOffset = 16;

static_assert(sizeof(Reservation) + kObjectOffset <=
              sizeof(xproc_channel_reservation_t::xproc_opaque_));
static_assert(sizeof(Message) + kObjectOffset <= sizeof(xproc_channel_message_t::xproc_opaque_));
static_assert(alignof(Reservation) <= 8 && alignof(Message) <= 8);
static_assert(XPROC_CHANNEL_NAME_MAX == shm::kMaxNameLength);

int channel_errno(std::error_code error) noexcept {
  if (error == errc::would_block) return EAGAIN;
  return to_errno(error);
}

// The magic word is read and written with memcpy: the opaque bytes hold no uint64_t object.
template <class Record>
std::uint64_t magic_of(const Record* record) noexcept {
  std::uint64_t magic = 0;
  std::memcpy(&magic, record->xproc_opaque_.bytes, sizeof(magic));
  return magic;
}
template <class Record>
void set_magic(Record* record, std::uint64_t magic) noexcept {
  std::memcpy(record->xproc_opaque_.bytes, &magic, sizeof(magic));
}
template <class T, class Record>
T* object_in(Record* record) noexcept {
  return std::launder(reinterpret_cast<T*>(record->xproc_opaque_.bytes + kObjectOffset));
}

int config_from(std::size_t capacity, std::size_t max_message, int flags,
                ChannelConfig& config) noexcept {
  constexpr int kKnown =
      XPROC_CHANNEL_SPSC | XPROC_CHANNEL_REDELIVERY | XPROC_CHANNEL_OPEN_EXISTING;
  if ((flags & ~kKnown) != 0 || capacity > UINT32_MAX || max_message > UINT32_MAX) return EINVAL;
  config.capacity_bytes = static_cast<std::uint32_t>(capacity);
  config.max_message = static_cast<std::uint32_t>(max_message);
  config.spsc = (flags & XPROC_CHANNEL_SPSC) != 0;
  config.redelivery = (flags & XPROC_CHANNEL_REDELIVERY) != 0;
  if (channel::region_size_for(config) == 0) return EINVAL;
  return 0;
}

// Wraps a Result<Channel> into a new handle.
int hand_out(Result<Channel> channel, xproc_channel_t** out) {
  if (!channel) return channel_errno(channel.error());
  auto* handle = new xproc_channel;
  handle->channel = std::move(*channel);
  *out = handle;
  return 0;
}

bool name_ok(const char* name) noexcept {
  return name != nullptr && shm::valid_segment_name(name);
}

// The optional deadline of a timed call: nullptr for untimed (forever), `storage` otherwise.
int deadline_of(const struct timespec* abstime, sync::Deadline& storage) noexcept {
  return to_deadline(abstime, storage);
}

const sync::Deadline kForever = sync::Deadline::max();

int send_impl(xproc_channel_t* handle, const void* data, std::size_t size,
              const sync::Deadline* deadline) noexcept {
  if (handle == nullptr || (data == nullptr && size != 0)) return EINVAL;
  return guarded([&] {
    const std::span<const std::byte> message(static_cast<const std::byte*>(data), size);
    const channel::Endpoint& endpoint = handle->channel.endpoint();
    if (deadline == nullptr) return channel_errno(endpoint.try_send(message));
    if (*deadline == kForever) return channel_errno(endpoint.send(message));
    return channel_errno(endpoint.send_until(message, *deadline));
  });
}

int receive_impl(xproc_channel_t* handle, void* buffer, std::size_t capacity, std::size_t* len,
                 const sync::Deadline* deadline) noexcept {
  if (handle == nullptr || len == nullptr || (buffer == nullptr && capacity != 0)) return EINVAL;
  return guarded([&] {
    const std::span<std::byte> span(static_cast<std::byte*>(buffer), capacity);
    std::size_t needed = 0;
    Result<std::size_t> received =
        handle->channel.endpoint().receive_sized(span, deadline, &needed);
    if (!received) {
      if (received.error() == errc::message_too_large) *len = needed;
      return channel_errno(received.error());
    }
    *len = *received;
    return 0;
  });
}

int reserve_impl(xproc_channel_t* handle, std::size_t size,
                 xproc_channel_reservation_t* reservation,
                 const sync::Deadline* deadline) noexcept {
  if (handle == nullptr || reservation == nullptr) return EINVAL;
  return guarded([&] {
    const channel::Endpoint& endpoint = handle->channel.endpoint();
    Result<Reservation> reserved = deadline == nullptr ? endpoint.try_reserve(size)
                                   : *deadline == kForever
                                       ? endpoint.reserve(size)
                                       : endpoint.reserve_until(size, *deadline);
    if (!reserved) return channel_errno(reserved.error());
    std::memset(reservation->xproc_opaque_.bytes, 0, sizeof(reservation->xproc_opaque_.bytes));
    Reservation* object =
        new (reservation->xproc_opaque_.bytes + kObjectOffset) Reservation(std::move(*reserved));
    set_magic(reservation, kReservationMagic);
    reservation->data = object->data().data();
    reservation->size = object->data().size();
    return 0;
  });
}

int peek_impl(xproc_channel_t* handle, xproc_channel_message_t* message,
              const sync::Deadline* deadline) noexcept {
  if (handle == nullptr || message == nullptr) return EINVAL;
  return guarded([&] {
    const channel::Endpoint& endpoint = handle->channel.endpoint();
    Result<Message> peeked = deadline == nullptr     ? endpoint.try_peek()
                             : *deadline == kForever ? endpoint.peek()
                                                     : endpoint.peek_until(*deadline);
    if (!peeked) return channel_errno(peeked.error());
    std::memset(message->xproc_opaque_.bytes, 0, sizeof(message->xproc_opaque_.bytes));
    Message* object =
        new (message->xproc_opaque_.bytes + kObjectOffset) Message(std::move(*peeked));
    set_magic(message, kMessageMagic);
    message->data = object->data().data();
    message->size = object->data().size();
    return 0;
  });
}

// Finishes a live reservation: commit (true) or abandon (false).
int finish_reservation(xproc_channel_t* handle, xproc_channel_reservation_t* reservation,
                       bool commit) noexcept {
  if (handle == nullptr || reservation == nullptr || magic_of(reservation) != kReservationMagic) {
    return EINVAL;
  }
  Reservation* object = object_in<Reservation>(reservation);
  int code = 0;
  if (commit) code = channel_errno(handle->channel.endpoint().commit(*object));
  if (code != 0) return code;  // not this channel's reservation: left as it was
  object->~Reservation();      // uncommitted: abandons it
  set_magic(reservation, 0);
  reservation->data = nullptr;
  reservation->size = 0;
  return 0;
}

}  // namespace
}  // namespace xproc::c_api

using namespace xproc::c_api;  // NOLINT(google-build-using-namespace): this file's own helpers

extern "C" {

int xproc_channel_create(const char* name, size_t capacity, size_t max_message, int flags,
                         mode_t mode, xproc_channel_t** out) {
  if (out == nullptr || !name_ok(name)) return EINVAL;
  ChannelConfig config;
  if (int code = config_from(capacity, max_message, flags, config)) return code;
  return guarded([&] {
    xproc::shm::SegmentOptions options;
    options.mode = mode;
    if ((flags & XPROC_CHANNEL_OPEN_EXISTING) != 0) {
      options.if_exists = xproc::shm::IfExists::open;
    }
    return hand_out(Channel::create(name, config, options), out);
  });
}

int xproc_channel_open(const char* name, xproc_channel_t** out) {
  if (out == nullptr || !name_ok(name)) return EINVAL;
  return guarded([&] { return hand_out(Channel::open(name), out); });
}

int xproc_channel_create_anonymous(size_t capacity, size_t max_message, int flags,
                                   xproc_channel_t** out) {
  if (out == nullptr || (flags & XPROC_CHANNEL_OPEN_EXISTING) != 0) return EINVAL;
  ChannelConfig config;
  if (int code = config_from(capacity, max_message, flags, config)) return code;
  return guarded([&] { return hand_out(Channel::create_anonymous(config), out); });
}

int xproc_channel_fd(const xproc_channel_t* channel) {
  if (channel == nullptr || !channel->channel.valid()) return -1;
  return channel->channel.segment().fd();
}

int xproc_channel_adopt(int fd, xproc_channel_t** out) {
  if (out == nullptr) return EINVAL;
  if (fd < 0) return EBADF;
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return errno;
  xproc::sys::FileDescriptor owned(copy);
  return guarded([&] { return hand_out(Channel::adopt(std::move(owned)), out); });
}

int xproc_channel_close(xproc_channel_t* channel) {
  if (channel == nullptr) return 0;
  channel->readiness.reset();  // stops the waker before the mapping goes
  delete channel;
  return 0;
}

int xproc_channel_unlink(const char* name) {
  if (!name_ok(name)) return EINVAL;
  return guarded([&] {
    // Opening attaches this process for a moment; unlink() checks the name still names it.
    xproc::Result<xproc::shm::Segment> segment =
        xproc::shm::Segment::open(name, xproc::shm::SegmentKind::channel);
    if (!segment) return channel_errno(segment.error());
    return channel_errno(segment->unlink());
  });
}

int xproc_channel_declare(xproc_channel_t* channel, int roles) {
  constexpr int kKnown = XPROC_CHANNEL_SENDER | XPROC_CHANNEL_RECEIVER;
  if (channel == nullptr || roles == 0 || (roles & ~kKnown) != 0) return EINVAL;
  if ((roles & XPROC_CHANNEL_SENDER) != 0) channel->channel->declare_producer();
  if ((roles & XPROC_CHANNEL_RECEIVER) != 0) channel->channel->declare_consumer();
  return 0;
}

int xproc_channel_send(xproc_channel_t* channel, const void* data, size_t size) {
  return send_impl(channel, data, size, &kForever);
}

int xproc_channel_try_send(xproc_channel_t* channel, const void* data, size_t size) {
  return send_impl(channel, data, size, nullptr);
}

int xproc_channel_timedsend(xproc_channel_t* channel, const void* data, size_t size,
                            const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = deadline_of(abstime, deadline)) return code;
  return send_impl(channel, data, size, &deadline);
}

int xproc_channel_reserve(xproc_channel_t* channel, size_t size,
                          xproc_channel_reservation_t* reservation) {
  return reserve_impl(channel, size, reservation, &kForever);
}

int xproc_channel_try_reserve(xproc_channel_t* channel, size_t size,
                              xproc_channel_reservation_t* reservation) {
  return reserve_impl(channel, size, reservation, nullptr);
}

int xproc_channel_timedreserve(xproc_channel_t* channel, size_t size,
                               xproc_channel_reservation_t* reservation,
                               const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = deadline_of(abstime, deadline)) return code;
  return reserve_impl(channel, size, reservation, &deadline);
}

int xproc_channel_commit(xproc_channel_t* channel, xproc_channel_reservation_t* reservation) {
  return finish_reservation(channel, reservation, true);
}

int xproc_channel_abandon(xproc_channel_t* channel, xproc_channel_reservation_t* reservation) {
  return finish_reservation(channel, reservation, false);
}

int xproc_channel_receive(xproc_channel_t* channel, void* buffer, size_t capacity, size_t* len) {
  return receive_impl(channel, buffer, capacity, len, &kForever);
}

int xproc_channel_try_receive(xproc_channel_t* channel, void* buffer, size_t capacity,
                              size_t* len) {
  return receive_impl(channel, buffer, capacity, len, nullptr);
}

int xproc_channel_timedreceive(xproc_channel_t* channel, void* buffer, size_t capacity, size_t* len,
                               const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = deadline_of(abstime, deadline)) return code;
  return receive_impl(channel, buffer, capacity, len, &deadline);
}

int xproc_channel_peek(xproc_channel_t* channel, xproc_channel_message_t* message) {
  return peek_impl(channel, message, &kForever);
}

int xproc_channel_try_peek(xproc_channel_t* channel, xproc_channel_message_t* message) {
  return peek_impl(channel, message, nullptr);
}

int xproc_channel_timedpeek(xproc_channel_t* channel, xproc_channel_message_t* message,
                            const struct timespec* abstime) {
  xproc::sync::Deadline deadline;
  if (int code = deadline_of(abstime, deadline)) return code;
  return peek_impl(channel, message, &deadline);
}

int xproc_channel_release(xproc_channel_t* channel, xproc_channel_message_t* message) {
  if (channel == nullptr || message == nullptr || magic_of(message) != kMessageMagic) {
    return EINVAL;
  }
  Message* object = object_in<Message>(message);
  if (int code = channel_errno(channel->channel.endpoint().release(*object))) return code;
  object->~Message();
  set_magic(message, 0);
  message->data = nullptr;
  message->size = 0;
  return 0;
}

int xproc_channel_readiness_fd(xproc_channel_t* channel, int* fd) {
  if (channel == nullptr || fd == nullptr) return EINVAL;
  return guarded([&] {
    std::lock_guard<std::mutex> lock(channel->readiness_mutex);
    if (channel->readiness == nullptr) {
      auto created = xproc::channel::ReadinessFd::create(channel->channel.endpoint());
      if (!created) return channel_errno(created.error());
      channel->readiness = std::move(*created);
    }
    *fd = channel->readiness->fd();
    return 0;
  });
}

int xproc_channel_readiness_rearm(xproc_channel_t* channel) {
  if (channel == nullptr) return EINVAL;
  return guarded([&] {
    std::lock_guard<std::mutex> lock(channel->readiness_mutex);
    if (channel->readiness == nullptr) return EINVAL;
    channel->readiness->rearm();
    return 0;
  });
}

int xproc_channel_stats(const xproc_channel_t* channel, xproc_channel_stats_t* stats) {
  if (channel == nullptr || stats == nullptr) return EINVAL;
  const xproc::channel::Endpoint& endpoint = channel->channel.endpoint();
  const xproc::channel::Statistics s = endpoint.statistics();
  *stats = xproc_channel_stats_t{};
  stats->capacity = endpoint.capacity();
  stats->max_message = endpoint.max_message();
  stats->depth_messages = s.depth_messages;
  stats->depth_bytes = s.depth_bytes;
  stats->claimed_bytes = s.claimed_bytes;
  stats->senders_waiting = s.senders_waiting;
  stats->receivers_waiting = s.receivers_waiting;
  stats->reserved_total = s.reserved_total;
  stats->claimed_total = s.claimed_total;
  stats->abandoned = s.abandoned;
  stats->producer_died = s.producer_died;
  stats->consumer_died = s.consumer_died;
  stats->redelivered = s.redelivered;
  stats->lock_takeovers = s.lock_takeovers;
  return 0;
}

}  // extern "C"
