// SPDX-License-Identifier: Apache-2.0
// Direct transports: QMP and QGA over a unix socket that QEMU serves itself
// (`-qmp unix:PATH,server=on` and `-chardev socket,...` behind a virtserialport).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>

#include "qmp/channel.h"
#include "qmp/stream.h"

namespace seamless::qmp {

// QMP monitor client: greeting, qmp_capabilities, replies matched by id, events
// published on events() as they are read, including while a command waits.
class QmpSocket final : public Channel, public EventSource {
 public:
  static Result<std::unique_ptr<QmpSocket>> connect(const std::string& path, Millis timeout = Millis(5000),
                                                    Limits limits = {});
  Result<Json> call(std::string_view command, std::string_view args, Millis timeout) override;
  Result<Event> wait_event(std::string_view name, Millis timeout) override;
  // Several commands in flight, answered in any order (a server that runs them
  // concurrently): send() writes a request and returns its id; pump() reads what has
  // come, keeping replies to sent requests and publishing events; reply() hands one over
  // once it is there; abandon() forgets a request whose caller gave up (its late reply is
  // dropped). call() is send() and pump until the reply is there.
  Result<int64_t> send(std::string_view command, std::string_view args, Deadline deadline);
  // Waits up to `timeout` for a message, then reads whatever else is there already.
  Result<void> pump(Millis timeout);
  std::optional<Result<Json>> reply(int64_t id);
  void abandon(int64_t id);
  std::string describe() const override { return stream_.peer(); }
  const std::string& greeting_version() const { return version_; }
  // The pid of the QEMU process at the other end (SO_PEERCRED).
  Result<pid_t> peer_pid() const;
  size_t unknown_replies() const { return unknown_replies_; }

 private:
  QmpSocket(UniqueFd fd, const std::string& path, Limits limits);
  // Handles one non-reply message; true when it was consumed (event, stale reply).
  void dispatch(Json message);

  JsonStream stream_;
  int64_t next_id_ = 1;
  std::set<int64_t> abandoned_;              // ids whose caller timed out: their late replies are dropped quietly
  std::map<int64_t, std::string> sent_;      // send()'s requests not answered yet: id -> command
  std::map<int64_t, Result<Json>> replies_;  // their replies, until reply() takes them
  size_t unknown_replies_ = 0;
  std::string version_;
};

// Guest agent client: resynchronises with guest-sync-delimited on connect and after
// any timeout or protocol error, so a late or garbled reply can never be taken for
// the answer to the next command.
class QgaSocket final : public Channel {
 public:
  static Result<std::unique_ptr<QgaSocket>> connect(const std::string& path, Millis timeout = Millis(10000),
                                                    Limits limits = {});
  Result<Json> call(std::string_view command, std::string_view args, Millis timeout) override;
  Result<void> sync(Millis timeout);
  std::string describe() const override { return stream_.peer(); }

 private:
  QgaSocket(UniqueFd fd, const std::string& path, Limits limits);
  JsonStream stream_;
  bool need_sync_ = true;
  uint32_t sync_counter_;
};

}  // namespace seamless::qmp
