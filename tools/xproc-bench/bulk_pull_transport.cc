// Bulk row "xproc-pull": cross-memory transfers with completion (include/xproc/bulk/transfer.h),
// one copy. The producer writes the payload into one of B private buffers, registers it
// (register_source) and sends the 32-byte descriptor through an xproc Channel; a consumer
// receives the descriptor and pull()s the payload into its own private buffer (process_vm_readv
// inside, validated, completed). Before the producer rewrites a buffer it waits on that buffer's
// Transfer handle (completion). B = 2 x consumers buffers: the memory the process_vm_readv row
// rotates (two per consumer), so the rows differ in the path only (with consumers + 1, the
// 1 -> 2 shape had three buffers against that row's four). Any number of consumers (the
// descriptor channel is MPMC: each transfer claimed exactly once).
//
// Row "xproc-pull-split": the same, but the consumer pulls with a PullSplit of two threads
// (shares of 4 MiB and more, so payloads below 8 MiB stay one share), and it widens its CPU
// affinity to every CPU the bench process had (the runner pins it to one): the helper thread
// inherits that affinity and can only help on a CPU the producer leaves idle while it waits.
//
// Set-up: the parent creates a memfd segment holding the transfer table and an anonymous
// channel in create_link(); each child adopts both through new open file descriptions and opens
// its own TransferEndpoint (allow_any_reader: sibling processes under Yama ptrace_scope 1).
#include <sched.h>

#include <algorithm>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "bulk_transport.h"
#include "xproc/bulk/transfer.h"
#include "xproc/channel/channel.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/file.h"

namespace xproc::bench {
namespace {

constexpr bulk::PullSplit kSplit{2, std::size_t{4} << 20};

constexpr std::uint32_t kParticipants = 32;
constexpr std::uint32_t kSlots = 64;

[[noreturn]] void fail(std::error_code error, const std::string& what) {
  throw std::system_error(error, "xproc-pull: " + what);
}

shm::SegmentOptions segment_options() {
  shm::SegmentOptions options;
  options.participant_capacity = kParticipants;
  return options;
}

bulk::TransferEndpoint open_endpoint(const shm::Segment& segment) {
  bulk::TransferEndpointOptions options;
  options.allow_any_reader = true;
  Result<bulk::TransferEndpoint> endpoint = bulk::TransferEndpoint::open(segment, options);
  if (!endpoint) fail(endpoint.error(), "TransferEndpoint::open");
  return std::move(*endpoint);
}

class PullLink final : public BulkLink {
 public:
  PullLink(const BulkShape& shape, bool split)
      : payload_(shape.payload),
        buffers_(2 * static_cast<std::uint32_t>(shape.consumers)),
        split_(split) {
    if (sched_getaffinity(0, sizeof cpus_, &cpus_) != 0) CPU_ZERO(&cpus_);
    bulk::TransferTableOptions table{kSlots};
    Result<shm::Segment> segment = shm::Segment::create_anonymous(
        shm::SegmentKind::raw, bulk::transfer_table_size(table, kParticipants), segment_options(),
        bulk::transfer_table_init(table, kParticipants));
    if (!segment) fail(segment.error(), "transfer table segment");
    segment_ = std::move(*segment);
    channel::ChannelConfig config;
    config.capacity_bytes = 4096;
    config.max_message = sizeof(bulk::TransferDescriptor);
    Result<channel::Channel> created =
        channel::Channel::create_anonymous(config, segment_options());
    if (!created) fail(created.error(), "descriptor channel");
    channel_ = std::move(*created);
  }
  int warmup_messages() const override { return static_cast<int>(buffers_); }
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int) override;

  shm::Segment join_segment() const {
    Result<sys::FileDescriptor> fd = sys::reopen(segment_.fd());
    if (!fd) fail(fd.error(), "reopen of the table segment");
    Result<shm::Segment> mine =
        shm::Segment::adopt(std::move(*fd), shm::SegmentKind::raw, segment_options());
    if (!mine) fail(mine.error(), "adopt of the table segment");
    return std::move(*mine);
  }
  channel::Channel join_channel() const {
    Result<sys::FileDescriptor> fd = sys::reopen(channel_.segment().fd());
    if (!fd) fail(fd.error(), "reopen of the channel segment");
    Result<channel::Channel> mine = channel::Channel::adopt(std::move(*fd), segment_options());
    if (!mine) fail(mine.error(), "adopt of the channel");
    return std::move(*mine);
  }

