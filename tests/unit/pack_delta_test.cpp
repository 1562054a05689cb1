// SPDX-License-Identifier: Apache-2.0
// Page deltas in packs: a dump directory made the way CRIU makes it (pagemap, mm and
// files images around a pages image) whose pages are private copies of a mapped ELF
// file; the pack stores them against the file and unpacks them whole where the same
// file is, refuses where it differs or is missing, and refuses hostile base records.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/criu_confine.h"
#include "pack/criu_images.h"
#include "pack/identity.h"
#include "pack/pack.h"
#include "tests/support/criu_writer.h"

namespace seamless::packfmt {
namespace {

// --- protobuf and CRIU image writing, as CRIU does it ----------------------------------
using test::criu_writer::bytes;
using test::criu_writer::image;
using test::criu_writer::num;

constexpr uint64_t kFilePrivate = 1 << 6, kAnonPrivate = 1 << 9, kRegular = 1;
constexpr uint64_t kPresent = 1 << 2;

std::string vma(uint64_t start, uint64_t end, uint64_t pgoff, uint64_t shmid, uint64_t status) {
  return num(1, start) + num(2, end) + num(3, pgoff) + num(4, shmid) + num(5, 3) + num(6, 2) + num(7, status) +
         num(8, uint64_t(-1));
}

class PageDeltas : public ::testing::Test {
 protected:
  void SetUp() override {
    // The "library": this test's own executable (an ELF file with a build-id), under a
    // base root of its own.
    std::filesystem::create_directories(base_ / "lib");
    std::filesystem::copy_file("/proc/self/exe", base_ / "lib/libx.so");
    lib_ = sys::read_file(base_ / "lib/libx.so", 1 << 30).value();
    ASSERT_GT(lib_.size(), 4 * 4096u);
    ASSERT_FALSE(elf_build_id(lib_.substr(0, 64 << 10)).empty()) << "the test binary needs a build-id";

    // Three pages at 0x10000: file page 1 relocated (pointers moved by a load base),
    // an anonymous page, file page 2 with one word changed.
    pages_ = lib_.substr(4096, 4096);
    for (size_t i = 0; i < 4096; i += 64) {
      uint64_t w;
      std::memcpy(&w, pages_.data() + i, 8);
      w += 0x7f3a12340000ull;
      std::memcpy(pages_.data() + i, &w, 8);
    }
    std::string anon(4096, '\0');
    for (size_t i = 0; i < anon.size(); ++i) anon[i] = char(i * 7 + i / 13);
    std::string third = lib_.substr(8192, 4096);
    third[100] ^= 0x5a;
    pages_ += anon + third;

    const std::string d = src_ / "gw/7";
    std::filesystem::create_directories(d);
    ASSERT_TRUE(sys::write_file(d + "/pages-1.img", pages_).ok());
    ASSERT_TRUE(sys::write_file(d + "/pagemap-7.img",
                                image(0x56084025, {num(1, 1), num(1, 0x10000) + num(2, 3) + num(4, kPresent)}))
                    .ok());
    std::string mm = num(1, 0) + num(2, 0) + num(3, 0) + num(4, 0) + num(5, 0) + num(6, 0) + num(7, 0) + num(8, 0) +
                     num(9, 0) + num(10, 0) + num(11, 0) + num(12, 0);
    mm += bytes(14, vma(0x10000, 0x11000, 4096, 5, kFilePrivate | kRegular));
    mm += bytes(14, vma(0x11000, 0x12000, 0, 0, kAnonPrivate | kRegular));
    mm += bytes(14, vma(0x12000, 0x13000, 8192, 5, kFilePrivate | kRegular));
    ASSERT_TRUE(sys::write_file(d + "/mm-7.img", image(0x57492820, {mm})).ok());
    std::string reg = num(1, 5) + num(2, 0) + num(3, 0) + bytes(5, num(1, 0)) + bytes(6, "/lib/libx.so");
    ASSERT_TRUE(sys::write_file(d + "/files.img", image(0x56213732, {num(1, 1) + num(2, 5) + bytes(3, reg)})).ok());
  }

