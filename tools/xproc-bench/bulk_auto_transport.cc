// Bulk row "xproc-auto": bulk::BulkChannel (include/xproc/bulk/bulk_channel.h), the front end
// for bytes in private memory that picks the path by itself. The producer writes the payload
// into one of B private buffers and post()s it; the channel copies it inline or into a pool
// buffer at once (the Completion is done), or registers it for a pull (the Completion is done
// once a consumer copied it). The producer writes the same buffer again while its Completion
// is done, else it moves to the next and waits on that one's Completion, so B = consumers + 1
// private buffers keep a pulling consumer busy. A consumer
// receive()s each payload into its own private buffer (one copy out of the pool, or the pull).
//
// Thresholds: the channel's defaults (decision 0042), except XPROC_BENCH_AUTO_PULL_MIN=<bytes>
// in the environment, which sets pull_min (to compare the paths), and
// XPROC_BENCH_AUTO_STREAM_WINDOW=<chunks>, which sets every process's stream_window (decision
// 0048; 0: no pacing), and XPROC_BENCH_AUTO_RING_MIN=<bytes>, its stream_ring_min (decision
// 0058). Pool: one buffer class per
// power of 16 up to the payload, clamp(16 MiB / payload, 2, 16) + consumers buffers each.
// The parent creates the anonymous segment in create_link(); each child adopts it through a new
// open file description (adopt(sys::reopen(fd))) and prefaults the segment's pool.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "bulk_transport.h"
#include "xproc/bulk/bulk_channel.h"
#include "xproc/sys/file.h"

namespace xproc::bench {
namespace {

constexpr std::uint32_t kParticipants = 32;

[[noreturn]] void fail(std::error_code error, const std::string& what) {
  throw std::system_error(error, "xproc-auto: " + what);
}

shm::SegmentOptions segment_options() {
  shm::SegmentOptions options;
  options.participant_capacity = kParticipants;
  return options;
}

bulk::BulkChannelConfig config_for(const BulkShape& shape) {
  bulk::BulkChannelConfig config;
  config.max_payload = shape.payload;
  const std::size_t ahead = std::clamp<std::size_t>((std::size_t{16} << 20) / shape.payload, 2, 16);
  config.pool_buffers =
      static_cast<std::uint32_t>(ahead) + static_cast<std::uint32_t>(shape.consumers);
  if (const char* pull_min = std::getenv("XPROC_BENCH_AUTO_PULL_MIN")) {
    config.pull_min = std::max<std::uint64_t>(1, std::strtoull(pull_min, nullptr, 10));
  }
  return config;
}

class AutoLink final : public BulkLink {
 public:
  explicit AutoLink(const BulkShape& shape)
      : shape_(shape), pool_buffers_(config_for(shape).pool_buffers) {
    Result<bulk::BulkChannel> created =
        bulk::BulkChannel::create_anonymous(config_for(shape), segment_options());
    if (!created) fail(created.error(), "create_anonymous");
    channel_ = std::move(*created);
  }
  int warmup_messages() const override { return static_cast<int>(pool_buffers_) + 2; }
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int) override;

  bulk::BulkChannel adopt() const {
    Result<sys::FileDescriptor> fd = sys::reopen(channel_.segment().fd());
    if (!fd) fail(fd.error(), "reopen of the segment descriptor");
    bulk::BulkProcessOptions process;
    process.allow_any_reader = true;  // sibling consumers under Yama ptrace_scope 1
    if (const char* window = std::getenv("XPROC_BENCH_AUTO_STREAM_WINDOW")) {
      process.stream_window = static_cast<std::uint32_t>(std::strtoul(window, nullptr, 10));
    }
    if (const char* ring_min = std::getenv("XPROC_BENCH_AUTO_RING_MIN")) {
      process.stream_ring_min = std::strtoull(ring_min, nullptr, 10);
    }
    Result<bulk::BulkChannel> adopted =
        bulk::BulkChannel::adopt(std::move(*fd), segment_options(), process);
    if (!adopted) fail(adopted.error(), "adopt");
    return std::move(*adopted);
  }

  BulkShape shape_;
  std::uint32_t pool_buffers_;
  bulk::BulkChannel channel_;
};

class AutoSender final : public BulkSender {
 public:
  AutoSender(bulk::BulkChannel channel, const BulkShape& shape)
      : channel_(std::move(channel)), completions_(static_cast<std::size_t>(shape.consumers) + 1) {
    prefault(channel_.segment().body());  // which pool buffer a copy gets is the pool's choice
    for (std::size_t i = 0; i < completions_.size(); ++i) buffers_.emplace_back(shape.payload);
  }
  // An application reuses a buffer as soon as its completion says it is free: a copied payload
  // (inline, pool) frees it when post returns, so the same buffer is written again and stays in
  // cache; only a pull still in flight moves the producer on to the next buffer.
  std::span<std::byte> prepare() override {
    const std::error_code done = completions_[next_].poll();
    if (done == make_error_code(xproc::errc::would_block)) {
      next_ = (next_ + 1) % completions_.size();
      if (std::error_code error = completions_[next_].wait()) fail(error, "completion");
    } else if (done) {
      fail(done, "completion");
    }
    return buffers_[next_].span();
  }
  void commit() override {
    Result<bulk::Completion> completion = channel_.post(buffers_[next_].span());
    if (!completion) fail(completion.error(), "post");
    completions_[next_] = std::move(*completion);
  }
  void flush() override {
    for (bulk::Completion& completion : completions_) {
      if (std::error_code error = completion.wait()) fail(error, "completion");
    }
  }

 private:
  bulk::BulkChannel channel_;
  std::vector<bulk::Completion> completions_;
  std::vector<PrivateBuffer> buffers_;
  std::size_t next_ = 0;
};

class AutoReceiver final : public BulkReceiver {
 public:
  AutoReceiver(bulk::BulkChannel channel, std::size_t payload)
      : channel_(std::move(channel)), buffer_(payload) {
    prefault(channel_.segment().body());
  }
  std::span<const std::byte> receive() override {
    Result<std::size_t> received = channel_.receive(buffer_.span());
    if (!received) fail(received.error(), "receive");
    return buffer_.span().first(*received);
  }
  void release() override {}

 private:
  bulk::BulkChannel channel_;
  PrivateBuffer buffer_;
};

std::unique_ptr<BulkSender> AutoLink::open_sender() {
  return std::make_unique<AutoSender>(adopt(), shape_);
}
std::unique_ptr<BulkReceiver> AutoLink::open_receiver(int) {
  return std::make_unique<AutoReceiver>(adopt(), shape_.payload);
}

class AutoTransport final : public BulkTransport {
 public:
  std::string name() const override { return "xproc-auto"; }
  std::string description() const override {
    return "bulk::BulkChannel: post private bytes, the channel picks inline / pool copy / pull by "
           "size and permission; receive into a private buffer";
  }
  std::string unsupported(const BulkShape& shape) const override {
    if (shape.payload > (std::size_t{1} << 30)) return "payload above the pool's 1 GiB limit";
    if (shape.consumers + 2 > static_cast<int>(kParticipants)) return "too many consumers";
    return {};
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<AutoLink>(shape);
  }
};

const BulkTransportRegistration auto_registration{65,
                                                  [] { return std::make_unique<AutoTransport>(); }};

}  // namespace
}  // namespace xproc::bench
