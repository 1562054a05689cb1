// SPDX-License-Identifier: Apache-2.0
// Rewriting core-TID.img and seccomp.img: each message is taken apart into its fields as
// they are (every wire type kept, unknown fields too), the few that change are replaced,
// and it is put together again.
#include "pack/criu_confine.h"

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "common/sys.h"
#include "pack/criu_wire.h"

namespace seamless::packfmt::criu_images {
namespace {

using wire::kCommonMagic;
using wire::malformed;
using wire::read_varint;
using wire::write_varint;
constexpr uint32_t kSeccompMagic = 0x64413049;  // images/magic.h
// core.proto: core_entry.tc (3) with the old per-task seccomp fields (11, 12),
// core_entry.thread_core (5) with creds (10), seccomp_mode (11), seccomp_filter (12);
// creds.proto: cap_inh, cap_prm, cap_eff, cap_bnd (9..12).
constexpr uint32_t kTaskCore = 3, kThreadCore = 5, kCreds = 10, kSeccompMode = 11, kSeccompFilter = 12;
constexpr uint32_t kCapFields[4] = {9, 10, 11, 12};

// One field as it was on the wire: its key, and for a varint its value, else its bytes.
struct Raw {
  uint32_t number = 0;
  uint32_t wire = 0;  // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  uint64_t value = 0;
  std::string bytes;
};

Result<std::vector<Raw>> take_apart(std::string_view msg) {
  std::vector<Raw> out;
  for (size_t pos = 0; pos < msg.size();) {
    const uint64_t key = SL_TRY(read_varint(msg, &pos));
    Raw f;
    f.number = uint32_t(key >> 3);
    f.wire = uint32_t(key & 7);
    if (f.number == 0 || key >> 32) return malformed("a field number");
    size_t n = 0;
    switch (f.wire) {
      case 0: f.value = SL_TRY(read_varint(msg, &pos)); break;
      case 1: n = 8; break;
      case 5: n = 4; break;
      case 2: n = SL_TRY(read_varint(msg, &pos)); break;
      default: return malformed(cat("wire type ", f.wire));
    }
    if (f.wire != 0) {
      if (n > msg.size() - pos) return malformed("a field past the message's end");
      f.bytes = std::string(msg.substr(pos, n));
      pos += n;
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::string put_together(const std::vector<Raw>& fields) {
  std::string out;
  for (const auto& f : fields) {
    write_varint(out, uint64_t(f.number) << 3 | f.wire);
    if (f.wire == 0) {
      write_varint(out, f.value);
      continue;
    }
    if (f.wire == 2) write_varint(out, f.bytes.size());
    out += f.bytes;
  }
  return out;
}

Raw varint_field(uint32_t number, uint64_t v) { return Raw{number, 0, v, {}}; }
Raw bytes_field(uint32_t number, std::string b) { return Raw{number, 2, 0, std::move(b)}; }

void drop(std::vector<Raw>& fields, uint32_t number) {
  std::erase_if(fields, [&](const Raw& f) { return f.number == number; });
}

// A repeated uint32 (unpacked, or packed in one bytes field) as its values.
Result<std::vector<uint32_t>> words_of(const std::vector<Raw>& fields, uint32_t number) {
  std::vector<uint32_t> out;
  for (const auto& f : fields) {
    if (f.number != number) continue;
    if (f.wire == 0) {
      out.push_back(uint32_t(f.value));
    } else if (f.wire == 2) {
      for (size_t pos = 0; pos < f.bytes.size();) out.push_back(uint32_t(SL_TRY(read_varint(f.bytes, &pos))));
    } else {
      return malformed(cat("capability field ", number));
    }
  }
  if (out.size() > 64) return malformed(cat("capability field ", number, " of ", out.size(), " words"));
  return out;
}

// Replaces a capability set's words (as many as the image had: CRIU checks the count)
// with `edit(bits)`.
Result<void> edit_caps(std::vector<Raw>& creds, uint32_t number, const std::function<uint64_t(uint64_t)>& edit) {
  auto words = SL_TRY(words_of(creds, number));
  uint64_t bits = 0;
  for (size_t i = 0; i < words.size() && i < 2; ++i) bits |= uint64_t(words[i]) << (32 * i);
  bits = edit(bits);
  for (size_t i = 0; i < words.size() && i < 2; ++i) words[i] = uint32_t(bits >> (32 * i));
  drop(creds, number);
  for (uint32_t w : words) creds.push_back(varint_field(number, w));
  return ok();
}

// A thread's new state, as the edit of its core image sets it.
struct ThreadEdit {
  std::function<uint64_t(int set, uint64_t bits)> caps;  // set: 0 inh, 1 prm, 2 eff, 3 bnd
  uint32_t seccomp_mode = 0;
  std::optional<uint32_t> seccomp_filter;
};

Result<std::string> edit_core(std::string_view entry, const ThreadEdit& e) {
  auto core = SL_TRY(take_apart(entry));
  bool thread_seen = false;
  for (auto& f : core) {
    if (f.number == kTaskCore && f.wire == 2) {
      // The old per-task fields would stand for the thread's at restore: they go.
      auto tc = SL_TRY(take_apart(f.bytes));
      drop(tc, kSeccompMode);
      drop(tc, kSeccompFilter);
      f.bytes = put_together(tc);
    } else if (f.number == kThreadCore && f.wire == 2 && !thread_seen) {
      thread_seen = true;
      auto thread = SL_TRY(take_apart(f.bytes));
      bool creds_seen = false;
      for (auto& c : thread) {
        if (c.number != kCreds || c.wire != 2 || creds_seen) continue;
        creds_seen = true;
        auto creds = SL_TRY(take_apart(c.bytes));
        for (int set = 0; set < 4; ++set)
          SL_TRY(edit_caps(creds, kCapFields[set], [&](uint64_t bits) { return e.caps(set, bits); }));
        c.bytes = put_together(creds);
      }
      if (!creds_seen) return malformed("a thread_core without credentials");
      drop(thread, kSeccompMode);
      drop(thread, kSeccompFilter);
      thread.push_back(varint_field(kSeccompMode, e.seccomp_mode));
      if (e.seccomp_filter) thread.push_back(varint_field(kSeccompFilter, *e.seccomp_filter));
      f.bytes = put_together(thread);
    }
  }
  if (!thread_seen) return malformed("a core image without thread_core");
  return put_together(core);
}

// Rewrites core-TID.img's one entry; the magic and anything after the entry stay.
Result<void> rewrite_core(const std::string& dir, uint32_t tid, const ThreadEdit& e) {
  const std::string path = cat(dir, "/core-", tid, ".img");
  auto image = SL_TRY(sys::read_file(path, 16 << 20));
  auto entries = SL_TRY_CTX(image_entries(image), "`core-", tid, ".img`");
  if (entries.empty()) return malformed(cat("`core-", tid, ".img` holds no entry"));
  const size_t at = size_t(entries[0].data() - image.data());  // just after its u32 length
  std::string edited = SL_TRY_CTX(edit_core(entries[0], e), "`core-", tid, ".img`");
  const uint32_t len = uint32_t(edited.size());
  std::string out = image.substr(0, at - 4);
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += edited;
  out += image.substr(at + entries[0].size());
  return sys::write_file(path, out, 0600);
}

Result<void> write_seccomp_image(const std::string& dir, const std::vector<SeccompFilter>& filters) {
  const std::string path = dir + "/seccomp.img";
  if (filters.empty()) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error(cat("unlink `", path, "`"));
    return ok();
  }
  std::vector<Raw> entry;
  for (const auto& f : filters) {
    std::vector<Raw> sf = {bytes_field(1, f.insns)};
    if (f.prev) sf.push_back(varint_field(2, *f.prev));
    if (f.flags) sf.push_back(varint_field(3, f.flags));
    entry.push_back(bytes_field(1, put_together(sf)));
  }
  const std::string body = put_together(entry);
  const uint32_t head[3] = {kCommonMagic, kSeccompMagic, uint32_t(body.size())};
  return sys::write_file(path, std::string(reinterpret_cast<const char*>(head), sizeof head) + body, 0600);
}

// A thread's state after the rewrite: its capability sets (`caps(set, bits)`, set 0 inh,
// 1 prm, 2 eff, 3 bnd) and its seccomp mode and filters.
struct Target {
  std::function<uint64_t(int set, uint64_t bits)> caps;
  Seccomp seccomp;
};

// Rewrites every thread's core image of the dump in `dir` (whose tasks are `ids`) and its
// seccomp.img: the threads' chains, each once, oldest filter first.
Result<void> rewrite(const std::string& dir, const std::map<uint32_t, TaskIdentity>& ids,
                     const std::function<Result<Target>(uint32_t pid, uint32_t tid)>& target) {
  std::vector<SeccompFilter> filters;
  std::map<std::vector<SeccompFilter>, uint32_t> chains;  // a chain -> its newest filter's index
  for (const auto& [pid, t] : ids)
    for (uint32_t tid : t.threads) {
      Target to = SL_TRY(target(pid, tid));
      ThreadEdit e{to.caps, to.seccomp.mode, std::nullopt};
      if (to.seccomp.mode == 2) {
        auto [it, added] = chains.emplace(to.seccomp.chain, 0);
        if (added) {
          std::optional<uint32_t> prev;
          for (const auto& f : to.seccomp.chain) {
            filters.push_back({f.insns, prev, f.flags});
            prev = uint32_t(filters.size() - 1);
          }
          it->second = *prev;
        }
        e.seccomp_filter = it->second;
      }
      SL_TRY(rewrite_core(dir, tid, e));
    }
  return write_seccomp_image(dir, filters);
}

}  // namespace

Result<void> confine(const std::string& dir, std::string_view filter) {
  if (filter.empty() || filter.size() % 8 || filter.size() > 4096 * 8)
    return make_error(ErrorKind::Invalid, "a seccomp filter of ", filter.size(), " bytes");
  auto ids = SL_TRY(task_identities(dir));
  return rewrite(dir, ids, [&](uint32_t pid, uint32_t tid) -> Result<Target> {
    Target to;
    to.caps = [](int, uint64_t bits) { return bits & ~kSinkDroppedCaps; };
    to.seccomp = ids.at(pid).seccomp.at(tid);
    if (to.seccomp.mode == 1) return to;  // strict: narrower than any filter
    if (to.seccomp.chain.size() >= 64) return make_error(ErrorKind::Invalid, "thread ", tid, " has 64 seccomp filters");
    to.seccomp.mode = 2;
    to.seccomp.chain.push_back({std::string(filter), std::nullopt, 0});
    return to;
  });
}

Result<void> restore_as_dumped(const std::string& dir, const std::map<uint32_t, TaskIdentity>& dumped) {
  return rewrite(dir, SL_TRY(task_identities(dir)), [&](uint32_t pid, uint32_t tid) -> Result<Target> {
    auto was = dumped.find(pid);
    if (was == dumped.end()) return make_error(ErrorKind::Invalid, "pid ", pid, " was not dumped here");
    auto creds = was->second.creds.find(tid);
    auto seccomp = was->second.seccomp.find(tid);
    if (creds == was->second.creds.end() || seccomp == was->second.seccomp.end())
      return make_error(ErrorKind::Invalid, "thread ", tid, " of pid ", pid, " was not dumped here");
    const Creds c = creds->second;
    Target to;
    to.caps = [c](int set, uint64_t bits) {
      const uint64_t sets[4] = {c.cap_inh, c.cap_prm, c.cap_eff, c.cap_bnd};
      return (bits & ~kSinkDroppedCaps) | (sets[set] & kSinkDroppedCaps);
    };
    to.seccomp = seccomp->second;
    return to;
  });
}

}  // namespace seamless::packfmt::criu_images
