// SPDX-License-Identifier: Apache-2.0
// Memory cgroup discovery, knobs (libcgroup and files) and the limit guard.
#include "hooks/cgroup.h"

#include <fcntl.h>
#include <libcgroup.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/sys.h"
#include "qmp/json.h"

namespace seamless::cgroup {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

bool has_word(std::string_view list, std::string_view word) {
  for (auto w : split(list, ',')) {
    if (w == word) return true;
  }
  return false;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

struct Mount {
  std::string root, point;
};

// libvirt puts QEMU's threads in leaf groups (".../emulator", ".../vcpu0") on v2 and for
// some v1 controllers; memory is accounted for the domain as a whole one level up.
std::string domain_level(std::string rel) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) return rel;
  std::string_view leaf = std::string_view(rel).substr(slash + 1);
  if (leaf == "emulator" || (leaf.size() > 4 && leaf.substr(0, 4) == "vcpu") || leaf == "iothread")
    rel.erase(slash == 0 ? 1 : slash);
  return rel;
}

std::string under_mount(const Mount& m, const std::string& rel) {
  // Inside a cgroup namespace the mount's root is a prefix of what /proc/PID/cgroup shows.
  if (m.root != "/" && rel.rfind(m.root, 0) == 0) return rel.substr(m.root.size());
  return rel;
}

}  // namespace

Result<MemoryGroup> locate(std::string_view mountinfo, std::string_view proc_cgroup) {
  std::optional<Mount> v1, v2;
  for (auto line : split(mountinfo, '\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    auto left = split(line.substr(0, dash), ' ');
    auto right = split(line.substr(dash + 3), ' ');
    if (left.size() < 5 || right.size() < 3) continue;
    Mount m{std::string(left[3]), std::string(left[4])};
    if (right[0] == "cgroup" && has_word(right[2], "memory") && !v1) v1 = m;
    if (right[0] == "cgroup2" && !v2) v2 = m;
  }
  std::optional<std::string> rel_v1, rel_v2;
  for (auto line : split(proc_cgroup, '\n')) {
    auto parts = split(line, ':');
    if (parts.size() < 3) continue;
    std::string path(line.substr(parts[0].size() + parts[1].size() + 2));
    if (parts[0] == "0" && parts[1].empty())
      rel_v2 = path;
    else if (has_word(parts[1], "memory"))
      rel_v1 = path;
  }
  if (v1 && rel_v1) return MemoryGroup{Version::V1, v1->point, domain_level(under_mount(*v1, *rel_v1))};
  if (v2 && rel_v2) return MemoryGroup{Version::V2, v2->point, domain_level(under_mount(*v2, *rel_v2))};
  if (!v1 && !v2) return make_error(ErrorKind::NotFound, "no cgroup file system is mounted");
  return make_error(ErrorKind::NotFound, "the process is in no memory cgroup (memory controller ",
                    v1 ? "mounted on v1 but not listed" : "not on any hierarchy", ")");
}

Result<MemoryGroup> for_pid(pid_t pid, const std::string& proc_root) {
  auto mountinfo = SL_TRY(sys::read_file(proc_root + "/self/mountinfo"));
  auto pc = SL_TRY_CTX(sys::read_file(cat(proc_root, "/", pid, "/cgroup")), "process ", pid);
  auto group = SL_TRY_CTX(locate(mountinfo, pc), "memory cgroup of process ", pid);
  const char* probe = group.version == Version::V1 ? "memory.limit_in_bytes" : "memory.max";
  if (!std::filesystem::exists(group.dir() + "/" + probe))
    return make_error(ErrorKind::NotFound, "memory cgroup `", group.dir(), "` of process ", pid, " has no ", probe,
                      group.version == Version::V2 ? " (memory controller not enabled for it)" : "");
  return group;
}

Result<pid_t> qemu_pid(const std::string& domain, const std::string& run_dir) {
  std::string path = run_dir + "/" + domain + ".pid";
  auto text = sys::read_file(path);
  if (!text.ok()) return std::move(text).error().wrap(cat("QEMU of domain `", domain, "` (is it running?)"));
  pid_t pid = 0;
  auto t = trim(*text);
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), pid);
  if (ec != std::errc() || end != t.data() + t.size() || pid <= 0)
    return make_error(ErrorKind::Protocol, "pid file `", path, "` holds `", t, "`");
  return pid;
}

