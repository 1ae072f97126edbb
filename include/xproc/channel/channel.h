#pragma once
// xproc::channel::Channel: a channel placed in a shared-memory segment of kind `channel`
// (shm::Segment), found by name or passed as a file descriptor. The segment's embedded
// participant table is the channel's process registry: every process that creates, opens or
// adopts the channel is attached to it, so waits on peers are bounded by their liveness.
//
// The channel's role table gets one entry per participant slot (ChannelConfig::role_slots is set
// from SegmentOptions::participant_capacity), so a Channel's blocked calls end with
// errc::peer_dead when the other side is gone (endpoint.h, Deaths).
//
// A Channel owns its Segment (heap-allocated, so the Participant the Endpoint refers to keeps
// its address when the Channel moves) and an Endpoint on it; every operation is the Endpoint's
// (endpoint.h: semantics, thread- and process-safety, blocking, deaths).
// Failures: create: the segment's errors (already_exists, invalid_argument for a bad name or
// config, OS errors); open/adopt: the segment's errors (not_found, wrong_kind, layout_mismatch,
// corrupt_segment, permission_denied...), then the channel layout's (layout_mismatch,
// corrupt_segment).
// fork(): the child's copy is detached (the segment's rule): open or adopt the channel again.

#include <memory>
#include <string_view>

#include "xproc/channel/endpoint.h"
#include "xproc/shm/segment.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::channel {

class Channel {
 public:
  // Creates the named segment /dev/shm/xproc.<name> of kind channel; format() runs before the
  // segment is published, so an opener never sees a half-formatted channel.
  static Result<Channel> create(std::string_view name, const ChannelConfig& config,
                                const shm::SegmentOptions& options = {});
  static Result<Channel> open(std::string_view name, const shm::SegmentOptions& options = {});
  // A memfd channel; pass segment().fd() to a peer (shm/segment_transfer.h), who adopts it.
  static Result<Channel> create_anonymous(const ChannelConfig& config,
                                          const shm::SegmentOptions& options = {});
  static Result<Channel> adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options = {});

  Channel() noexcept = default;

  const Endpoint& endpoint() const noexcept { return endpoint_; }
  const Endpoint* operator->() const noexcept { return &endpoint_; }
  // How this process's blocking calls on the channel wait (endpoint.h, WaitPolicy).
  void set_wait_policy(const WaitPolicy& policy) noexcept { endpoint_.set_wait_policy(policy); }
  shm::Segment& segment() const noexcept { return *segment_; }
  bool valid() const noexcept { return segment_ != nullptr; }

 private:
  static Result<Channel> wrap(Result<shm::Segment> segment);

  std::unique_ptr<shm::Segment> segment_;
  Endpoint endpoint_;
};

}  // namespace xproc::channel
