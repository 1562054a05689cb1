// SPDX-License-Identifier: Apache-2.0
// The pack reader against good, corrupt, truncated, oversized and hostile archives:
// every bad one is refused with a clear error and nothing is written outside the
// destination (which is removed again).
#include "pack/pack.h"

#include <gtest/gtest.h>
#include <lzma.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "common/sys.h"
#include "common/tempdir.h"

namespace seamless::packfmt {
namespace {

struct Entry {
  std::string name;
  std::string data;
  char type = '0';
  std::string link;
  bool bad_checksum = false;
  std::string magic = "ustar";
};

std::string tar(const std::vector<Entry>& entries, bool end = true) {
  std::string out;
  for (const auto& e : entries) {
    char h[512] = {};
    std::memcpy(h, e.name.data(), std::min<size_t>(e.name.size(), 100));
    std::snprintf(h + 100, 8, "%07o", 0644);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(e.data.size()));
    std::snprintf(h + 136, 12, "%011o", 0);
    h[156] = e.type;
    std::memcpy(h + 157, e.link.data(), std::min<size_t>(e.link.size(), 100));
    std::memcpy(h + 257, e.magic.data(), std::min<size_t>(e.magic.size(), 6));
    std::memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    std::memset(h + 148, ' ', 8);
    for (unsigned char c : std::string_view(h, 512)) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum + (e.bad_checksum ? 1 : 0));
    h[155] = ' ';
    out.append(h, 512);
    out += e.data;
    out.append((512 - e.data.size() % 512) % 512, '\0');
  }
  if (end) out.append(1024, '\0');
  return out;
}