namespace {

class FileKnobs final : public Knobs {
 public:
  explicit FileKnobs(std::string dir) : dir_(std::move(dir)) {}
  Result<std::string> read(const std::string& knob) override {
    return trim(SL_TRY_CTX(sys::read_file(dir_ + "/" + knob), "cgroup knob"));
  }
  Result<void> write(const std::string& knob, const std::string& value) override {
    auto fd = SL_TRY_CTX(sys::open(dir_ + "/" + knob, O_WRONLY | O_TRUNC), "cgroup knob");
    SL_TRY_CTX(sys::write_all(fd.get(), value, Deadline(Millis(5000))), "writing `", value, "` to `", dir_, "/", knob,
               "`");
    return ok();
  }
  bool has(const std::string& knob) override { return std::filesystem::exists(dir_ + "/" + knob); }
  std::string describe() const override { return cat("cgroup `", dir_, "`"); }

 private:
  std::string dir_;
};

Result<void> libcgroup_init() {
  static std::once_flag once;
  static int rc = 0;
  std::call_once(once, [] { rc = cgroup_init(); });
  if (rc != 0) return make_error(ErrorKind::System, "libcgroup initialisation: ", cgroup_strerror(rc));
  return ok();
}

// One libcgroup handle per call: cgroup_modify_cgroup writes every value the handle
// holds, so a write builds a handle with exactly one value in it.
class LibcgroupKnobs final : public Knobs {
 public:
  explicit LibcgroupKnobs(MemoryGroup group)
      : group_(std::move(group)), name_(group_.relative == "/" ? "/" : group_.relative.substr(1)) {}

  Result<std::string> read(const std::string& knob) override {
    Handle cg(cgroup_new_cgroup(name_.c_str()));
    if (!cg.get()) return make_error(ErrorKind::System, "libcgroup: cannot allocate a handle");
    if (int rc = cgroup_get_cgroup(cg.get()); rc != 0)
      return make_error(ErrorKind::System, "reading ", describe(), ": ", cgroup_strerror(rc));
    ::cgroup_controller* ctrl = cgroup_get_controller(cg.get(), "memory");
    if (!ctrl) return make_error(ErrorKind::NotFound, describe(), " has no memory controller");
    char* value = nullptr;
    if (int rc = cgroup_get_value_string(ctrl, knob.c_str(), &value); rc != 0 || value == nullptr)
      return make_error(ErrorKind::NotFound, "reading `", knob, "` of ", describe(), ": ", cgroup_strerror(rc));
    std::string out = trim(value);
    std::free(value);
    return out;
  }

  Result<void> write(const std::string& knob, const std::string& value) override {
    Handle cg(cgroup_new_cgroup(name_.c_str()));
    if (!cg.get()) return make_error(ErrorKind::System, "libcgroup: cannot allocate a handle");
    ::cgroup_controller* ctrl = cgroup_add_controller(cg.get(), "memory");
    if (!ctrl || cgroup_add_value_string(ctrl, knob.c_str(), value.c_str()) != 0)
      return make_error(ErrorKind::System, "libcgroup: cannot stage `", knob, "`");
    if (int rc = cgroup_modify_cgroup(cg.get()); rc != 0) {
      int err = rc == ECGOTHER ? cgroup_get_last_errno() : 0;
      Error e = make_error(ErrorKind::System, "writing `", value, "` to `", knob, "` of ", describe(), ": ",
                           cgroup_strerror(rc));
      e.code = err;
      return e;
    }
    return ok();
  }

  bool has(const std::string& knob) override { return std::filesystem::exists(group_.dir() + "/" + knob); }
  std::string describe() const override { return cat("cgroup `", group_.dir(), "`"); }

 private:
  struct Handle {
    explicit Handle(::cgroup* c) : c_(c) {}
    ~Handle() {
      if (c_) cgroup_free(&c_);
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ::cgroup* get() const { return c_; }
    ::cgroup* c_;
  };
  MemoryGroup group_;
  std::string name_;
};

Result<int64_t> to_int(std::string_view text, std::string_view what) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    return make_error(ErrorKind::Protocol, what, " is `", text, "`, not a number");
  return v;
}

}  // namespace