  // Packs src_ with deltas against `base_root` (none when empty); returns the pack's path.
  std::string pack(const std::string& base_root, Compression c = Compression::Gzip) {
    PackOptions o;
    o.base_root = base_root;
    o.compression = c;
    const std::string out = dir_ / cat("p", ++packs_, ".pack");
    auto w = write_pack(out, "{}", src_.path(), list_pack_files(src_.path()), o, &stats_);
    EXPECT_TRUE(w.ok()) << w.error().message;
    return out;
  }
  std::string dest() { return dir_ / cat("out", ++dests_); }

  TempDir dir_ = TempDir::create().value();
  TempDir src_ = TempDir::create().value();
  TempDir base_ = TempDir::create().value();
  std::string lib_, pages_;
  PackStats stats_;
  int packs_ = 0, dests_ = 0;
};

TEST_F(PageDeltas, CriuImagesTellWhichFilePageEachPageCopies) {
  auto o = criu_images::page_origins(src_ / "gw/7");
  ASSERT_TRUE(o.ok()) << o.error().message;
  ASSERT_EQ(o->files, std::vector<std::string>{"/lib/libx.so"});
  ASSERT_EQ(o->images.count(1), 1u);
  const auto& p = o->images.at(1);
  ASSERT_EQ(p.size(), 3u);
  ASSERT_TRUE(p[0] && p[2]);
  EXPECT_EQ(p[0]->page, 1u);
  EXPECT_FALSE(p[1]) << "the anonymous page has no file";
  EXPECT_EQ(p[2]->page, 2u);
}

TEST_F(PageDeltas, StoredAgainstTheFileAndRebuiltWhole) {
  const std::string with = pack(base_.path()), without = pack("");
  EXPECT_EQ(stats_.deltas, 0u) << "the last pack was made without deltas";
  EXPECT_EQ(stats_.literal, 3u);
  (void)pack(base_.path());
  EXPECT_EQ(stats_.deltas, 2u) << "both file pages";
  EXPECT_EQ(stats_.literal, 1u) << "the anonymous page";
  EXPECT_LT(std::filesystem::file_size(with) + 1000, std::filesystem::file_size(without))
      << "the two file pages cost little more than the words that differ";
  for (const auto& p : {with, without}) {
    const std::string out = dest();
    auto m = unpack(p, out, {}, base_.path());
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_EQ(sys::read_file(out + "/gw/7/pages-1.img").value(), pages_);
  }
  // Kept as stored: the `.dedup` entry as it is, and it packs again unchanged.
  const std::string kept = dest();
  ASSERT_TRUE(unpack(with, kept, {}, kKeepPageImages).ok());
  EXPECT_FALSE(std::filesystem::exists(kept + "/gw/7/pages-1.img"));
  ASSERT_TRUE(std::filesystem::exists(kept + "/gw/7/pages-1.img.dedup"));
  auto files = list_pack_files(kept);
  files.erase(std::remove(files.begin(), files.end(), std::string(kManifestName)), files.end());
  const std::string again = dir_ / "again.pack";
  ASSERT_TRUE(write_pack(again, "{}", kept, files).ok());
  const std::string out = dest();
  auto m = unpack(again, out, {}, base_.path());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(sys::read_file(out + "/gw/7/pages-1.img").value(), pages_);
}

TEST_F(PageDeltas, AnotherOrMissingBaseFileIsRefused) {
  const std::string p = pack(base_.path(), Compression::Xz);
  // Same size, other contents (the build-id note among them): a different build.
  std::string other = lib_;
  auto id = elf_build_id(lib_.substr(0, 64 << 10));
  std::string raw_id;
  for (size_t i = 0; i + 1 < id.size(); i += 2) raw_id += char(std::stoi(id.substr(i, 2), nullptr, 16));
  auto at = other.find(raw_id);
  ASSERT_NE(at, std::string::npos);
  other[at] ^= 0xff;
  auto here = TempDir::create().value();
  std::filesystem::create_directories(here / "lib");
  ASSERT_TRUE(sys::write_file(here / "lib/libx.so", other).ok());
  const std::string out = dest();
  auto differs = unpack(p, out, {}, here.path());
  ASSERT_FALSE(differs.ok());
  EXPECT_NE(differs.error().message.find("pages are stored against `/lib/libx.so`, which differs here"),
            std::string::npos)
      << differs.error().message;
  EXPECT_NE(differs.error().message.find(id), std::string::npos) << differs.error().message;
  EXPECT_FALSE(std::filesystem::exists(out));

  auto empty = TempDir::create().value();
  auto missing = unpack(p, dest(), {}, empty.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("`/lib/libx.so`, which is not usable here"), std::string::npos)
      << missing.error().message;
}

// A JVM's class data archive is no ELF file: pages relocated from it are stored against
// it too, the file named by its SHA-256; a file with other contents is refused.
TEST_F(PageDeltas, AFileWithoutBuildIdIsABaseByItsHash) {
  std::string archive = lib_.substr(0, 4 * 4096);
  archive[0] = 'C';  // no longer ELF: no build-id
  ASSERT_TRUE(elf_build_id(archive.substr(0, 64 << 10)).empty());
  ASSERT_TRUE(sys::write_file(base_ / "lib/libx.so", archive).ok());
  // The pages as mapped from it: its pages 1 and 2 (page 0 differs from the ELF only in byte 0).
  const std::string p = pack(base_.path(), Compression::Xz);
  EXPECT_EQ(stats_.deltas, 2u) << "both file pages, against the archive";
  const std::string out = dest();
  auto m = unpack(p, out, {}, base_.path());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(sys::read_file(out + "/gw/7/pages-1.img").value(), pages_);

  auto here = TempDir::create().value();
  std::filesystem::create_directories(here / "lib");
  std::string other = archive;
  other[other.size() - 1] ^= 0x01;
  ASSERT_TRUE(sys::write_file(here / "lib/libx.so", other).ok());
  auto differs = unpack(p, dest(), {}, here.path());
  ASSERT_FALSE(differs.ok());
  EXPECT_NE(differs.error().message.find("its contents (SHA-256) are not the same"), std::string::npos)
      << differs.error().message;
}

// A hand-made page image with base records.
std::string le(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += char(v >> (8 * i));
  return out;
}

TEST_F(PageDeltas, HostileBaseRecordsAreRefused) {
  {
    // A hash that is no SHA-256, or a file too large for the unpacking side to hash.
    const std::string bad = "sha256:xyz";
    std::string img =
        std::string("SLPAGES1", 8) + "F" + le(12, 2) + "/lib/libx.so" + le(lib_.size(), 8) + char(bad.size()) + bad;
    const std::string d = src_ / "gw/7";
    ASSERT_TRUE(sys::write_file(d + "/pages-1.img.dedup", img).ok());
    std::filesystem::remove(d + "/pages-1.img");
    auto files = list_pack_files(src_.path());
    const std::string hostile = dir_ / "hostile-hash.pack";
    ASSERT_TRUE(write_pack(hostile, "{}", src_.path(), files).ok());
    auto r = unpack(hostile, dest(), {}, base_.path());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("with a bad SHA-256"), std::string::npos) << r.error().message;
    std::filesystem::remove(d + "/pages-1.img.dedup");
    ASSERT_TRUE(sys::write_file(d + "/pages-1.img", pages_).ok());
  }
  const std::string id = elf_build_id(lib_.substr(0, 64 << 10));
  auto base_record = [&](const std::string& path, uint64_t size, const std::string& build_id) {
    return "F" + le(path.size(), 2) + path + le(size, 8) + char(build_id.size()) + build_id;
  };
  auto delta = [&](uint64_t base, uint64_t page, uint32_t crc) {
    return "D" + le(base, 2) + le(page, 4) + le(crc, 4) + std::string(4096, '\0');
  };
  auto try_image = [&](const std::string& records) -> std::string {
    auto dir = TempDir::create().value();
    std::filesystem::create_directories(dir / "gw");
    if (!sys::write_file(dir / "gw/pages-1.img.dedup", "SLPAGES1" + records).ok()) return "setup failed";
    const std::string p = dir_ / "hostile.pack";
    std::filesystem::remove(p);
    if (!write_pack(p, "{}", dir.path(), {"gw/pages-1.img.dedup"}).ok()) return "write failed";
    auto r = unpack(p, dest(), {}, base_.path());
    return r.ok() ? "" : r.error().message;
  };
  const std::string good = base_record("/lib/libx.so", lib_.size(), id);
  const std::string page1 = lib_.substr(4096, 4096);
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(page1.data()), 4096));
  EXPECT_EQ(try_image(good + delta(0, 1, crc)), "") << "a well-formed delta";
  EXPECT_NE(try_image(good + delta(0, 1, crc ^ 1)).find("does not come out as packed (page 1 of `/lib/libx.so`)"),
            std::string::npos);
  EXPECT_NE(try_image(delta(0, 1, crc)).find("against base file 0 but declares 0"), std::string::npos);
  EXPECT_NE(try_image(base_record("lib/libx.so", lib_.size(), id)).find("not a plain absolute path"),
            std::string::npos);
  EXPECT_NE(try_image(base_record("/lib/../etc/shadow", 1, id)).find("not a plain absolute path"), std::string::npos);
  EXPECT_NE(try_image(base_record("/lib/libx.so", lib_.size(), "")).find("without a build-id"), std::string::npos);
  EXPECT_NE(try_image(base_record("/lib/libx.so", lib_.size() + 1, id)).find("which differs here"), std::string::npos);
  EXPECT_NE(try_image("F" + le(5000, 2)).find("base file path of 5000 bytes"), std::string::npos);
  EXPECT_NE(try_image(good.substr(0, good.size() - 3)).find("ends inside a record"), std::string::npos);
  // Far past the end of the file: the page reads as zeros, so only the crc of zeros fits.
  const std::string zeros(4096, '\0');
  const uint32_t zcrc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(zeros.data()), 4096));
  EXPECT_EQ(try_image(good + delta(0, 0xffffffff, zcrc)), "");
}

