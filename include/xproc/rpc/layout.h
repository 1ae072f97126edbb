#pragma once
// The wire format of an rpc server segment (a shm::Segment of kind rpc) and of the frames that
// travel in its channels (docs/layout/rpc.md draws it; docs/decisions/0050-rpc.md says why).
//
// Segment body (every offset 64-byte aligned, every size fixed by the header's config):
//   +0                 ServerHeader (128 bytes): magic, version, config, offsets, the server word
//   +slots_offset      ClientSlot[max_clients] (64 bytes each): owner word, generation word
//   +request_offset    the request channel (channel::format; clients send, server workers receive)
//   +response_offset   max_clients response channels, response_stride bytes apart (the server
//                      sends, the slot's owner receives)
// Frames: every channel message is a frame header followed by body_length body bytes; the
// message length must equal header + body_length. Both directions are untrusted input: a frame
// that fails a check is dropped and counted (Server/Client statistics), never delivered.
//
// Thread- and process-safety: plain layout types; the protocol that reads and writes them is in
// src/rpc/server.cc and src/rpc/client.cc (numbered steps in docs/decisions/0050-rpc.md).
// Nothing here blocks. validate_layout() returns errc::layout_mismatch (magic, version) or
// errc::corrupt_segment (sizes and offsets no correct creator writes). Deaths, fork(): server.h,
// client.h.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <type_traits>

namespace xproc::rpc {

// What an rpc server segment holds; the creator chooses it, openers read it from the header.
struct ServerConfig {
  std::uint32_t max_clients = 16;               // client slots (1..kMaxClients)
  std::uint32_t request_capacity = 1u << 18;    // request ring bytes (power of two)
  std::uint32_t response_capacity = 1u << 16;   // each response ring's bytes (power of two)
  std::uint32_t max_request_body = 16u << 10;   // largest request body (bytes)
  std::uint32_t max_response_body = 16u << 10;  // largest response body (bytes)
  // Bulk bodies (decision 0055): a request or response body above bulk_threshold bytes is not
  // copied through the ring; its sender registers it in the transfer table of the companion
  // segment "<name>.bulk" and the frame carries the TransferDescriptor; the receiver pulls it
  // with process_vm_readv. 0 = off (no companion segment; max_bulk_body must be 0 too). On:
  // sizeof(TransferDescriptor) (32) <= bulk_threshold <= min(max_request_body,
  // max_response_body), and max(max_request_body, max_response_body) <= max_bulk_body <=
  // kMaxBulkBody: a body up to the threshold goes inline, above it up to max_bulk_body in bulk.
  std::uint32_t bulk_threshold = 0;
  std::uint32_t max_bulk_body = 0;  // largest body of either direction when bulk is on
};

// The largest max_bulk_body (1 GiB).
inline constexpr std::uint32_t kMaxBulkBody = 1u << 30;

namespace detail {

inline constexpr std::uint32_t kMagic = 0x43525058;  // "XPRC" in memory order
inline constexpr std::uint32_t kLayoutVersion = 2;
inline constexpr std::uint32_t kMaxClients = 1024;
inline constexpr std::size_t kAlign = 64;

// The server header at body offset 0. Written once by the creator before the segment is
// published, except `server` and `server_epoch`.
struct ServerHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t max_clients;
  std::uint32_t request_capacity;
  std::uint32_t response_capacity;
  std::uint32_t max_request_body;
  std::uint32_t max_response_body;
  std::uint32_t bulk_threshold;  // 0: bulk off

