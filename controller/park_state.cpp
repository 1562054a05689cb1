// SPDX-License-Identifier: Apache-2.0
// Park state as XML, and the domain XML facts the controller needs (libxml2).
#include "controller/park_state.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <cstring>
#include <memory>

#include "controller/ovs.h"

namespace seamless::ctl {
namespace {

using Doc = std::unique_ptr<xmlDoc, decltype(&xmlFreeDoc)>;

Result<Doc> read_xml(const std::string& text, const char* what) {
  if (text.size() > (16u << 20)) return make_error(ErrorKind::Invalid, what, ": XML too large");
  // No network, no entity expansion, no DTD loading: the text may come from anywhere.
  Doc doc(xmlReadMemory(text.data(), int(text.size()), nullptr, nullptr,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
          &xmlFreeDoc);
  if (!doc || !xmlDocGetRootElement(doc.get())) return make_error(ErrorKind::Invalid, what, ": not well-formed XML");
  return doc;
}

bool named(const xmlNode* n, const char* name) {
  return n && n->type == XML_ELEMENT_NODE && std::strcmp(reinterpret_cast<const char*>(n->name), name) == 0;
}

std::string attr(const xmlNode* n, const char* name) {
  xmlChar* v = xmlGetProp(n, reinterpret_cast<const xmlChar*>(name));
  if (!v) return "";
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

const xmlNode* child(const xmlNode* n, const char* name) {
  for (const xmlNode* c = n ? n->children : nullptr; c; c = c->next)
    if (named(c, name)) return c;
  return nullptr;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

Result<int64_t> number(const xmlNode* n, const char* name) {
  std::string v = attr(n, name);
  if (v.empty()) return int64_t(0);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (*end != '\0' || x < 0)
    return make_error(ErrorKind::Invalid, "park state: `", name, "` is not a number: `", v, "`");
  return int64_t(x);
}

}  // namespace

std::string ParkState::to_xml() const {
  char cookie_hex[24];
  std::snprintf(cookie_hex, sizeof cookie_hex, "0x%llx", static_cast<unsigned long long>(cookie));
  return cat("<park mode=\"", escape(mode), "\" sink=\"", escape(sink), "\" container=\"", escape(container),
             "\" mac=\"", escape(mac), "\" pack-sha256=\"", escape(pack_sha256), "\" cookie=\"", cookie_hex,
             "\" balloon-before=\"", balloon_before, "\" memory-before=\"", memory_before, "\" memory-after=\"",
             memory_after, "\" parked-at=\"", parked_at, "\" park-seconds=\"", park_seconds, "\"/>");
}

Result<ParkState> ParkState::from_xml(const std::string& xml) {
  auto doc = SL_TRY(read_xml(xml, "park state"));
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!named(root, "park")) return make_error(ErrorKind::Invalid, "park state: the root element is not <park>");
  ParkState s;
  s.mode = attr(root, "mode");
  s.sink = attr(root, "sink");
  s.container = attr(root, "container");
  s.mac = attr(root, "mac");
  s.pack_sha256 = attr(root, "pack-sha256");
  if (s.mode != "swap" && s.mode != "ram" && s.mode != "disk")
    return make_error(ErrorKind::Invalid, "park state: unknown mode `", s.mode, "`");
  if (s.sink.empty() || s.container.empty()) return make_error(ErrorKind::Invalid, "park state: no sink or container");
  SL_TRY_CTX(check_mac(s.mac), "park state");
  std::string c = attr(root, "cookie");
  char* end = nullptr;
  s.cookie = std::strtoull(c.c_str(), &end, 16);
  if (c.rfind("0x", 0) != 0 || *end != '\0' || !is_seamless_cookie(s.cookie))
    return make_error(ErrorKind::Invalid, "park state: bad cookie `", c, "`");
  s.balloon_before = SL_TRY(number(root, "balloon-before"));
  s.memory_before = SL_TRY(number(root, "memory-before"));
  s.memory_after = SL_TRY(number(root, "memory-after"));
  s.parked_at = SL_TRY(number(root, "parked-at"));
  s.park_seconds = std::strtod(attr(root, "park-seconds").c_str(), nullptr);
  return s;
}

Result<DomainFacts> parse_domain_xml(const std::string& xml) {
  auto doc = SL_TRY(read_xml(xml, "domain XML"));
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!named(root, "domain")) return make_error(ErrorKind::Invalid, "domain XML: the root element is not <domain>");
  DomainFacts f;
  if (const xmlNode* n = child(root, "name"); n) {
    xmlChar* t = xmlNodeGetContent(n);
    if (t) f.name = reinterpret_cast<const char*>(t);
    xmlFree(t);
  }
  const xmlNode* devices = child(root, "devices");
  for (const xmlNode* d = devices ? devices->children : nullptr; d; d = d->next) {
    if (named(d, "interface")) {
      if (const xmlNode* m = child(d, "mac"); m && check_mac(attr(m, "address")).ok())
        f.macs.push_back(attr(m, "address"));
    } else if (named(d, "channel") && attr(d, "type") == "unix") {
      const xmlNode* target = child(d, "target");
      const xmlNode* source = child(d, "source");
      if (target && source && attr(target, "name") == kSinkChannel) f.sink_socket = attr(source, "path");
    }
  }
  if (const xmlNode* meta = child(root, "metadata"); meta) {
    for (const xmlNode* m = meta->children; m; m = m->next) {
      if (!named(m, "park") || !m->ns || !m->ns->href ||
          std::strcmp(reinterpret_cast<const char*>(m->ns->href), kMetadataUri) != 0)
        continue;
      xmlBufferPtr buf = xmlBufferCreate();
      xmlNodeDump(buf, doc.get(), const_cast<xmlNode*>(m), 0, 0);
      f.park_xml = std::string(reinterpret_cast<const char*>(xmlBufferContent(buf)));
      xmlBufferFree(buf);
    }
  }
  return f;
}

}  // namespace seamless::ctl
