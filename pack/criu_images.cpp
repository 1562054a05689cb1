// SPDX-License-Identifier: Apache-2.0
// CRIU image reading for the pack writer: page origins from pagemap, mm and files images.
#include "pack/criu_images.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/sys.h"

namespace seamless::packfmt::criu_images {
namespace {

// images/magic.h: a v2 image starts with the common (or service) magic, then its own.
constexpr uint32_t kCommonMagic = 0x54564319;
constexpr uint32_t kServiceMagic = 0x55105940;
// images/pagemap.proto flags
constexpr uint64_t kPresent = 1 << 2;
constexpr uint64_t kInParent = 1 << 0;
// criu/include/image.h: a VMA's status bit for private mappings of files
constexpr uint64_t kFilePrivate = 1 << 6;
constexpr uint64_t kRegularFile = 1;  // fd_types.REG
constexpr uint64_t kPage = 4096;
// A dump's page images stay far below this; it bounds what a bad pagemap can make us allocate.
constexpr uint64_t kMaxPages = uint64_t(1) << 22;

Error malformed(std::string_view what) { return make_error(ErrorKind::Protocol, "malformed CRIU image: ", what); }

Result<uint64_t> varint(std::string_view in, size_t* pos) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return make_error(ErrorKind::Protocol, "malformed CRIU image: truncated varint");
    const auto c = static_cast<unsigned char>(in[(*pos)++]);
    v |= uint64_t(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  return make_error(ErrorKind::Protocol, "malformed CRIU image: varint longer than 10 bytes");
}

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
  bool file_private;
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

Result<std::vector<Vma>> vmas_of(const std::string& mm_image) {
  auto image = SL_TRY(sys::read_file(mm_image));
  auto entries = SL_TRY(image_entries(image));
  if (entries.empty()) return std::vector<Vma>{};
  std::vector<Vma> out;
  for (const auto& f : SL_TRY(parse_message(entries[0]))) {
    if (f.number != 14 || !f.is_bytes) continue;
    auto v = SL_TRY(parse_message(f.bytes));
    out.push_back({number_or(v, 1, 0), number_or(v, 2, 0), number_or(v, 3, 0), number_or(v, 4, 0),
                   (number_or(v, 7, 0) & kFilePrivate) != 0});
  }
  return out;
}

}  // namespace

Result<std::vector<Field>> parse_message(std::string_view msg) {
  std::vector<Field> out;
  size_t pos = 0;
  while (pos < msg.size()) {
    const uint64_t key = SL_TRY(varint(msg, &pos));
    Field f;
    f.number = uint32_t(key >> 3);
    switch (key & 7) {
      case 0: f.value = SL_TRY(varint(msg, &pos)); break;
      case 1:
        if (msg.size() - pos < 8) return malformed("truncated fixed64 field");
        pos += 8;
        continue;
      case 5:
        if (msg.size() - pos < 4) return malformed("truncated fixed32 field");
        pos += 4;
        continue;
      case 2: {
        const uint64_t n = SL_TRY(varint(msg, &pos));
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
    auto vmas = SL_TRY(vmas_of(dir + "/mm-" + pid + ".img"));
    auto image = SL_TRY(sys::read_file(entry.path().string()));
    auto entries = SL_TRY(image_entries(image));
    if (entries.empty()) continue;
    const uint64_t pages_id = number_or(SL_TRY(parse_message(entries[0])), 1, UINT64_MAX);
    if (pages_id > UINT32_MAX) continue;
    std::vector<std::optional<FilePage>> pages;
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
      }
    }
    out.images[uint32_t(pages_id)] = std::move(pages);
  }
  return out;
}

}  // namespace seamless::packfmt::criu_images
