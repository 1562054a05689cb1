// SPDX-License-Identifier: Apache-2.0
// CRIU image reading for the pack writer: page origins from pagemap, mm and files images.
#include "pack/criu_images.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/encoding.h"
#include "common/sys.h"
#include "pack/criu_wire.h"
#include "qmp/json.h"

namespace seamless::packfmt::criu_images {
namespace {

// images/pagemap.proto flags
constexpr uint64_t kPresent = 1 << 2;
constexpr uint64_t kInParent = 1 << 0;
// criu/include/image.h: a VMA's status bit for private mappings of files
constexpr uint64_t kFilePrivate = 1 << 6, kAnonPrivate = 1 << 9;
constexpr uint64_t kReadWrite = 3;    // PROT_READ | PROT_WRITE
constexpr uint64_t kRegularFile = 1;  // fd_types.REG
constexpr uint64_t kPage = 4096;
// A dump's page images stay far below this; it bounds what a bad pagemap can make us allocate.
constexpr uint64_t kMaxPages = uint64_t(1) << 22;

using wire::kCommonMagic;
using wire::kServiceMagic;
using wire::malformed;
using wire::read_varint;

const Field* find(const std::vector<Field>& fields, uint32_t number) {
  for (const auto& f : fields)
    if (f.number == number) return &f;
  return nullptr;
}

uint64_t number_or(const std::vector<Field>& fields, uint32_t number, uint64_t fallback) {
  const Field* f = find(fields, number);
  return f && !f->is_bytes ? f->value : fallback;
}

struct Vma {
  uint64_t start, end, pgoff, file_id;
  bool file_private, anonymous_rw;
};

// What of mm-PID.img the pack writer needs: the mappings and the program break.
struct Mm {
  std::vector<Vma> vmas;
  uint64_t brk_start = 0, brk = 0;
};

// The id -> path table of files.img (FileEntry with a RegFileEntry) or, from older
// CRIUs, reg-files.img (bare RegFileEntry).
Result<std::map<uint64_t, std::string>> regular_files(const std::string& dir) {
  std::map<uint64_t, std::string> out;
  auto add_reg = [&](std::string_view reg) -> Result<void> {
    auto fields = SL_TRY(parse_message(reg));
    const Field* name = find(fields, 6);
    if (name && name->is_bytes) out[number_or(fields, 1, 0)] = std::string(name->bytes);
    return ok();
  };
  if (std::filesystem::exists(dir + "/files.img")) {
    auto image = SL_TRY(sys::read_file(dir + "/files.img"));
    for (auto entry : SL_TRY(image_entries(image))) {
      auto fields = SL_TRY(parse_message(entry));
      const Field* reg = find(fields, 3);
      if (number_or(fields, 1, 0) == kRegularFile && reg && reg->is_bytes) SL_TRY(add_reg(reg->bytes));
    }
  }
  if (std::filesystem::exists(dir + "/reg-files.img")) {
    auto image = SL_TRY(sys::read_file(dir + "/reg-files.img"));
    for (auto entry : SL_TRY(image_entries(image))) SL_TRY(add_reg(entry));
  }
  return out;
}

Result<Mm> mm_of(const std::string& mm_image) {
  auto image = SL_TRY(sys::read_file(mm_image));
  auto entries = SL_TRY(image_entries(image));
  Mm out;
  if (entries.empty()) return out;
  auto mm = SL_TRY(parse_message(entries[0]));
  out.brk_start = number_or(mm, 6, 0);
  out.brk = number_or(mm, 7, 0);
  for (const auto& f : mm) {
    if (f.number != 14 || !f.is_bytes) continue;
    auto v = SL_TRY(parse_message(f.bytes));
    const uint64_t status = number_or(v, 7, 0);
    out.vmas.push_back({number_or(v, 1, 0), number_or(v, 2, 0), number_or(v, 3, 0), number_or(v, 4, 0),
                        (status & kFilePrivate) != 0,
                        (status & kAnonPrivate) && (number_or(v, 5, 0) & kReadWrite) == kReadWrite});
  }
  return out;
}

}  // namespace

Result<std::vector<Field>> parse_message(std::string_view msg) {
  std::vector<Field> out;
  size_t pos = 0;
  while (pos < msg.size()) {
    const uint64_t key = SL_TRY(read_varint(msg, &pos));
    Field f;
    f.number = uint32_t(key >> 3);
    switch (key & 7) {
      case 0: f.value = SL_TRY(read_varint(msg, &pos)); break;
      case 1:
        if (msg.size() - pos < 8) return malformed("truncated fixed64 field");
        pos += 8;
        continue;
      case 5:
        if (msg.size() - pos < 4) return malformed("truncated fixed32 field");
        pos += 4;
        continue;
      case 2: {
        const uint64_t n = SL_TRY(read_varint(msg, &pos));
        if (n > msg.size() - pos) return malformed("field runs past the end of its message");
        f.bytes = msg.substr(pos, n);
        f.is_bytes = true;
        pos += n;
        break;
      }
      default: return malformed("unknown wire type");
    }
    out.push_back(f);
  }
  return out;
}

Result<std::vector<std::string_view>> image_entries(std::string_view image) {
  auto u32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, image.data() + at, 4);
    return v;
  };
  if (image.size() < 4) return malformed("no magic");
  size_t pos = (u32(0) == kCommonMagic || u32(0) == kServiceMagic) ? 8 : 4;
  if (pos > image.size()) return malformed("no magic");
  std::vector<std::string_view> out;
  while (pos < image.size()) {
    if (image.size() - pos < 4) return malformed("truncated entry size");
    const uint32_t n = u32(pos);
    pos += 4;
    if (n > image.size() - pos) return malformed("entry runs past the end of the image");
    out.push_back(image.substr(pos, n));
    pos += n;
  }
  return out;
}

