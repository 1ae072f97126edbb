// Rows "channel", "channel-spsc" and "channel-park": the xproc Channel (include/xproc/channel).
//
// The parent creates an anonymous channel segment (Channel::create_anonymous: a memfd segment of
// kind channel, formatted before it is published) in create_link(); every child that opens an
// end adopts it through a new open file description (adopt(sys::reopen(fd))), which attaches the
// child to the segment's participant table, so a dead peer is seen as dead (segment.h: the
// child's inherited copy of the Segment is detached). send()/receive() forward to the channel's
// blocking calls, which spin briefly, yield a few times, then park on a futex.
//
//   channel         MPMC format (producer and consumer locks), any senders x receivers
//   channel-spsc    SPSC format (no lock CAS), one sender and one receiver only
//   channel-park    MPMC format; receivers park at once (WaitPolicy{0, 0}: no spin, no yield)
//                   and a sender that finds the channel empty waits (busy, at most
//                   kParkedWaitLimit) until a receiver has parked on not_empty before it sends,
//                   so every hand-off pays the futex wake-up: the round trip "with sleeping
//                   peers". Its latency also contains kParkSettle (a few microseconds per
//                   direction), so it is an upper bound of the sleeping round trip.
//
// Sizing: a ring of about 1 MiB (like spsc-ring and boost-mq), larger when 8 messages of the
// run's size would not fit (record_length(size) each); max_message = the run's message size.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>

#include "transport.h"
#include "xproc/channel/channel.h"
#include "xproc/channel/endpoint.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/file.h"

namespace xproc::bench {
namespace {

enum class Flavour { mpmc, spsc, parked };

constexpr std::uint64_t kRingBytes = std::uint64_t{1} << 20;
constexpr std::uint64_t kMinMessagesInRing = 8;
// Processes of an mpmc run (64 at most each side) plus the parent.
constexpr std::uint32_t kParticipants = 160;
// channel-park: how long a sender waits for an idle receiver to park before it sends anyway
// (the receiver may be busy elsewhere, or not running on a loaded machine: a longer bound made
// rows run past the bench's timeout at load 8).
constexpr std::chrono::microseconds kParkedWaitLimit{200};
// ... and how long after the receiver announced itself (it re-checks, then calls futex_wait).
constexpr std::chrono::microseconds kParkSettle{3};

[[noreturn]] void fail(std::error_code error, const std::string& what) {
  throw std::system_error(error, "channel: " + what);
}

// Adopts the parent's channel segment in this (child) process: a new open file description, so
// this process's participant slot lock is its own.
channel::Channel adopt(const channel::Channel& parent) {
  Result<sys::FileDescriptor> fd = sys::reopen(parent.segment().fd());
  if (!fd) fail(fd.error(), "reopen of the segment descriptor");
  shm::SegmentOptions options;
  options.participant_capacity = kParticipants;
  Result<channel::Channel> adopted = channel::Channel::adopt(std::move(*fd), options);
  if (!adopted) fail(adopted.error(), "adopt");
  return std::move(*adopted);
}

class ChannelSender final : public Sender {
 public:
  ChannelSender(channel::Channel channel, bool wait_for_parked)
      : channel_(std::move(channel)), wait_for_parked_(wait_for_parked) {}
  void send(const std::byte* data, std::size_t size) override {
    if (wait_for_parked_) wait_until_receiver_parks();
    if (std::error_code error = channel_->send(std::span<const std::byte>(data, size)))
      fail(error, "send");
  }

 private:
  // Returns at once when messages are queued (the receivers are busy, not parked).
  void wait_until_receiver_parks() const {
    const auto limit = std::chrono::steady_clock::now() + kParkedWaitLimit;
    for (;;) {
      const channel::Statistics s = channel_->statistics();
      if (s.depth_bytes != 0) return;
      if (s.receivers_waiting != 0) break;
      if (std::chrono::steady_clock::now() >= limit) return;
      sync::detail::cpu_relax();
    }
    // An announced receiver re-checks the channel once before its futex wait; give it time to
    // get there, so the send below really wakes a sleeper.
    const auto settle = std::chrono::steady_clock::now() + kParkSettle;
    while (std::chrono::steady_clock::now() < settle) sync::detail::cpu_relax();
  }