std::string gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = unsigned(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = unsigned(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string xz(const std::string& data) {
  std::string out(lzma_stream_buffer_bound(data.size()), '\0');
  size_t pos = 0;
  lzma_easy_buffer_encode(1, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                          reinterpret_cast<uint8_t*>(out.data()), &pos, out.size());
  out.resize(pos);
  return out;
}

const Entry kManifest{"manifest.json", "{\"format\":1}"};

class PackReader : public ::testing::Test {
 protected:
  // Writes `bytes` as a pack and unpacks it; returns the error message ("" on success).
  std::string unpack_bytes(const std::string& bytes, const PackLimits& limits = {}) {
    const std::string pack = dir_ / "in.pack";
    EXPECT_TRUE(sys::write_file(pack, bytes).ok());
    auto r = unpack(pack, dest(), limits);
    if (r.ok()) {
      manifest_ = *r;
      return "";
    }
    EXPECT_FALSE(std::filesystem::exists(dest())) << "a refused pack leaves no directory behind";
    return r.error().message;
  }
  std::string dest() const { return dir_ / "out"; }
  void expect_refused(const std::string& bytes, const std::string& why, const PackLimits& limits = {}) {
    auto msg = unpack_bytes(bytes, limits);
    EXPECT_NE(msg.find(why), std::string::npos) << "got: `" << msg << "`, expected: " << why;
    // Nothing escaped next to the destination.
    for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
      EXPECT_EQ(e.path().filename(), "in.pack") << "unexpected " << e.path();
  }
  TempDir dir_ = TempDir::create().value();
  std::string manifest_;
};

TEST_F(PackReader, WriterAndReaderRoundTrip) {
  auto src = TempDir::create();
  ASSERT_TRUE(src.ok());
  std::filesystem::create_directories(*src / "gw/123");
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char(i * 2654435761u >> 13);
  ASSERT_TRUE(sys::write_file(*src / "gw/123/pages-1.img", big).ok());
  ASSERT_TRUE(sys::write_file(*src / "gw/123/core-123.img", "core").ok());
  const std::string long_name = "gw/123/" + std::string(120, 'a') + "/x.img";  // needs the ustar prefix
  std::filesystem::create_directories(*src / ("gw/123/" + std::string(120, 'a')));
  ASSERT_TRUE(sys::write_file(*src / long_name, "long").ok());
  const std::string pack = dir_ / "p.pack";
  ASSERT_TRUE(
      write_pack(pack, "{\"format\":1}", src->path(), {"gw/123/core-123.img", "gw/123/pages-1.img", long_name}).ok());
  auto m = unpack(pack, dest());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(*m, "{\"format\":1}");
  EXPECT_EQ(sys::read_file(dest() + "/gw/123/pages-1.img").value(), big);
  EXPECT_EQ(sys::read_file(dest() + "/" + long_name).value(), "long");
  ASSERT_TRUE(sys::write_file(*src / ("gw/" + std::string(100, 'b')), "x").ok());
  auto too_long = write_pack(dir_ / "q.pack", "{}", src->path(), {"gw/" + std::string(100, 'b')});
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message.find("too long for ustar"), std::string::npos) << too_long.error().message;
  auto again = unpack(pack, dest());
  ASSERT_FALSE(again.ok()) << "the destination must be new";
  EXPECT_TRUE(std::filesystem::exists(dest() + "/gw/123/core-123.img")) << "and an existing one is left alone";
}

TEST_F(PackReader, AcceptsDirectoriesAndGnuMagic) {
  Entry gnu{"gw/1/x.img", "data"};
  gnu.magic = "ustar ";
  EXPECT_EQ(unpack_bytes(gzip(tar({kManifest, {"gw/", "", '5'}, gnu}))), "");
  EXPECT_EQ(manifest_, kManifest.data);
}

TEST_F(PackReader, RefusesHostileNames) {
  expect_refused(gzip(tar({kManifest, {"../evil", "x"}})), "`..` in `../evil`");
  expect_refused(gzip(tar({kManifest, {"gw/../../evil", "x"}})), "`..`");
  expect_refused(gzip(tar({kManifest, {"/etc/passwd", "x"}})), "absolute path");
  expect_refused(gzip(tar({kManifest, {"gw//x", "x"}})), "empty path component");
  expect_refused(gzip(tar({kManifest, {"gw/./x", "x"}})), "`.` in");
  expect_refused(gzip(tar({kManifest, {"gw/x\ny", "x"}})), "unexpected character");
  expect_refused(gzip(tar({kManifest, {"a/b/c/d/e/f/g/h/i", "x"}})), "nested too deeply");
}

TEST_F(PackReader, RefusesLinksAndSpecialFiles) {
  expect_refused(gzip(tar({kManifest, {"gw/link", "", '2', "/etc/shadow"}})), "is a symlink (not allowed)");
  expect_refused(gzip(tar({kManifest, {"gw/link", "", '2', "../../../../etc"}, {"gw/link/x", "x"}})), "symlink");
  expect_refused(gzip(tar({kManifest, {"gw/hard", "", '1', "manifest.json"}})), "is a hard link");
  expect_refused(gzip(tar({kManifest, {"gw/dev", "", '3'}})), "entry type `3`");
  expect_refused(gzip(tar({kManifest, {"gw/fifo", "", '6'}})), "entry type `6`");
  expect_refused(gzip(tar({kManifest, {"././@LongLink", "x", 'L'}})), "`.` in");
  expect_refused(gzip(tar({kManifest, {"PaxHeader", "x", 'x'}})), "entry type `x`");
}

TEST_F(PackReader, RefusesBadStructure) {
  expect_refused(gzip(tar({{"gw/x", "x"}, kManifest})), "does not start with manifest.json");
  expect_refused(gzip(tar({kManifest, kManifest})), "second manifest.json");
  expect_refused(gzip(tar({kManifest, {"gw/x", "1"}, {"gw/x", "2"}})), "holds `gw/x` twice");
  Entry bad = {"gw/x", "x"};
  bad.bad_checksum = true;
  expect_refused(gzip(tar({kManifest, bad})), "bad header checksum");
  Entry notustar = {"gw/x", "x"};
  notustar.magic = "xxxxx";
  expect_refused(gzip(tar({kManifest, notustar})), "not a ustar header");
  expect_refused(gzip(std::string(1024, '\0')), "is empty");
  expect_refused(gzip(tar({kManifest}) + "trailing data after the end"), "data after its end");
}

TEST_F(PackReader, RefusesCorruptAndTruncated) {
  std::string good = gzip(tar({kManifest, {"gw/a.img", std::string(100000, 'a')}}));
  expect_refused(tar({kManifest}), "neither gzip- nor xz-compressed");
  expect_refused(good.substr(0, good.size() / 2), "truncated");
  // A flipped bit inside the deflate stream fails either as bad deflate data, as a
  // garbled header, or at the CRC: each is a refusal that names the pack.
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x55;
  expect_refused(flipped, "in.pack`");
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 6] ^= 1;  // the gzip trailer's CRC
  expect_refused(bad_crc, "corrupt");
  expect_refused(gzip(tar({kManifest, {"gw/a.img", "abc"}}, false)), "truncated");
  expect_refused("", "is not a pack");
}