Result<PageOrigins> page_origins(const std::string& dir) {
  PageOrigins out;
  auto files = SL_TRY(regular_files(dir));
  std::map<uint64_t, uint32_t> file_index;  // files.img id -> index in out.files
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("pagemap-", 0) != 0 || name.rfind("pagemap-shmem-", 0) == 0 || name.size() < 13 ||
        name.compare(name.size() - 4, 4, ".img") != 0)
      continue;
    const std::string pid = name.substr(8, name.size() - 12);
    if (!std::filesystem::exists(dir + "/mm-" + pid + ".img")) continue;
    const auto mm = SL_TRY(mm_of(dir + "/mm-" + pid + ".img"));
    const auto& vmas = mm.vmas;
    auto image = SL_TRY(sys::read_file(entry.path().string()));
    auto entries = SL_TRY(image_entries(image));
    if (entries.empty()) continue;
    const uint64_t pages_id = number_or(SL_TRY(parse_message(entries[0])), 1, UINT64_MAX);
    if (pages_id > UINT32_MAX) continue;
    std::vector<std::optional<FilePage>> pages;
    TaskMemory memory{{}, {}, mm.brk_start, mm.brk};
    for (const auto& v : vmas)
      if (v.anonymous_rw && v.end > v.start) memory.anonymous.push_back({v.start, v.end});
    for (size_t i = 1; i < entries.size(); ++i) {
      auto pe = SL_TRY(parse_message(entries[i]));
      const Field* flags = find(pe, 4);
      const bool present = flags ? (flags->value & kPresent) != 0 : !(number_or(pe, 3, 0) & kInParent);
      if (!present) continue;
      const uint64_t vaddr = number_or(pe, 1, 0), count = number_or(pe, 2, 0);
      if (count > kMaxPages - pages.size()) return malformed(cat("`", name, "` maps too many pages"));
      const Vma* v = nullptr;  // pagemap entries run in address order: usually the last one's
      for (uint64_t k = 0; k < count; ++k) {
        const uint64_t addr = vaddr + k * kPage;
        if (!v || addr < v->start || addr >= v->end) {
          auto it =
              std::find_if(vmas.begin(), vmas.end(), [&](const Vma& x) { return addr >= x.start && addr < x.end; });
          v = it == vmas.end() ? nullptr : &*it;
        }
        std::optional<FilePage> origin;
        auto path = v && v->file_private ? files.find(v->file_id) : files.end();
        if (path != files.end()) {
          auto [it, added] = file_index.emplace(v->file_id, uint32_t(out.files.size()));
          if (added) out.files.push_back(path->second);
          origin = FilePage{it->second, v->pgoff / kPage + (addr - v->start) / kPage};
        }
        pages.push_back(origin);
        memory.addresses.push_back(addr);
      }
    }
    out.images[uint32_t(pages_id)] = std::move(pages);
    out.memory[uint32_t(pages_id)] = std::move(memory);
  }
  return out;
}