std::unique_ptr<Knobs> file_knobs(const MemoryGroup& group) { return std::make_unique<FileKnobs>(group.dir()); }

Result<std::unique_ptr<Knobs>> libcgroup_knobs(const MemoryGroup& group) {
  SL_TRY(libcgroup_init());
  return std::unique_ptr<Knobs>(std::make_unique<LibcgroupKnobs>(group));
}

Result<std::optional<int64_t>> parse_limit(std::string_view text) {
  if (text == "max" || text == "-1") return std::optional<int64_t>();
  // v1 reports "unlimited" as PAGE_COUNTER_MAX pages in bytes (9223372036854771712).
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    return make_error(ErrorKind::Protocol, "memory limit `", text, "` is not a number");
  if (v >= (uint64_t(1) << 62)) return std::optional<int64_t>();
  return std::optional<int64_t>(static_cast<int64_t>(v));
}

std::string format_limit(Version v, std::optional<int64_t> bytes) {
  if (!bytes) return v == Version::V1 ? "-1" : "max";
  return std::to_string(*bytes);
}

Result<int64_t> Memory::usage() {
  const char* knob = group_.version == Version::V1 ? "memory.usage_in_bytes" : "memory.current";
  return to_int(SL_TRY(knobs_->read(knob)), knob);
}

Result<std::optional<int64_t>> Memory::limit() {
  const char* knob = group_.version == Version::V1 ? "memory.limit_in_bytes" : "memory.max";
  return SL_TRY_CTX(parse_limit(SL_TRY(knobs_->read(knob))), knobs_->describe());
}

Result<void> Memory::set_limit(std::optional<int64_t> bytes) {
  const char* knob = group_.version == Version::V1 ? "memory.limit_in_bytes" : "memory.max";
  return knobs_->write(knob, format_limit(group_.version, bytes));
}

Result<std::optional<int64_t>> Memory::swap_usage() {
  if (group_.version == Version::V2) {
    if (!knobs_->has("memory.swap.current")) return std::optional<int64_t>();
    return std::optional(SL_TRY(to_int(SL_TRY(knobs_->read("memory.swap.current")), "memory.swap.current")));
  }
  if (!knobs_->has("memory.memsw.usage_in_bytes")) return std::optional<int64_t>();
  auto memsw = SL_TRY(to_int(SL_TRY(knobs_->read("memory.memsw.usage_in_bytes")), "memory.memsw.usage_in_bytes"));
  return std::optional(std::max<int64_t>(0, memsw - SL_TRY(usage())));
}

LimitGuard::~LimitGuard() {
  if (active()) (void)restore();
}

Result<void> LimitGuard::set(const std::string& knob, const std::string& value, std::optional<std::string> previous) {
  bool saved = false;
  for (const auto& [k, v] : saved_) saved = saved || k == knob;
  if (!saved) {
    saved_.emplace_back(knob, previous ? std::move(*previous) : SL_TRY(knobs_->read(knob)));
    if (auto r = write_record(); !r.ok()) {
      saved_.pop_back();
      return std::move(r).error().wrap(cat("recording `", knob, "` before changing it"));
    }
  }
  auto r = knobs_->write(knob, value);
  // A rejected write changed nothing (the kernel checks before it stores): nothing to undo.
  if (!r.ok() && !saved) saved_.pop_back();
  return r;
}

Result<void> LimitGuard::restore() {
  std::optional<Error> first;
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
    auto r = knobs_->write(it->first, it->second);
    if (!r.ok()) r = knobs_->write(it->first, it->second);  // a racing reclaim can make one write fail
    if (!r.ok()) {
      SL_LOG(Error, "cgroup", "could not restore `", it->first, "` of ", knobs_->describe(), " to ", it->second, ": ",
             r.error().message);
      if (!first) first = std::move(r).error();
    }
  }
  saved_.clear();
  if (first) return std::move(*first).wrap("restoring memory limits");  // the record stays
  if (!record_.empty()) ::unlink(record_.c_str());
  return ok();
}