TEST(CriuImages, MalformedImagesAreErrors) {
  EXPECT_FALSE(criu_images::parse_message(std::string("\x08\x80", 2)).ok()) << "truncated varint";
  EXPECT_FALSE(criu_images::parse_message(std::string("\x0a\x05"
                                                      "ab",
                                                      4))
                   .ok())
      << "bytes past the end";
  EXPECT_FALSE(criu_images::parse_message(std::string("\x0b", 1)).ok()) << "group wire type";
  EXPECT_FALSE(criu_images::parse_message(std::string(11, '\xff')).ok()) << "varint too long";
  const std::string msg = num(1, 300) + bytes(2, "xy") + std::string("\x19", 1) + std::string(8, 'z');
  auto f = criu_images::parse_message(msg);
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f->size(), 2u) << "fixed64 skipped";
  EXPECT_EQ((*f)[0].value, 300u);
  EXPECT_EQ((*f)[1].bytes, "xy");
  EXPECT_FALSE(criu_images::image_entries("ab").ok());
  EXPECT_FALSE(criu_images::image_entries(image(1, {"abc"}).substr(0, 12)).ok()) << "entry past the end";
}

// --- what a hand-back may hold: the dump's tasks, as they were or as they could become --

// A CRIU dump directory of one task (pid 40, threads 40 and 41) running `exe`, each thread
// with the credentials `c`, the capabilities as CRIU writes them (two u32 words each,
// unpacked).
// `thread41` is appended to thread 41's thread_core (its seccomp fields, say).
void write_task(const std::string& d, const criu_images::Creds& c, const std::string& exe,
                const std::string& thread41 = "") {
  std::filesystem::create_directories(d);
  auto words = [](uint32_t field, uint64_t bits) { return num(field, bits & 0xffffffff) + num(field, bits >> 32); };
  std::string creds = num(1, c.uid) + num(2, c.gid) + num(3, c.euid) + num(4, c.egid) + num(5, c.suid) +
                      num(6, c.sgid) + num(7, c.fsuid) + num(8, c.fsgid) + words(9, c.cap_inh) + words(10, c.cap_prm) +
                      words(11, c.cap_eff) + words(12, c.cap_bnd) + num(13, c.secbits);
  for (uint32_t g : c.groups) creds += num(14, g);
  const std::string thread = num(1, 0) + num(2, 24) + bytes(10, creds);
  for (int tid : {40, 41})
    ASSERT_TRUE(sys::write_file(cat(d, "/core-", tid, ".img"),
                                image(0x54545454, {num(1, 1) + bytes(3, bytes(6, "gw")) +
                                                   bytes(5, thread + (tid == 41 ? thread41 : ""))}))
                    .ok());
  ASSERT_TRUE(sys::write_file(d + "/pstree.img", image(0x50273030, {num(1, 40) + num(2, 1) + num(3, 40) + num(4, 40) +
                                                                    num(5, 40) + num(5, 41)}))
                  .ok());
  std::string mm;
  for (uint32_t f = 1; f <= 11; ++f) mm += num(f, 0);
  mm += num(12, 9);
  ASSERT_TRUE(sys::write_file(d + "/mm-40.img", image(0x57492820, {mm})).ok());
  std::string reg = num(1, 9) + num(2, 0) + num(3, 0) + bytes(5, num(1, 0)) + bytes(6, exe);
  ASSERT_TRUE(sys::write_file(d + "/files.img", image(0x56213732, {num(1, 1) + num(2, 9) + bytes(3, reg)})).ok());
}