namespace {

constexpr int kCapSetgid = 6, kCapSetuid = 7, kCapSetpcap = 8;

// A repeated uint32 field: unpacked (one varint field each) or packed (one bytes field).
Result<std::vector<uint32_t>> repeated_u32(const std::vector<Field>& fields, uint32_t number) {
  std::vector<uint32_t> out;
  for (const auto& f : fields) {
    if (f.number != number) continue;
    if (!f.is_bytes) {
      out.push_back(uint32_t(f.value));
      continue;
    }
    for (size_t pos = 0; pos < f.bytes.size();) out.push_back(uint32_t(SL_TRY(read_varint(f.bytes, &pos))));
  }
  if (out.size() > 65536) return malformed("a repeated field of more than 65536 values");
  return out;
}

// Capability words (two u32 for 64 capabilities) as bits.
uint64_t cap_bits(const std::vector<uint32_t>& words) {
  uint64_t bits = 0;
  for (size_t i = 0; i < words.size() && i < 2; ++i) bits |= uint64_t(words[i]) << (32 * i);
  return bits;
}

Result<std::string_view> first_entry(const std::string& image, const std::string& name) {
  auto entries = SL_TRY_CTX(image_entries(image), "`", name, "`");
  if (entries.empty()) return malformed(cat("`", name, "` holds no entry"));
  return entries[0];
}

struct ThreadState {
  Creds creds;
  uint32_t seccomp_mode = 0;
  std::optional<uint32_t> seccomp_filter;
};

// core-TID.img's thread_core: its credentials (10), seccomp mode (11) and filter (12); a
// task_core's (3) old per-task seccomp fields (11, 12) stand for the thread's, as in CRIU.
Result<ThreadState> thread_state_of(const std::string& dir, uint32_t tid) {
  const std::string name = cat("core-", tid, ".img");
  auto image = SL_TRY(sys::read_file(dir + "/" + name, 16 << 20));
  auto core = SL_TRY(parse_message(SL_TRY(first_entry(image, name))));
  const Field* thread = find(core, 5);
  if (!thread || !thread->is_bytes) return malformed(cat("`", name, "` has no thread_core"));
  auto thread_fields = SL_TRY(parse_message(thread->bytes));
  const Field* creds = find(thread_fields, 10);
  if (!creds || !creds->is_bytes) return malformed(cat("`", name, "` has no credentials"));
  ThreadState st;
  std::vector<Field> task;
  if (const Field* tc = find(core, 3); tc && tc->is_bytes) task = SL_TRY(parse_message(tc->bytes));
  st.seccomp_mode = uint32_t(number_or(task, 11, number_or(thread_fields, 11, 0)));
  const Field* filter = find(task, 12) ? find(task, 12) : find(thread_fields, 12);
  if (filter && !filter->is_bytes) st.seccomp_filter = uint32_t(filter->value);
  if (st.seccomp_mode > 2) return malformed(cat("`", name, "`: seccomp mode ", st.seccomp_mode));
  if (st.seccomp_mode == 2 && !st.seccomp_filter)
    return malformed(cat("`", name, "`: seccomp mode 2 without a filter"));
  auto c = SL_TRY(parse_message(creds->bytes));
  Creds& out = st.creds;
  uint32_t* ids[] = {&out.uid, &out.gid, &out.euid, &out.egid, &out.suid, &out.sgid, &out.fsuid, &out.fsgid};
  for (uint32_t n = 1; n <= 8; ++n) {
    const Field* f = find(c, n);
    if (!f || f->is_bytes) return malformed(cat("`", name, "` lacks credential field ", n));
    *ids[n - 1] = uint32_t(f->value);
  }
  out.cap_inh = cap_bits(SL_TRY(repeated_u32(c, 9)));
  out.cap_prm = cap_bits(SL_TRY(repeated_u32(c, 10)));
  out.cap_eff = cap_bits(SL_TRY(repeated_u32(c, 11)));
  out.cap_bnd = cap_bits(SL_TRY(repeated_u32(c, 12)));
  out.secbits = uint32_t(number_or(c, 13, 0));
  out.groups = SL_TRY(repeated_u32(c, 14));
  return st;
}

// A thread's filters from the first installed to `last`.
Result<std::vector<SeccompFilter>> chain_of(const std::vector<SeccompFilter>& filters, uint32_t last) {
  std::vector<SeccompFilter> chain;
  for (std::optional<uint32_t> at = last; at;) {
    if (*at >= filters.size()) return malformed(cat("seccomp filter ", *at, " of ", filters.size()));
    SeccompFilter f = filters[*at];
    at = f.prev;  // always earlier (seccomp_filters checks), so this ends
    f.prev.reset();
    chain.insert(chain.begin(), std::move(f));
  }
  return chain;
}

bool has_cap(const Creds& c, int cap) { return (c.cap_eff >> cap) & 1; }

bool one_of(uint32_t id, uint32_t a, uint32_t b, uint32_t c) { return id == a || id == b || id == c; }

// What `was` could have become by itself, as the kernel would let it.
Result<void> reachable(const Creds& was, const Creds& now, uint32_t tid) {
  auto refuse = [&](std::string_view what) {
    return make_error(ErrorKind::Invalid, "thread ", tid, " came back with ", what, " it could not have taken");
  };
  if (!has_cap(was, kCapSetuid))
    for (uint32_t id : {now.uid, now.euid, now.suid, now.fsuid})
      if (!one_of(id, was.uid, was.euid, was.suid) && id != was.fsuid) return refuse(cat("user id ", id));
  if (!has_cap(was, kCapSetgid)) {
    for (uint32_t id : {now.gid, now.egid, now.sgid, now.fsgid})
      if (!one_of(id, was.gid, was.egid, was.sgid) && id != was.fsgid) return refuse(cat("group id ", id));
    if (now.groups != was.groups) return refuse("other supplementary groups");
  }
  // Capabilities only go: permitted and bounding sets shrink, effective stays within
  // permitted, inheritable within what it had or was permitted.
  const uint64_t prm = was.cap_prm;
  if (now.cap_prm & ~prm) return refuse("permitted capabilities");
  if (now.cap_eff & ~(now.cap_prm & prm)) return refuse("effective capabilities");
  if (now.cap_bnd & ~was.cap_bnd) return refuse("bounding capabilities");
  if (now.cap_inh & ~(was.cap_inh | (prm & was.cap_bnd))) return refuse("inheritable capabilities");
  if (now.secbits != was.secbits && !has_cap(was, kCapSetpcap)) return refuse(cat("securebits ", now.secbits));
  return ok();
}

}  // namespace

