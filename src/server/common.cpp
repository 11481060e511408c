// protattn server: status mapping and small tensor helpers shared by both fronts.
#include "common.hpp"

#include <cstring>
#include <string>

namespace protattn::server {

int http_status(Code c) {
  switch (c) {
    case Code::ok: return 200;
    case Code::invalid_argument: return 400;
    case Code::not_found: return 400;
    case Code::unauthenticated: return 401;
    case Code::cancelled: return 499;
    case Code::unavailable: return 503;
    case Code::deadline_exceeded: return 504;
    case Code::internal: return 500;
  }
  return 500;
}

const char* outcome_label(Code c) {
  switch (c) {
    case Code::ok: return "success";
    case Code::invalid_argument: return "invalid";
    case Code::not_found: return "invalid";
    case Code::unauthenticated: return "unauthenticated";
    case Code::cancelled: return "cancelled";
    case Code::unavailable: return "rejected";
    case Code::deadline_exceeded: return "timeout";
    case Code::internal: return "error";
  }
  return "error";
}

std::size_t datatype_size(const std::string& t) {
  if (t == "FP32" || t == "INT32" || t == "UINT32") return 4;
  if (t == "FP16" || t == "BF16" || t == "INT16" || t == "UINT16") return 2;
  if (t == "FP64" || t == "INT64" || t == "UINT64") return 8;
  if (t == "INT8" || t == "UINT8" || t == "BOOL") return 1;
  return 0;
}

std::int64_t shape_elements(const std::vector<std::int64_t>& shape, std::int64_t limit) {
  for (std::int64_t d : shape)
    if (d < 0) return -1;
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d == 0) return 0;
    if (n > limit / d) return -1;
    n *= d;
  }
  return n;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

ServeError invalid(const std::string& msg) { return ServeError(Code::invalid_argument, msg); }

const TensorView& find_input(const InferCall& call, const std::string& name) {
  const TensorView* found = nullptr;
  for (const auto& t : call.inputs) {
    if (t.name != name) continue;
    if (found) throw invalid("input '" + name + "' given twice");
    found = &t;
  }
  if (!found) throw invalid("missing input '" + name + "'");
  return *found;
}

void write_output_to(OutputTensor& t, const ShmSpan& span, const void* src, std::size_t bytes) {
  const ShmRef& ref = span.ref;
  if (bytes > span.size)
    throw invalid("output '" + t.name + "': " + std::to_string(bytes) + " bytes do not fit in the " +
                  std::to_string(span.size) + " given in shared memory region '" + ref.region + "'");
  std::memcpy(span.data, src, bytes);
  t.shm = ref;
  t.shm.byte_size = static_cast<std::int64_t>(bytes);
  std::string().swap(t.data);
}

}  // namespace protattn::server