  channel::Channel channel_;
  bool wait_for_parked_;
};

class ChannelReceiver final : public Receiver {
 public:
  explicit ChannelReceiver(channel::Channel channel) : channel_(std::move(channel)) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    Result<std::size_t> got = channel_->receive(std::span<std::byte>(data, capacity));
    if (!got) fail(got.error(), "receive");
    return *got;
  }

 private:
  channel::Channel channel_;
};

channel::ChannelConfig config_for(const LinkShape& shape, Flavour flavour) {
  const std::uint64_t size = std::max<std::size_t>(shape.message_size, 1);
  const std::uint64_t needed = kMinMessagesInRing * channel::detail::record_length(size);
  channel::ChannelConfig config;
  config.capacity_bytes = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(std::bit_ceil(std::max(kRingBytes, needed)), std::uint64_t{1} << 30));
  config.max_message = static_cast<std::uint32_t>(size);
  config.spsc = flavour == Flavour::spsc;
  return config;
}

class ChannelLink final : public Link {
 public:
  ChannelLink(const LinkShape& shape, Flavour flavour) : flavour_(flavour) {
    shm::SegmentOptions options;
    options.participant_capacity = kParticipants;
    Result<channel::Channel> created =
        channel::Channel::create_anonymous(config_for(shape, flavour), options);
    if (!created) fail(created.error(), "create_anonymous");
    channel_ = std::move(*created);
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<ChannelSender>(adopt(channel_), flavour_ == Flavour::parked);
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    channel::Channel mine = adopt(channel_);
    if (flavour_ == Flavour::parked) mine.set_wait_policy(channel::WaitPolicy{0, 0});
    return std::make_unique<ChannelReceiver>(std::move(mine));
  }

 private:
  Flavour flavour_;
  channel::Channel channel_;
};

class ChannelTransport final : public Transport {
 public:
  explicit ChannelTransport(Flavour flavour) : flavour_(flavour) {}
  std::string name() const override {
    switch (flavour_) {
      case Flavour::spsc:
        return "channel-spsc";
      case Flavour::parked:
        return "channel-park";
      case Flavour::mpmc:
        break;
    }
    return "channel";
  }
  std::string description() const override {
    switch (flavour_) {
      case Flavour::spsc:
        return "xproc Channel, SPSC format (no lock CAS), ~1 MiB ring, anonymous segment";
      case Flavour::parked:
        return "xproc Channel, MPMC; senders wait for an idle receiver to park (sleeping peers)";
      case Flavour::mpmc:
        break;
    }
    return "xproc Channel, MPMC format, ~1 MiB ring, anonymous segment (spin, yield, park)";
  }
  std::string unsupported(const LinkShape& shape) const override {
    if (shape.message_size > (std::size_t{1} << 29)) return "message larger than a channel ring";
    if (flavour_ == Flavour::spsc && (shape.senders > 1 || shape.receivers > 1))
      return "single producer, single consumer only";
    if (shape.senders + shape.receivers + 1 > static_cast<int>(kParticipants))
      return "more processes than participant slots";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<ChannelLink>(shape, flavour_);
  }

 private:
  Flavour flavour_;
};

const TransportRegistration mpmc_registration{
    0, [] { return std::make_unique<ChannelTransport>(Flavour::mpmc); }};
const TransportRegistration spsc_registration{
    1, [] { return std::make_unique<ChannelTransport>(Flavour::spsc); }};
const TransportRegistration parked_registration{
    2, [] { return std::make_unique<ChannelTransport>(Flavour::parked); }};

}  // namespace
}  // namespace xproc::bench