Result<std::vector<SeccompFilter>> seccomp_filters(const std::string& dir) {
  std::vector<SeccompFilter> out;
  const std::string path = dir + "/seccomp.img";
  if (!std::filesystem::exists(path)) return out;
  auto image = SL_TRY(sys::read_file(path, 16 << 20));
  auto entries = SL_TRY_CTX(image_entries(image), "`seccomp.img`");
  if (entries.empty()) return out;
  for (const auto& f : SL_TRY(parse_message(entries[0]))) {
    if (f.number != 1) continue;
    if (!f.is_bytes) return malformed("`seccomp.img`: a filter that is no message");
    auto fields = SL_TRY(parse_message(f.bytes));
    const Field* insns = find(fields, 1);
    if (!insns || !insns->is_bytes || insns->bytes.empty() || insns->bytes.size() % 8 || insns->bytes.size() > 4096 * 8)
      return malformed(cat("`seccomp.img`: filter ", out.size(), "'s instructions"));
    SeccompFilter sf;
    sf.insns = std::string(insns->bytes);
    if (const Field* prev = find(fields, 2); prev && !prev->is_bytes) {
      if (prev->value >= out.size()) return malformed(cat("`seccomp.img`: filter ", out.size(), "'s prev"));
      sf.prev = uint32_t(prev->value);
    }
    sf.flags = uint32_t(number_or(fields, 3, 0));
    out.push_back(std::move(sf));
    if (out.size() > 4096) return malformed("`seccomp.img`: more than 4096 filters");
  }
  return out;
}