TEST_F(PackReader, XzPacksAreReadAndCheckedToo) {
  const std::string body = tar({kManifest, {"gw/a.img", std::string(100000, 'a')}});
  EXPECT_EQ(unpack_bytes(xz(body)), "");
  EXPECT_EQ(sys::read_file(dest() + "/gw/a.img").value(), std::string(100000, 'a'));
  std::filesystem::remove_all(dest());
  const std::string good = xz(body);
  expect_refused(good.substr(0, good.size() / 2), "truncated");
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x55;
  expect_refused(flipped, "corrupt");
  std::string bad_check = good;
  bad_check[bad_check.size() - 20] ^= 1;  // inside the CRC64 or the index after it
  expect_refused(bad_check, "corrupt");
  expect_refused(good + "x", "data after its xz stream");
  expect_refused(xz(tar({kManifest}) + "trailing data after the end"), "data after its end");
  PackLimits total;
  total.max_total = 32 << 20;
  expect_refused(xz(tar({kManifest, {"gw/bomb", std::string(64 << 20, '\0')}})), "unpacks to more than", total);
}

TEST_F(PackReader, WriterMakesEitherCompression) {
  auto src = TempDir::create();
  ASSERT_TRUE(src.ok());
  std::filesystem::create_directories(*src / "gw/1");
  ASSERT_TRUE(sys::write_file(*src / "gw/1/core-1.img", std::string(50000, 'c')).ok());
  // Incompressible bytes make a pack larger than the reader's small-pack buffer.
  std::string noise(300000, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& ch : noise) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = char(x);
  }
  ASSERT_TRUE(sys::write_file(*src / "gw/1/pages-1.img.raw", noise).ok());
  for (Compression c : {Compression::Gzip, Compression::Xz}) {
    for (bool large : {false, true}) {
      PackOptions o;
      o.compression = c;
      const std::string pack = dir_ / cat("p-", to_string(c), large ? "-large" : "", ".pack");
      std::vector<std::string> files = {"gw/1/core-1.img"};
      if (large) files.push_back("gw/1/pages-1.img.raw");
      ASSERT_TRUE(write_pack(pack, "{\"format\":1}", src->path(), files, o).ok());
      auto bytes = sys::read_file(pack).value();
      EXPECT_EQ(static_cast<unsigned char>(bytes[0]), c == Compression::Xz ? 0xfd : 0x1f) << to_string(c);
      EXPECT_EQ(bytes.size() > noise.size(), large) << to_string(c);
      auto m = unpack(pack, dest());
      ASSERT_TRUE(m.ok()) << m.error().message;
      EXPECT_EQ(*m, "{\"format\":1}");
      EXPECT_EQ(sys::read_file(dest() + "/gw/1/core-1.img").value(), std::string(50000, 'c'));
      if (large) EXPECT_EQ(sys::read_file(dest() + "/gw/1/pages-1.img.raw").value(), noise) << to_string(c);
      std::filesystem::remove_all(dest());
    }
  }
  EXPECT_EQ(parse_compression("zstd").error().message, "unknown compression `zstd` (gzip or xz)");
}