TEST(HandBack, OnlyWhatWasDumpedOrWhatItCouldBecomeComesBack) {
  TempDir dir = TempDir::create().value();
  criu_images::Creds www;  // a worker: www-data, no capabilities, its bounding set full
  www.uid = www.euid = www.suid = www.fsuid = 33;
  www.gid = www.egid = www.sgid = www.fsgid = 33;
  www.cap_bnd = (uint64_t(1) << 41) - 1;
  www.groups = {33};
  write_task(dir / "dumped", www, "/usr/sbin/lighttpd");
  auto dumped = criu_images::task_identities(dir / "dumped");
  ASSERT_TRUE(dumped.ok()) << dumped.error().message;
  ASSERT_EQ(dumped->size(), 1u);
  const auto& t = dumped->at(40);
  EXPECT_EQ(t.threads, (std::vector<uint32_t>{40, 41}));
  EXPECT_EQ(t.exe, "/usr/sbin/lighttpd");
  EXPECT_EQ(t.creds.at(41), www);
  // Kept beside the pack as JSON: read back whole.
  auto json = criu_images::identities_from_json(criu_images::identities_to_json(*dumped));
  ASSERT_TRUE(json.ok()) << json.error().message;
  EXPECT_EQ(json->at(40).creds.at(40), www);
  EXPECT_EQ(json->at(40).exe, t.exe);
  EXPECT_TRUE(criu_images::check_handed_back(*json, *dumped).ok()) << "the same tasks come back";

  auto back = [&](const criu_images::Creds& c, const std::string& exe = "/usr/sbin/lighttpd") {
    static int n = 0;
    const std::string d = dir / cat("back", ++n);
    write_task(d, c, exe);
    auto ids = criu_images::task_identities(d);
    EXPECT_TRUE(ids.ok()) << ids.error().message;
    return criu_images::check_handed_back(*dumped, ids.ok() ? *ids : std::map<uint32_t, criu_images::TaskIdentity>{});
  };
  criu_images::Creds root = www;
  root.uid = root.euid = root.suid = root.fsuid = 0;
  auto r = back(root);
  ASSERT_FALSE(r.ok()) << "a worker made root";
  EXPECT_NE(r.error().message.find("user id 0 it could not have taken"), std::string::npos) << r.error().message;
  criu_images::Creds capable = www;
  capable.cap_eff = capable.cap_prm = uint64_t(1) << 21;  // CAP_SYS_ADMIN
  r = back(capable);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("permitted capabilities"), std::string::npos) << r.error().message;
  criu_images::Creds grouped = www;
  grouped.groups = {33, 0};
  EXPECT_FALSE(back(grouped).ok()) << "another group";
  r = back(www, "/bin/sh");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("running `/bin/sh`, not `/usr/sbin/lighttpd`"), std::string::npos)
      << r.error().message;
  // What it could do by itself: drop its bounding set.
  criu_images::Creds dropped = www;
  dropped.cap_bnd = 0;
  EXPECT_TRUE(back(dropped).ok());
  // A root daemon with CAP_SETUID may come back as another user.
  criu_images::Creds daemon = root;
  daemon.cap_prm = daemon.cap_eff = daemon.cap_bnd;
  std::map<uint32_t, criu_images::TaskIdentity> was = *dumped;
  for (auto& [tid, c] : was.at(40).creds) c = daemon;
  const std::string d = dir / "setuid";
  write_task(d, www, "/usr/sbin/lighttpd");
  EXPECT_TRUE(criu_images::check_handed_back(was, criu_images::task_identities(d).value()).ok());
  // A task the dump did not have.
  std::map<uint32_t, criu_images::TaskIdentity> other;
  other[41] = dumped->at(40);
  r = criu_images::check_handed_back(other, *dumped);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("pid 40 was not dumped here"), std::string::npos) << r.error().message;
  // Hostile records are refused.
  for (const char* bad : {"{}", R"({"tasks":[{"pid":-1,"exe":"","threads":[]}]})",
                          R"({"tasks":[{"pid":5,"exe":"x","threads":[{"tid":5}]}]})"})
    EXPECT_FALSE(criu_images::identities_from_json(bad).ok()) << bad;
}