Result<std::map<uint32_t, TaskIdentity>> task_identities(const std::string& dir) {
  std::map<uint32_t, TaskIdentity> out;
  auto files = SL_TRY(regular_files(dir));
  std::optional<std::vector<SeccompFilter>> filters;  // read when a thread has some
  auto pstree = SL_TRY(sys::read_file(dir + "/pstree.img", 16 << 20));
  for (auto entry : SL_TRY_CTX(image_entries(pstree), "`pstree.img`")) {
    auto fields = SL_TRY(parse_message(entry));
    const Field* pid = find(fields, 1);
    if (!pid || pid->is_bytes || pid->value == 0 || pid->value > 4194304) return malformed("a pstree entry's pid");
    TaskIdentity& t = out[uint32_t(pid->value)];
    if (!t.threads.empty()) return malformed(cat("pid ", pid->value, " twice in `pstree.img`"));
    t.threads = SL_TRY(repeated_u32(fields, 5));
    if (t.threads.empty()) t.threads.push_back(uint32_t(pid->value));
    for (uint32_t tid : t.threads) {
      if (tid == 0 || tid > 4194304 || t.creds.count(tid))
        return malformed(cat("thread ", tid, " of pid ", pid->value));
      auto st = SL_TRY(thread_state_of(dir, tid));
      t.creds[tid] = std::move(st.creds);
      Seccomp& sc = t.seccomp[tid];
      sc.mode = st.seccomp_mode;
      if (sc.mode == 2) {
        if (!filters) filters = SL_TRY(seccomp_filters(dir));
        sc.chain = SL_TRY_CTX(chain_of(*filters, *st.seccomp_filter), "thread ", tid);
      }
    }
    // The executable: a task that shares its parent's memory (a vfork child) has no mm image.
    const std::string mm = cat(dir, "/mm-", pid->value, ".img");
    if (std::filesystem::exists(mm)) {
      auto image = SL_TRY(sys::read_file(mm, 64 << 20));
      auto m = SL_TRY(parse_message(SL_TRY(first_entry(image, mm))));
      if (auto path = files.find(number_or(m, 12, UINT64_MAX)); path != files.end()) t.exe = path->second;
    }
  }
  if (out.empty()) return malformed("`pstree.img` names no task");
  return out;
}

Result<void> check_handed_back(const std::map<uint32_t, TaskIdentity>& dumped,
                               const std::map<uint32_t, TaskIdentity>& back) {
  for (const auto& [pid, t] : back) {
    auto was = dumped.find(pid);
    if (was == dumped.end()) return make_error(ErrorKind::Invalid, "pid ", pid, " was not dumped here");
    if (t.exe != was->second.exe)
      return make_error(ErrorKind::Invalid, "pid ", pid, " came back running `", t.exe, "`, not `", was->second.exe,
                        "`");
    for (const auto& [tid, creds] : t.creds) {
      auto before = was->second.creds.find(tid);
      if (before == was->second.creds.end())
        return make_error(ErrorKind::Invalid, "thread ", tid, " of pid ", pid, " was not dumped here");
      SL_TRY(reachable(before->second, creds, tid));
    }
  }
  return ok();
}

std::string identities_to_json(const std::map<uint32_t, TaskIdentity>& ids) {
  std::string tasks = "[";
  for (const auto& [pid, t] : ids) {
    std::string threads = "[";
    for (const auto& [tid, c] : t.creds) {
      std::string groups = "[";
      for (uint32_t g : c.groups) groups += (groups.size() > 1 ? "," : "") + std::to_string(g);
      qmp::ArgWriter w;
      w.num("tid", tid).num("uid", c.uid).num("gid", c.gid).num("euid", c.euid).num("egid", c.egid);
      w.num("suid", c.suid).num("sgid", c.sgid).num("fsuid", c.fsuid).num("fsgid", c.fsgid);
      // Capability sets as decimal strings: JSON numbers lose 64-bit precision elsewhere.
      w.str("cap_inh", std::to_string(c.cap_inh)).str("cap_prm", std::to_string(c.cap_prm));
      w.str("cap_eff", std::to_string(c.cap_eff)).str("cap_bnd", std::to_string(c.cap_bnd));
      w.num("secbits", c.secbits).raw("groups", groups + "]");
      const Seccomp sc = t.seccomp.count(tid) ? t.seccomp.at(tid) : Seccomp{};
      std::string chain = "[";
      for (const auto& f : sc.chain)
        chain += (chain.size() > 1 ? "," : "") +
                 qmp::ArgWriter().str("insns", base64_encode(f.insns)).num("flags", f.flags).finish();
      w.num("seccomp_mode", sc.mode).raw("seccomp", chain + "]");
      threads += (threads.size() > 1 ? "," : "") + w.finish();
    }
    qmp::ArgWriter w;
    w.num("pid", pid).str("exe", t.exe).raw("threads", threads + "]");
    tasks += (tasks.size() > 1 ? "," : "") + w.finish();
  }
  qmp::ArgWriter w;
  return w.raw("tasks", tasks + "]").finish();
}