TEST_F(PackReader, RefusesOversized) {
  PackLimits small;
  small.max_file = 1000;
  small.max_total = 1500;
  small.max_entries = 3;
  small.max_manifest = 16;
  expect_refused(gzip(tar({kManifest, {"gw/a", std::string(1001, 'a')}})), "is too large", small);
  expect_refused(gzip(tar({kManifest, {"gw/a", std::string(900, 'a')}, {"gw/b", std::string(900, 'b')}})),
                 "unpacks to more than 1500 bytes", small);
  expect_refused(gzip(tar({kManifest, {"gw/a", "a"}, {"gw/b", "b"}, {"gw/c", "c"}})), "more than 3 entries", small);
  expect_refused(gzip(tar({{"manifest.json", std::string(17, ' ')}})), "is too large", small);
  // A zip bomb: 64 MiB of zeros claimed as one file, against the default 512 MiB file
  // limit but a 32 MiB total.
  PackLimits total;
  total.max_total = 32 << 20;
  expect_refused(gzip(tar({kManifest, {"gw/bomb", std::string(64 << 20, '\0')}})), "unpacks to more than", total);
}

// A page image's records (see pack.cpp): literal pages, copies of earlier ones, a tail.
struct Pages {
  std::string bytes = "SLPAGES1";
  Pages& literal(char fill) {
    bytes += 'L';
    bytes.append(4096, fill);
    return *this;
  }
  Pages& copy(uint32_t index) {
    bytes += 'R';
    for (int i = 0; i < 4; ++i) bytes += char(index >> (8 * i));
    return *this;
  }
  Pages& tail(uint16_t n, char fill = 't') {
    bytes += 'T';
    bytes += char(n & 0xff);
    bytes += char(n >> 8);
    bytes.append(std::min<size_t>(n, 4095), fill);
    return *this;
  }
};

TEST_F(PackReader, PageImagesShareTheirPagesAndUnpackWhole) {
  auto src = TempDir::create();
  ASSERT_TRUE(src.ok());
  std::filesystem::create_directories(*src / "gw/7");
  // Two "processes": the second shares 200 of the first's 256 random pages (at other
  // offsets), repeats one of its own, has zero pages and ends in a partial page.
  std::string first(256 * 4096, '\0');
  for (size_t i = 0; i < first.size(); ++i) first[i] = char((i * 2654435761u) >> 11 ^ i >> 12);
  std::string second = first.substr(56 * 4096) + first.substr(0, 4096) + first.substr(0, 4096);
  second += std::string(3 * 4096, '\0') + std::string(100, 'z');
  ASSERT_TRUE(sys::write_file(*src / "gw/7/pages-1.img", first).ok());
  ASSERT_TRUE(sys::write_file(*src / "gw/7/pages-2.img", second).ok());
  ASSERT_TRUE(sys::write_file(*src / "gw/7/core-7.img", "core").ok());
  const std::string pack = dir_ / "p.pack";
  ASSERT_TRUE(write_pack(pack, "{}", src->path(), {"gw/7/core-7.img", "gw/7/pages-1.img", "gw/7/pages-2.img"}).ok());
  auto m = unpack(pack, dest());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(sys::read_file(dest() + "/gw/7/pages-1.img").value(), first);
  EXPECT_EQ(sys::read_file(dest() + "/gw/7/pages-2.img").value(), second);
  EXPECT_EQ(sys::read_file(dest() + "/gw/7/core-7.img").value(), "core");
  EXPECT_FALSE(std::filesystem::exists(dest() + "/gw/7/pages-2.img.dedup"));
  // The shared pages are stored once: the pack is hardly larger than the first image
  // compressed, not the two.
  std::string plain = gzip(tar({kManifest, {"gw/7/pages-1.img", first}, {"gw/7/pages-2.img", second}}));
  EXPECT_LT(std::filesystem::file_size(pack), plain.size() * 6 / 10)
      << "pack " << std::filesystem::file_size(pack) << " bytes, plain " << plain.size();
}