Result<void> LimitGuard::write_record() const {
  if (record_.empty()) return ok();
  qmp::ArgWriter w;
  w.str("group", knobs_->describe());
  std::string knobs = "[";
  for (size_t i = 0; i < saved_.size(); ++i)
    knobs += cat(i ? "," : "", "[", qmp::quote(saved_[i].first), ",", qmp::quote(saved_[i].second), "]");
  w.raw("knobs", knobs + "]");
  // Whole or not at all: written aside, then renamed over the old one.
  const std::string tmp = record_ + ".part";
  SL_TRY(sys::write_file(tmp, w.finish(), 0600));
  if (::rename(tmp.c_str(), record_.c_str()) != 0) return errno_error(cat("rename `", tmp, "`"));
  return ok();
}

Result<size_t> put_back_recorded(Knobs& knobs, const std::string& record) {
  if (record.empty() || ::access(record.c_str(), F_OK) != 0) return size_t(0);
  auto text = SL_TRY(sys::read_file(record, 64 << 10));
  auto json = SL_TRY_CTX(qmp::parse(text), "limits record `", record, "`");
  const qmp::Value* list = SL_TRY_CTX(qmp::field(json.root(), "knobs"), "limits record `", record, "`");
  if (!list->IsArray()) return make_error(ErrorKind::Protocol, "limits record `", record, "`: `knobs` is no list");
  std::vector<std::pair<std::string, std::string>> saved;
  for (const auto& k : list->GetArray()) {
    if (!k.IsArray() || k.Size() != 2 || !k[0].IsString() || !k[1].IsString())
      return make_error(ErrorKind::Protocol, "limits record `", record, "`: a knob is not [name, value]");
    std::string name(k[0].GetString(), k[0].GetStringLength());
    // Only the knobs a guard changes: the record names nothing else to write.
    if (name.rfind("memory.", 0) != 0 || name.find('/') != std::string::npos)
      return make_error(ErrorKind::Protocol, "limits record `", record, "`: `", name, "` is no memory knob");
    saved.emplace_back(std::move(name), std::string(k[1].GetString(), k[1].GetStringLength()));
  }
  for (auto it = saved.rbegin(); it != saved.rend(); ++it)
    SL_TRY_CTX(knobs.write(it->first, it->second), "putting back `", it->first, "` of ", knobs.describe(), " from `",
               record, "`");
  ::unlink(record.c_str());
  SL_LOG(Warn, "cgroup", "put back ", saved.size(), " memory knob(s) of ", knobs.describe(),
         " that an interrupted run had changed (", record, ")");
  return saved.size();
}

Result<Reclaimable> Memory::reclaimable() {
  // Read as a file: a statistics table, not a knob (libcgroup keeps one line of a value).
  const std::string path = group_.dir() + "/memory.stat";
  if (!std::filesystem::exists(path)) return Reclaimable{};
  auto stat = SL_TRY(sys::read_file(path));
  // v1's hierarchical totals; v2's table is hierarchical already.
  const bool v1 = group_.version == Version::V1;
  const std::string prefix = v1 ? "total_" : "";
  std::map<std::string, int64_t> kv;
  std::istringstream in(stat);
  for (std::string k, v; in >> k >> v;) {
    if (k.rfind(prefix, 0) != 0) continue;
    k.erase(0, prefix.size());
    if (k == "cache" || k == "file" || k == "shmem" || k == "rss" || k == "anon" || k == "swapcached" ||
        k == "inactive_anon" || k == "active_anon")
      kv[k] = SL_TRY(to_int(v, "memory.stat " + prefix + k));
  }
  auto at = [&](const char* k) { return kv.contains(k) ? kv[k] : 0; };
  Reclaimable r;
  r.file_cache = std::max<int64_t>(0, at(v1 ? "cache" : "file") - at("shmem"));
  const int64_t unmapped = at("inactive_anon") + at("active_anon") - at(v1 ? "rss" : "anon") - at("shmem");
  r.swap_cache = std::clamp<int64_t>(unmapped, 0, at("swapcached"));
  r.mapped = at(v1 ? "rss" : "anon");
  return r;
}