  std::uint64_t slots_offset;
  std::uint64_t request_offset;
  std::uint64_t request_size;
  std::uint64_t response_offset;
  std::uint64_t response_stride;  // bytes between two response channels (>= channel size)
  std::uint64_t response_size;
  std::uint64_t body_size;  // the whole body: response_offset + max_clients * stride
  // The serving process: its packed sync::ParticipantId, 0 while no server is attached (after a
  // clean shutdown, or before the first takeover). Changed only by CAS: 0 or a dead id -> the
  // new server's id (Server::create), its own id -> 0 (Server destructor).
  std::atomic<std::uint32_t> server;
  // Bumped by every server that takes the segment over: a client compares it to tell a
  // restarted server from the one its in-flight calls went to.
  std::atomic<std::uint32_t> server_epoch;
  std::uint32_t max_bulk_body;  // written once, like the fields above `server`
  // The serving process's packed ParticipantId in the companion bulk segment (0: none yet, or
  // bulk off). Stored (release) by each server after its takeover CAS; clients read it only to
  // probe their permission to pull from the server at connect (a hint: a wrong value costs a
  // refused pull, which falls back anyway).
  std::atomic<std::uint32_t> bulk_server;
  std::uint8_t reserved1[24];
};
static_assert(std::is_standard_layout_v<ServerHeader>);
static_assert(sizeof(ServerHeader) == 128);
static_assert(offsetof(ServerHeader, max_bulk_body) == 96);

// One client slot. owner: packed ParticipantId of the claiming client, 0 = free. generation:
// bumped by each claim (never 0 once claimed); requests carry it, responses echo it, so a
// response meant for a slot's previous owner is recognized and dropped.
//   claim (client): 1) CAS owner 0-or-dead -> self; 2) generation += 1 (skipping 0);
//     3) drain the response channel (stale responses of the previous owner).
//   free: the owner (Client destructor) or anybody who finds the owner dead (server sweep,
//     next claimer): CAS owner id -> 0.
struct ClientSlot {
  std::atomic<std::uint32_t> owner;
  std::atomic<std::uint32_t> generation;
  // Bulk on: the owner's packed ParticipantId in the companion segment "<name>.bulk", stored by
  // the claimer after step 2 and before its first request (0 when bulk is off). The server
  // accepts a bulk request's descriptor only when it names this owner, so a frame cannot make
  // the server pull (and so claim) another member's transfer.
  std::atomic<std::uint32_t> bulk_owner;
  std::uint8_t reserved[52];
};
static_assert(std::is_standard_layout_v<ClientSlot>);
static_assert(sizeof(ClientSlot) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Frame headers, copied out of a message with memcpy (no alignment assumed).
inline constexpr std::uint16_t kFrameVersion = 1;
// Request flags; any other bit is rejected (bad_flags).
// kFlagCancel: not a request but the notice that the client cancelled call `correlation` (no
// body, method 0). The server marks that request's Responder cancelled if it is still being
// handled (ServerOptions::track_cancellation), and otherwise ignores it (counted).
inline constexpr std::uint16_t kFlagCancel = 1;
// kFlagBulk: the body is a TransferDescriptor (exactly 32 bytes) naming the request body in
// the client's memory (bulk_threshold < total_length <= max_bulk_body); the server pulls it
// before the handler runs. Only when the config has bulk on (else bad_flags).
inline constexpr std::uint16_t kFlagBulk = 2;
// kFlagInlineResponse: this client may not pull from the server (its probe or a pull was
// refused): the server sends the response inline, or an error frame if it does not fit.
inline constexpr std::uint16_t kFlagInlineResponse = 4;
inline constexpr std::uint16_t kKnownRequestFlags = kFlagCancel | kFlagBulk | kFlagInlineResponse;

// Response flags; any other bit is rejected (malformed_responses). At most one is set.
// kResponseBulk: the body is a TransferDescriptor (32 bytes) naming the response body in the
// server's memory; the client pulls it (the server's respond() waits for that).
inline constexpr std::uint16_t kResponseBulk = 1;
// kResponseError: no body; `status` is an xproc::errc value the call completes with:
// permission_denied (the server may not pull this client's bulk body: the client resends it
// inline when it fits), bad_descriptor (a bulk frame the server rejected: wrong size, forged
// descriptor, withdrawn transfer), message_too_large (a bulk length above max_bulk_body, or a
// response that fits neither inline nor bulk).
inline constexpr std::uint16_t kResponseError = 2;

struct RequestFrame {
  std::uint16_t version;      // kFrameVersion
  std::uint16_t flags;        // kKnownRequestFlags
  std::uint32_t client_slot;  // < max_clients
  std::uint32_t generation;   // the slot's generation when the client claimed it
  std::uint32_t method;       // the application's method id
  std::uint64_t correlation;  // the client's id for this call (nonzero)
  std::uint32_t body_length;  // bytes after the header
  std::uint32_t reserved;     // 0
};
static_assert(std::is_standard_layout_v<RequestFrame>);
static_assert(sizeof(RequestFrame) == 32);

struct ResponseFrame {
  std::uint16_t version;      // kFrameVersion
  std::uint16_t flags;        // 0, kResponseBulk or kResponseError
  std::uint32_t status;       // the application's status; kStatus* below are the library's
  std::uint64_t correlation;  // the request's correlation id
  std::uint32_t generation;   // the request's slot generation
  std::uint32_t body_length;  // bytes after the header
};
static_assert(std::is_standard_layout_v<ResponseFrame>);
static_assert(sizeof(ResponseFrame) == 24);

// Every offset and size of a segment for `config`; valid false for a config out of range.
struct Layout {
  bool valid = false;
  std::uint64_t slots_offset = 0;
  std::uint64_t request_offset = 0;
  std::uint64_t request_size = 0;
  std::uint64_t response_offset = 0;
  std::uint64_t response_stride = 0;
  std::uint64_t response_size = 0;
  std::uint64_t body_size = 0;
};
Layout layout_for(const ServerConfig& config) noexcept;

// Formats a zero-filled body of layout_for(config).body_size bytes: header, slots, channels.
[[nodiscard]] std::error_code format(std::span<std::byte> body, const ServerConfig& config);

// Whether a config's bulk fields are in range (see ServerConfig); layout_for() checks it too.
bool bulk_config_valid(const ServerConfig& config) noexcept;

// The companion segment of an rpc segment named `name`: "<name>.bulk".
inline constexpr const char* kBulkSuffix = ".bulk";

// Checks the header of an opened body against itself and the body's size and recomputes the
// config it describes. {} or errc::layout_mismatch / corrupt_segment.
[[nodiscard]] std::error_code validate(std::span<const std::byte> body, ServerConfig& config);

}  // namespace detail

// Library-defined response statuses (the top of the range; applications use the rest).
inline constexpr std::uint32_t kStatusAbandoned = 0xffffffffu;  // the handler dropped its
                                                                // Responder without responding
inline constexpr std::uint32_t kStatusFirstReserved = 0xffffff00u;

}  // namespace xproc::rpc