TEST_F(PackReader, RefusesBadPageImages) {
  auto one = [](const std::string& name, const Pages& p) { return gzip(tar({kManifest, {name, p.bytes}})); };
  EXPECT_EQ(unpack_bytes(one("gw/pages-1.img.dedup", Pages().literal('a').copy(0).tail(5))), "");
  EXPECT_EQ(sys::read_file(dest() + "/gw/pages-1.img").value(), std::string(8192, 'a') + std::string(5, 't'));
  std::filesystem::remove_all(dest());
  expect_refused(one("gw/p.dedup", Pages{"SLPAGES2"}.literal('a')), "is not a page image (bad magic)");
  expect_refused(one("gw/p.dedup", Pages().copy(0)), "copies page 0 but the pack has 0 so far");
  expect_refused(one("gw/p.dedup", Pages().literal('a').copy(1)), "copies page 1 but the pack has 1");
  expect_refused(one("gw/p.dedup", Pages().literal('a').copy(0xffffffff)), "copies page 4294967295");
  expect_refused(one("gw/p.dedup", Pages{"SLPAGES1X"}), "unknown record (code 88)");
  Pages cut = Pages().literal('a');
  cut.bytes.resize(cut.bytes.size() - 1);
  expect_refused(one("gw/p.dedup", cut), "ends inside a record");
  expect_refused(one("gw/p.dedup", Pages{"SLPAG"}), "ends inside a record");
  expect_refused(one("gw/p.dedup", Pages().tail(0)), "last page of 0 bytes");
  expect_refused(one("gw/p.dedup", Pages().tail(4096)), "last page of 4096 bytes");
  expect_refused(one("gw/p.dedup", Pages().tail(3).literal('a')), "records after its last page");
  expect_refused(gzip(tar({kManifest, {"gw/p", "x"}, {"gw/p.dedup", Pages().literal('a').bytes}})),
                 "holds `gw/p` twice");
  expect_refused(gzip(tar({kManifest, {"gw/p.dedup", Pages().literal('a').bytes}, {"gw/p", "x"}})),
                 "holds `gw/p` twice");
  expect_refused(one("gw/.dedup", Pages().literal('a')), "empty path component");
  // Copies are the bomb here: five bytes each, a page out. Limits count what they write.
  Pages bomb = Pages().literal('b');
  for (int i = 0; i < 2000; ++i) bomb.copy(0);
  PackLimits small;
  small.max_total = 4 << 20;
  expect_refused(one("gw/bomb.dedup", bomb), "unpacks to more than 4194304 bytes", small);
  PackLimits file;
  file.max_file = 1 << 20;
  expect_refused(one("gw/bomb.dedup", bomb), "is too large (more than 1048576 bytes)", file);
  // Copies reach across images, not just within one.
  EXPECT_EQ(unpack_bytes(gzip(tar({kManifest,
                                   {"gw/a.dedup", Pages().literal('a').literal('b').bytes},
                                   {"gw/b.dedup", Pages().copy(1).copy(0).literal('c').copy(2).bytes}}))),
            "");
  EXPECT_EQ(sys::read_file(dest() + "/gw/b").value(),
            std::string(4096, 'b') + std::string(4096, 'a') + std::string(8192, 'c'));
}

TEST(PackFiles, ImagesGoInLogsAndPidFilesStay) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  std::filesystem::create_directories(*dir / "gw/42");
  for (const char* f :
       {"gw/42/pages-1.img", "gw/42/core-42.img", "gw/42/dump.log", "gw/42/restore.pid", "manifest.json"})
    ASSERT_TRUE(sys::write_file(*dir / f, "x").ok());
  EXPECT_EQ(list_pack_files(dir->path()),
            (std::vector<std::string>{"gw/42/core-42.img", "gw/42/pages-1.img", "manifest.json"}));
}

TEST(PackNames, CheckEntryName) {
  EXPECT_TRUE(check_entry_name("gw/123/pages-1.img").ok());
  EXPECT_TRUE(check_entry_name("manifest.json").ok());
  EXPECT_FALSE(check_entry_name("").ok());
  EXPECT_FALSE(check_entry_name(std::string(256, 'a')).ok());
  EXPECT_FALSE(check_entry_name("gw/").ok());
  EXPECT_FALSE(check_entry_name("..").ok());
}

}  // namespace
}  // namespace seamless::packfmt