namespace {

// v1: the group's OOM killer off under the guard (an allocation waits instead of QEMU
// being killed).
Result<void> disable_oom_killer(Knobs& k, LimitGuard& guard) {
  if (!k.has("memory.oom_control")) return ok();
  // Reads "oom_kill_disable 0\nunder_oom 0\n...", takes "1" or "0".
  auto oom = k.read("memory.oom_control");
  if (oom.ok() && oom->find("oom_kill_disable 0") != std::string::npos)
    return guard.set("memory.oom_control", "1", "0");
  return ok();
}

// Writes a lower limit; the kernel refuses with EBUSY a reclaim pass that freed nothing
// (swap write-back in flight), so that is retried until the deadline.
Result<void> lower_limit(LimitGuard& guard, const char* knob, int64_t bytes, const Deadline& deadline) {
  for (;;) {
    auto r = guard.set(knob, std::to_string(bytes));
    if (r.ok() || r.error().code != EBUSY || deadline.expired()) return r;
    std::this_thread::sleep_for(Millis(50));
  }
}

}  // namespace

Result<LimitGuard> evict_reclaimable(Memory& memory, const Reclaimable& what, Millis timeout,
                                     const std::string& record) {
  if (memory.group().version != Version::V1)
    return make_error(ErrorKind::Invalid, "evicting only the page and swap cache needs cgroup v1 (",
                      memory.knobs().describe(), ")");
  Knobs& k = memory.knobs();
  if (!k.has("memory.swappiness")) return make_error(ErrorKind::NotFound, "no memory.swappiness in ", k.describe());
  Deadline deadline(timeout);
  LimitGuard guard(k);
  guard.keep_record(record);
  SL_TRY(disable_oom_killer(k, guard));
  // Some of it may be dirty or in use: an eighth is left to spare (at least 4 MiB).
  auto slack = [](int64_t bytes) { return std::max<int64_t>(4 << 20, bytes / 8); };
  const std::string swappiness = SL_TRY(k.read("memory.swappiness"));
  if (what.file_cache > 0) {
    SL_TRY(guard.set("memory.swappiness", "0"));
    SL_TRY(lower_limit(guard, "memory.limit_in_bytes",
                       SL_TRY(memory.usage()) - what.file_cache + slack(what.file_cache), deadline));
  }
  if (what.swap_cache > 0) {
    SL_TRY(guard.set("memory.swappiness", swappiness == "0" ? "100" : swappiness));
    const int64_t step = std::max<int64_t>(2 << 20, what.swap_cache / 8);
    const int64_t mapped = SL_TRY(memory.reclaimable()).mapped;
    for (int64_t freed = step; freed <= what.swap_cache - slack(what.swap_cache); freed += step) {
      SL_TRY(lower_limit(guard, "memory.limit_in_bytes", SL_TRY(memory.usage()) - step, deadline));
      if (SL_TRY(memory.reclaimable()).mapped < mapped - (2 << 20)) break;
    }
  }
  return guard;
}

Result<LimitGuard> throttle(Memory& memory, int64_t bytes, Millis timeout, const std::string& record) {
  Deadline deadline(timeout);
  LimitGuard guard(memory.knobs());
  guard.keep_record(record);
  Knobs& k = memory.knobs();
  const bool v1 = memory.group().version == Version::V1;
  if (v1) {
    // Swap must be allowed while throttled: a memsw limit below the VM's size would
    // make the kernel OOM-kill QEMU instead of swapping it out.
    if (k.has("memory.memsw.limit_in_bytes")) SL_TRY(guard.set("memory.memsw.limit_in_bytes", "-1"));
    if (k.has("memory.swappiness")) {
      auto sw = SL_TRY(k.read("memory.swappiness"));
      if (sw == "0") SL_TRY(guard.set("memory.swappiness", "60"));
    }
    SL_TRY(disable_oom_killer(k, guard));
  } else if (k.has("memory.swap.max")) {
    auto sw = SL_TRY(k.read("memory.swap.max"));
    if (sw != "max") SL_TRY(guard.set("memory.swap.max", "max"));
  }
  const char* knob = v1 ? "memory.limit_in_bytes" : "memory.max";
  int64_t step = std::max(bytes, SL_TRY(memory.usage()) / 2);
  for (;;) {
    SL_TRY(lower_limit(guard, knob, step, deadline));
    if (step == bytes) return guard;
    step = std::max(bytes, step / 2);
  }
}

}  // namespace seamless::cgroup
