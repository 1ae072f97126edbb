// The rpc segment layout: offsets for a config, format, validation (layout.h).
#include "xproc/rpc/layout.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>

#include "xproc/channel/endpoint.h"
#include "xproc/sys/error.h"

namespace xproc::rpc::detail {

namespace {

constexpr std::uint64_t align_up(std::uint64_t value) noexcept {
  return (value + kAlign - 1) & ~std::uint64_t{kAlign - 1};
}

channel::ChannelConfig request_channel(const ServerConfig& config) noexcept {
  channel::ChannelConfig channel;
  channel.capacity_bytes = config.request_capacity;
  channel.max_message = config.max_request_body + static_cast<std::uint32_t>(sizeof(RequestFrame));
  return channel;
}

channel::ChannelConfig response_channel(const ServerConfig& config) noexcept {
  channel::ChannelConfig channel;
  channel.capacity_bytes = config.response_capacity;
  channel.max_message =
      config.max_response_body + static_cast<std::uint32_t>(sizeof(ResponseFrame));
  return channel;
}

}  // namespace

bool bulk_config_valid(const ServerConfig& config) noexcept {
  if (config.bulk_threshold == 0) return config.max_bulk_body == 0;
  constexpr std::uint32_t kDescriptorSize = 32;  // sizeof(bulk::TransferDescriptor)
  return config.bulk_threshold >= kDescriptorSize &&
         config.bulk_threshold <= std::min(config.max_request_body, config.max_response_body) &&
         config.max_bulk_body >= std::max(config.max_request_body, config.max_response_body) &&
         config.max_bulk_body <= kMaxBulkBody;
}

Layout layout_for(const ServerConfig& config) noexcept {
  Layout layout;
  if (config.max_clients == 0 || config.max_clients > kMaxClients) return layout;
  // Bodies up to 1 GiB: the frame header added to them cannot overflow 32 bits.
  if (config.max_request_body > (1u << 30) || config.max_response_body > (1u << 30)) return layout;
  if (!bulk_config_valid(config)) return layout;
  const std::size_t request = channel::region_size_for(request_channel(config));
  const std::size_t response = channel::region_size_for(response_channel(config));
  if (request == 0 || response == 0) return layout;  // the channel layer's range checks
  layout.slots_offset = align_up(sizeof(ServerHeader));
  layout.request_offset =
      align_up(layout.slots_offset + std::uint64_t{config.max_clients} * sizeof(ClientSlot));
  layout.request_size = request;
  layout.response_offset = align_up(layout.request_offset + request);
  layout.response_size = response;
  layout.response_stride = align_up(response);
  layout.body_size = layout.response_offset + layout.response_stride * config.max_clients;
  layout.valid = true;
  return layout;
}

std::error_code format(std::span<std::byte> body, const ServerConfig& config) {
  const Layout layout = layout_for(config);
  if (!layout.valid || body.size() < layout.body_size) return errc::invalid_argument;
  if (reinterpret_cast<std::uintptr_t>(body.data()) % kAlign != 0) return errc::invalid_argument;
  if (std::error_code error = channel::format(
          body.subspan(layout.request_offset, layout.request_size), request_channel(config))) {
    return error;
  }
  for (std::uint32_t slot = 0; slot < config.max_clients; ++slot) {
    if (std::error_code error =
            channel::format(body.subspan(layout.response_offset + slot * layout.response_stride,
                                         layout.response_size),
                            response_channel(config))) {
      return error;
    }
    new (body.data() + layout.slots_offset + slot * sizeof(ClientSlot)) ClientSlot{};
  }
  auto* header = new (body.data()) ServerHeader{};
  header->magic = kMagic;
  header->version = kLayoutVersion;
  header->max_clients = config.max_clients;
  header->request_capacity = config.request_capacity;
  header->response_capacity = config.response_capacity;
  header->max_request_body = config.max_request_body;
  header->max_response_body = config.max_response_body;
  header->bulk_threshold = config.bulk_threshold;
  header->max_bulk_body = config.max_bulk_body;
  header->slots_offset = layout.slots_offset;
  header->request_offset = layout.request_offset;
  header->request_size = layout.request_size;
  header->response_offset = layout.response_offset;
  header->response_stride = layout.response_stride;
  header->response_size = layout.response_size;
  header->body_size = layout.body_size;
  // Publication to other processes is the segment's (its ready flag, release, comes after this
  // function returns), so relaxed stores suffice here.
  header->server.store(0, std::memory_order_relaxed);
  header->server_epoch.store(0, std::memory_order_relaxed);
  header->bulk_server.store(0, std::memory_order_relaxed);
  return {};
}

std::error_code validate(std::span<const std::byte> body, ServerConfig& config) {
  if (body.size() < sizeof(ServerHeader)) return errc::corrupt_segment;
  // The header's plain fields never change after publication; copy them out once so that a
  // peer scribbling on them cannot make a check and a use disagree.
  ServerHeader header;
  std::memcpy(static_cast<void*>(&header), body.data(), offsetof(ServerHeader, server));
  std::memcpy(&header.max_bulk_body, body.data() + offsetof(ServerHeader, max_bulk_body),
              sizeof header.max_bulk_body);
  if (header.magic != kMagic) return errc::layout_mismatch;
  if (header.version != kLayoutVersion) return errc::layout_mismatch;
  ServerConfig found;
  found.max_clients = header.max_clients;
  found.request_capacity = header.request_capacity;
  found.response_capacity = header.response_capacity;
  found.max_request_body = header.max_request_body;
  found.max_response_body = header.max_response_body;
  found.bulk_threshold = header.bulk_threshold;
  found.max_bulk_body = header.max_bulk_body;
  const Layout layout = layout_for(found);
  if (!layout.valid) return errc::corrupt_segment;
  if (header.slots_offset != layout.slots_offset ||
      header.request_offset != layout.request_offset ||
      header.request_size != layout.request_size ||
      header.response_offset != layout.response_offset ||
      header.response_stride != layout.response_stride ||
      header.response_size != layout.response_size || header.body_size != layout.body_size ||
      layout.body_size > body.size()) {
    return errc::corrupt_segment;
  }
  config = found;
  return {};
}

}  // namespace xproc::rpc::detail
