// Channel: a channel in a shm::Segment of kind channel.
#include "xproc/channel/channel.h"

#include <utility>

namespace xproc::channel {

namespace {
// The role table has an entry per participant slot of the segment's table.
ChannelConfig with_roles(ChannelConfig config, const shm::SegmentOptions& options) noexcept {
  config.role_slots = options.participant_capacity;
  return config;
}
}  // namespace

Result<Channel> Channel::wrap(Result<shm::Segment> segment) {
  if (!segment) return segment.error();
  Channel channel;
  channel.segment_ = std::make_unique<shm::Segment>(std::move(*segment));
  Result<Endpoint> endpoint = Endpoint::open(channel.segment_->body(), &channel.segment_->self());
  if (!endpoint) return endpoint.error();
  channel.endpoint_ = *endpoint;
  return channel;
}

Result<Channel> Channel::create(std::string_view name, const ChannelConfig& requested,
                                const shm::SegmentOptions& options) {
  const ChannelConfig config = with_roles(requested, options);
  const std::size_t size = region_size_for(config);
  if (size == 0) return make_error_code(errc::invalid_argument);
  return wrap(
      shm::Segment::create(name, shm::SegmentKind::channel, size, options,
                           [&config](std::span<std::byte> body) { return format(body, config); }));
}

Result<Channel> Channel::open(std::string_view name, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::open(name, shm::SegmentKind::channel, options));
}

Result<Channel> Channel::create_anonymous(const ChannelConfig& requested,
                                          const shm::SegmentOptions& options) {
  const ChannelConfig config = with_roles(requested, options);
  const std::size_t size = region_size_for(config);
  if (size == 0) return make_error_code(errc::invalid_argument);
  return wrap(shm::Segment::create_anonymous(
      shm::SegmentKind::channel, size, options,
      [&config](std::span<std::byte> body) { return format(body, config); }));
}

Result<Channel> Channel::adopt(sys::FileDescriptor fd, const shm::SegmentOptions& options) {
  return wrap(shm::Segment::adopt(std::move(fd), shm::SegmentKind::channel, options));
}

}  // namespace xproc::channel