Result<std::map<uint32_t, TaskIdentity>> identities_from_json(std::string_view text) {
  auto json = SL_TRY(qmp::parse(text));
  const qmp::Value& root = json.root();
  if (!root.IsObject() || !root.HasMember("tasks") || !root["tasks"].IsArray())
    return make_error(ErrorKind::Invalid, "task identities: no `tasks` array");
  auto u32 = [](const qmp::Value& o, const char* key) -> Result<uint32_t> {
    auto v = SL_TRY(qmp::get_int(o, key));
    if (v < 0 || v > int64_t(UINT32_MAX)) return make_error(ErrorKind::Invalid, "task identities: `", key, "` ", v);
    return uint32_t(v);
  };
  auto u64 = [](const qmp::Value& o, const char* key) -> Result<uint64_t> {
    auto s = SL_TRY(qmp::get_string(o, key));
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end || errno || s[0] == '-')
      return make_error(ErrorKind::Invalid, "task identities: `", key, "`");
    return uint64_t(v);
  };
  std::map<uint32_t, TaskIdentity> out;
  for (const auto& task : root["tasks"].GetArray()) {
    if (!task.IsObject() || !task.HasMember("threads") || !task["threads"].IsArray())
      return make_error(ErrorKind::Invalid, "task identities: a task without threads");
    TaskIdentity& t = out[SL_TRY(u32(task, "pid"))];
    t.exe = SL_TRY(qmp::get_string(task, "exe"));
    for (const auto& th : task["threads"].GetArray()) {
      if (!th.IsObject() || !th.HasMember("groups") || !th["groups"].IsArray())
        return make_error(ErrorKind::Invalid, "task identities: a thread without groups");
      Creds c;
      const uint32_t tid = SL_TRY(u32(th, "tid"));
      c.uid = SL_TRY(u32(th, "uid")), c.gid = SL_TRY(u32(th, "gid")), c.euid = SL_TRY(u32(th, "euid"));
      c.egid = SL_TRY(u32(th, "egid")), c.suid = SL_TRY(u32(th, "suid")), c.sgid = SL_TRY(u32(th, "sgid"));
      c.fsuid = SL_TRY(u32(th, "fsuid")), c.fsgid = SL_TRY(u32(th, "fsgid")), c.secbits = SL_TRY(u32(th, "secbits"));
      c.cap_inh = SL_TRY(u64(th, "cap_inh")), c.cap_prm = SL_TRY(u64(th, "cap_prm"));
      c.cap_eff = SL_TRY(u64(th, "cap_eff")), c.cap_bnd = SL_TRY(u64(th, "cap_bnd"));
      for (const auto& g : th["groups"].GetArray()) {
        if (!g.IsUint()) return make_error(ErrorKind::Invalid, "task identities: a group that is no number");
        c.groups.push_back(g.GetUint());
      }
      Seccomp& sc = t.seccomp[tid];
      sc.mode = SL_TRY(u32(th, "seccomp_mode"));
      if (sc.mode > 2 || !th.HasMember("seccomp") || !th["seccomp"].IsArray())
        return make_error(ErrorKind::Invalid, "task identities: thread ", tid, "'s seccomp state");
      for (const auto& f : th["seccomp"].GetArray()) {
        if (!f.IsObject()) return make_error(ErrorKind::Invalid, "task identities: a seccomp filter");
        auto insns = base64_decode(SL_TRY(qmp::get_string(f, "insns")));
        if (!insns.ok() || insns->empty() || insns->size() % 8 || insns->size() > 4096 * 8)
          return make_error(ErrorKind::Invalid, "task identities: a seccomp filter's instructions");
        sc.chain.push_back({*insns, std::nullopt, SL_TRY(u32(f, "flags"))});
      }
      if ((sc.mode == 2) != !sc.chain.empty())
        return make_error(ErrorKind::Invalid, "task identities: thread ", tid, "'s seccomp filters");
      t.threads.push_back(tid);
      t.creds[tid] = std::move(c);
    }
  }
  return out;
}

}  // namespace seamless::packfmt::criu_images