  std::size_t payload_;
  std::uint32_t buffers_;
  bool split_;
  cpu_set_t cpus_;  // the bench process's CPUs, before the runner pins each child
  shm::Segment segment_;
  channel::Channel channel_;
};

// Members in destruction order: transfers (they wait or withdraw) before the endpoint, the
// endpoint before its segment.
class PullSender final : public BulkSender {
 public:
  explicit PullSender(const PullLink& link)
      : segment_(std::make_unique<shm::Segment>(link.join_segment())),
        channel_(link.join_channel()),
        endpoint_(open_endpoint(*segment_)) {
    for (std::uint32_t i = 0; i < link.buffers_; ++i) buffers_.emplace_back(link.payload_);
    transfers_.resize(link.buffers_);
  }
  ~PullSender() override { transfers_.clear(); }

  std::span<std::byte> prepare() override {
    bulk::Transfer& previous = transfers_[next_];
    if (previous.valid()) {
      if (std::error_code error = previous.wait()) fail(error, "wait for completion");
      previous = bulk::Transfer();
    }
    return buffers_[next_].span();
  }
  void commit() override {
    Result<bulk::Transfer> transfer = endpoint_.register_source(
        std::span<const std::byte>(buffers_[next_].data(), buffers_[next_].size()));
    if (!transfer) fail(transfer.error(), "register_source");
    const bulk::TransferDescriptor descriptor = transfer->descriptor();
    transfers_[next_] = std::move(*transfer);
    if (std::error_code error = channel_->send(std::as_bytes(std::span(&descriptor, 1))))
      fail(error, "send of the descriptor");
    next_ = (next_ + 1) % buffers_.size();
  }
  void flush() override {
    for (bulk::Transfer& transfer : transfers_) {
      if (!transfer.valid()) continue;
      if (std::error_code error = transfer.wait()) fail(error, "wait for completion");
      transfer = bulk::Transfer();
    }
  }

 private:
  std::unique_ptr<shm::Segment> segment_;
  channel::Channel channel_;
  bulk::TransferEndpoint endpoint_;
  std::vector<PrivateBuffer> buffers_;
  std::vector<bulk::Transfer> transfers_;
  std::size_t next_ = 0;
};

class PullReceiver final : public BulkReceiver {
 public:
  explicit PullReceiver(const PullLink& link)
      : segment_(std::make_unique<shm::Segment>(link.join_segment())),
        channel_(link.join_channel()),
        endpoint_(open_endpoint(*segment_)),
        buffer_(link.payload_),
        split_(link.split_) {
    // Best effort: a consumer left pinned still pulls correctly, its helper just shares its CPU.
    if (split_ && CPU_COUNT(&link.cpus_) > 0)
      (void)sched_setaffinity(0, sizeof link.cpus_, &link.cpus_);
  }
  std::span<const std::byte> receive() override {
    bulk::TransferDescriptor descriptor;
    Result<std::size_t> got = channel_->receive(std::as_writable_bytes(std::span(&descriptor, 1)));
    if (!got) fail(got.error(), "receive of a descriptor");
    if (*got != sizeof descriptor) throw std::runtime_error("xproc-pull: short descriptor");
    Result<std::size_t> pulled = split_ ? endpoint_.pull(descriptor, buffer_.span(), kSplit)
                                        : endpoint_.pull(descriptor, buffer_.span());
    if (!pulled) fail(pulled.error(), "pull");
    return {buffer_.data(), *pulled};
  }
  void release() override {}

 private:
  std::unique_ptr<shm::Segment> segment_;
  channel::Channel channel_;
  bulk::TransferEndpoint endpoint_;
  PrivateBuffer buffer_;
  bool split_;
};

std::unique_ptr<BulkSender> PullLink::open_sender() {
  return std::make_unique<PullSender>(*this);
}
std::unique_ptr<BulkReceiver> PullLink::open_receiver(int) {
  return std::make_unique<PullReceiver>(*this);
}

class PullTransport final : public BulkTransport {
 public:
  explicit PullTransport(bool split) : split_(split) {}
  std::string name() const override { return split_ ? "xproc-pull-split" : "xproc-pull"; }
  std::string description() const override {
    return split_ ? "as xproc-pull, the consumer's pull split in 2 threads (4 MiB shares and up), "
                    "consumer unpinned"
                  : "bulk::TransferEndpoint: register, send the descriptor, consumer pull()s (1 "
                    "copy), completion";
  }
  std::string unsupported(const BulkShape& shape) const override {
    if (shape.consumers + 2 > static_cast<int>(kParticipants)) return "too many consumers";
    return {};
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<PullLink>(shape, split_);
  }

 private:
  bool split_;
};

const BulkTransportRegistration pull_registration{
    70, [] { return std::make_unique<PullTransport>(false); }};
const BulkTransportRegistration pull_split_registration{
    71, [] { return std::make_unique<PullTransport>(true); }};

}  // namespace
}  // namespace xproc::bench
