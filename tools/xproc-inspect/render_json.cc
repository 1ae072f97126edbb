// xproc-inspect --json (render.h). Field names: docs/tools/xproc-inspect.md (stable: add fields,
// never rename or remove them).
#include <chrono>
#include <cstdint>

#include "json_writer.h"
#include "render.h"
#include "xproc/channel/layout.h"

namespace xproc::inspect {
namespace {

void write_id(JsonWriter& json, sync::ParticipantId id) {
  json.field("slot", id.slot);
  json.field("generation", id.generation);
  json.field("id", id.pack());
}

void write_channel(JsonWriter& json, const ChannelView& c) {
  json.key("channel");
  json.begin_object();
  json.field("ok", !c.error);
  if (c.error) {
    json.field("error", error_name(c.error));
    json.field("message", c.error.message());
    json.end_object();
    return;
  }
  const channel::Statistics& s = c.statistics;
  json.field("capacity", c.capacity);
  json.field("max_message", c.max_message);
  json.field("spsc", (c.flags & channel::detail::kFlagSpsc) != 0);
  json.field("redelivery", (c.flags & channel::detail::kFlagRedelivery) != 0);
  json.field("depth_messages", s.depth_messages);
  json.field("depth_bytes", s.depth_bytes);
  json.field("claimed_bytes", s.claimed_bytes);
  json.field("senders_waiting", s.senders_waiting);
  json.field("receivers_waiting", s.receivers_waiting);
  json.field("reserved_total", s.reserved_total);
  json.field("claimed_total", s.claimed_total);
  json.field("abandoned", s.abandoned);
  json.field("producer_died", s.producer_died);
  json.field("consumer_died", s.consumer_died);
  json.field("redelivered", s.redelivered);
  json.field("lock_takeovers", s.lock_takeovers);
  json.key("locks");
  json.begin_array();
  for (const LockOwner& owner : c.locks) {
    json.begin_object();
    json.field("lock", owner.lock);
    json.field("state", lock_state_name(owner.state));
    json.field("word", owner.word);
    if (owner.state == LockOwner::State::alive || owner.state == LockOwner::State::dead) {
      json.key("owner");
      json.begin_object();
      write_id(json, sync::ParticipantId::unpack(owner.word));
      json.field("alive", owner.state == LockOwner::State::alive);
      json.end_object();
    }
    json.end_object();
  }
  json.end_array();
  if (c.roles_tracked) {
    json.key("roles");
    json.begin_object();
    for (const auto& [role, count] :
         {std::pair{"producers", c.producers}, std::pair{"consumers", c.consumers}}) {
      json.key(role);
      json.begin_object();
      json.field("alive", count.alive);
      json.field("dead", count.dead);
      json.end_object();
    }
    json.end_object();
  }
  json.end_object();
}

void write_entry(JsonWriter& json, const SegmentEntry& entry) {
  json.begin_object();
  json.field("name", entry.name);
  json.field("ok", !entry.error);
  if (entry.error) {
    json.field("error", error_name(entry.error));
    json.field("message", entry.error.message());
    json.end_object();
    return;
  }
  const shm::SegmentReport& report = entry.view.report;
  const shm::SegmentInfo& info = report.info;
  json.field("kind", kind_name(info.kind));
  json.field("layout_version", info.layout_version);
  json.key("flags");
  json.begin_array();
  if ((info.flags & shm::kFlagUnlinkWhenLastDetaches) != 0) json.value("unlink_when_last_detaches");
  if ((info.flags & shm::kFlagAnonymous) != 0) json.value("anonymous");
  json.end_array();
  json.field("total_size", std::uint64_t{info.total_size});
  json.field("body_offset", std::uint64_t{info.body_offset});
  json.field("body_size", std::uint64_t{info.body_size});
  json.field("participant_capacity", info.participant_capacity);
  json.key("creator");
  json.begin_object();
  json.field("uid", std::uint64_t{info.creator_uid});
  json.field("pid", std::int64_t{info.creator_pid});
  write_id(json, info.creator);
  json.key("alive");
  if (entry.creator_alive) {
    json.value(*entry.creator_alive);
  } else {
    json.null();
  }
  json.end_object();
  json.field("created_at", format_time(info.created_at));
  json.field("created_at_ns", std::int64_t{std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               info.created_at.time_since_epoch())
                                               .count()});
  json.field("stale", entry.view.stale);
  json.key("lock_bytes");
  json.begin_object();
  json.field("gc", entry.view.locks.gc_held ? "held" : "free");
  json.field("init", entry.view.locks.init_held ? "held" : "free");
  json.end_object();
  std::uint64_t alive = 0;
  json.key("participants");
  json.begin_array();
  for (const shm::ParticipantState& p : report.participants) {
    json.begin_object();
    write_id(json, p.id);
    json.field("alive", p.alive);
    json.end_object();
    alive += p.alive ? 1 : 0;
  }
  json.end_array();
  json.field("live_participants", alive);
  json.field("dead_participants", std::uint64_t{report.participants.size()} - alive);
  if (entry.channel) write_channel(json, *entry.channel);
  json.end_object();
}

}  // namespace

void render_list_json(const std::vector<SegmentEntry>& entries, std::string& out) {
  JsonWriter json(out);
  json.begin_object();
  json.field("version", 1);
  json.key("segments");
  json.begin_array();
  for (const SegmentEntry& entry : entries) write_entry(json, entry);
  json.end_array();
  json.end_object();
  out += '\n';
}

void render_detail_json(const SegmentEntry& entry, std::string& out) {
  JsonWriter json(out);
  write_entry(json, entry);
  out += '\n';
}

void render_gc_json(const std::vector<GcOutcome>& outcomes, bool dry_run, std::string& out) {
  JsonWriter json(out);
  json.begin_object();
  json.field("version", 1);
  json.field("dry_run", dry_run);
  json.key("removed");
  json.begin_array();
  for (const GcOutcome& outcome : outcomes) {
    if (!outcome.removed) continue;
    json.begin_object();
    json.field("name", outcome.name);
    json.field("reason", outcome.reason);
    json.end_object();
  }
  json.end_array();
  json.key("kept");
  json.begin_array();
  for (const GcOutcome& outcome : outcomes) {
    if (outcome.removed) continue;
    json.begin_object();
    json.field("name", outcome.name);
    json.field("reason", outcome.reason);
    json.end_object();
  }
  json.end_array();
  json.end_object();
  out += '\n';
}

}  // namespace xproc::inspect