// --- a gateway's stay in a sink: confined in its images, and back as it was ------------

TEST(SinkConfinement, TheSinkLowersAndTheGuestPutsBackWhatItDumped) {
  TempDir dir = TempDir::create().value();
  criu_images::Creds root;  // a root daemon with every capability
  root.cap_prm = root.cap_eff = root.cap_bnd = (uint64_t(1) << 41) - 1;
  const std::string own(8, 'A');  // thread 41 runs under a filter of its own (index 0)
  write_task(dir / "dumped", root, "/usr/sbin/sshd", num(11, 2) + num(12, 0));
  ASSERT_TRUE(sys::write_file(dir / "dumped/seccomp.img", image(0x64413049, {bytes(1, bytes(1, own))})).ok());
  auto dumped = criu_images::task_identities(dir / "dumped");
  ASSERT_TRUE(dumped.ok()) << dumped.error().message;
  EXPECT_EQ(dumped->at(40).seccomp.at(40).mode, 0u);
  ASSERT_EQ(dumped->at(40).seccomp.at(41).mode, 2u);
  ASSERT_EQ(dumped->at(40).seccomp.at(41).chain.size(), 1u);
  EXPECT_EQ(dumped->at(40).seccomp.at(41).chain[0].insns, own);
  auto json = criu_images::identities_from_json(criu_images::identities_to_json(*dumped));
  ASSERT_TRUE(json.ok()) << json.error().message;
  EXPECT_EQ(json->at(40).seccomp, dumped->at(40).seccomp) << "the record keeps the seccomp state";

  // In the sink: the dropped capabilities leave every set, the sink's filter goes on top.
  std::filesystem::copy(dir / "dumped", dir / "sink");
  const std::string sinks(16, 'S');
  ASSERT_TRUE(criu_images::confine(dir / "sink", sinks).ok());
  auto confined = criu_images::task_identities(dir / "sink");
  ASSERT_TRUE(confined.ok()) << confined.error().message;
  for (uint32_t tid : {40u, 41u}) {
    SCOPED_TRACE(tid);
    const auto& c = confined->at(40).creds.at(tid);
    for (uint64_t set : {c.cap_prm, c.cap_eff, c.cap_bnd})
      EXPECT_EQ(set, root.cap_prm & ~criu_images::kSinkDroppedCaps);
    EXPECT_EQ(c.uid, 0u);
    EXPECT_EQ(confined->at(40).seccomp.at(tid).mode, 2u);
    ASSERT_FALSE(confined->at(40).seccomp.at(tid).chain.empty());
    EXPECT_EQ(confined->at(40).seccomp.at(tid).chain.back().insns, sinks) << "the sink's filter is the newest";
  }
  EXPECT_EQ(confined->at(40).seccomp.at(41).chain.size(), 2u);
  EXPECT_EQ(confined->at(40).seccomp.at(41).chain[0].insns, own) << "its own filter stays below";
  EXPECT_TRUE(criu_images::check_handed_back(*dumped, *confined).ok()) << "a confined hand-back only lost";
  // The rest of the image is as it was: the task's name in task_core.
  auto core = sys::read_file(dir / "sink/core-40.img").value();
  EXPECT_NE(core.find("gw"), std::string::npos);
  EXPECT_FALSE(criu_images::confine(dir / "sink", std::string(7, 'x')).ok()) << "not whole instructions";

  // At home: what the dump had, except what the gateway gave up itself (CAP_CHOWN here).
  ASSERT_TRUE(criu_images::restore_as_dumped(dir / "sink", *json).ok());
  auto home = criu_images::task_identities(dir / "sink");
  ASSERT_TRUE(home.ok()) << home.error().message;
  EXPECT_EQ(home->at(40).creds, dumped->at(40).creds);
  EXPECT_EQ(home->at(40).seccomp, dumped->at(40).seccomp);
  criu_images::Creds chowner = root;
  chowner.cap_prm = chowner.cap_eff = root.cap_prm & ~(uint64_t(1) << 0) & ~criu_images::kSinkDroppedCaps;
  write_task(dir / "gave-up", chowner, "/usr/sbin/sshd");
  ASSERT_TRUE(criu_images::restore_as_dumped(dir / "gave-up", *json).ok());
  auto gave_up = criu_images::task_identities(dir / "gave-up").value();
  EXPECT_EQ(gave_up.at(40).creds.at(40).cap_eff, root.cap_eff & ~uint64_t(1)) << "CAP_CHOWN stays given up";
  EXPECT_EQ(gave_up.at(40).seccomp.at(41), dumped->at(40).seccomp.at(41)) << "its own filter back, the sink's gone";
  // A task the record lacks is refused.
  std::map<uint32_t, criu_images::TaskIdentity> other;
  other[41] = dumped->at(40);
  EXPECT_FALSE(criu_images::restore_as_dumped(dir / "gave-up", other).ok());
  // A filter index past the image, or a chain that loops, is malformed.
  write_task(dir / "bad", root, "/usr/sbin/sshd", num(11, 2) + num(12, 3));
  ASSERT_TRUE(sys::write_file(dir / "bad/seccomp.img", image(0x64413049, {bytes(1, bytes(1, own))})).ok());
  EXPECT_FALSE(criu_images::task_identities(dir / "bad").ok());
  ASSERT_TRUE(sys::write_file(dir / "bad/seccomp.img", image(0x64413049, {bytes(1, bytes(1, own) + num(2, 0))})).ok());
  EXPECT_FALSE(criu_images::seccomp_filters(dir / "bad").ok()) << "a filter above itself";
}

}  // namespace
}  // namespace seamless::packfmt
