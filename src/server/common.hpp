// protattn server: protocol-neutral request/response types and status codes shared by both fronts.
#pragma once
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "shm.hpp"

namespace protattn::server {

using Clock = std::chrono::steady_clock;

// A Clock duration in seconds.
inline double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Outcomes of a request; each front maps them to its protocol (HTTP status, gRPC code).
enum class Code { ok, invalid_argument, not_found, unavailable, deadline_exceeded, cancelled,
                  unauthenticated, internal };
int http_status(Code c);
const char* outcome_label(Code c);  // the `outcome` label of the request metrics

struct Status {
  Code code = Code::ok;
  std::string message;
  bool ok() const { return code == Code::ok; }
};

// Thrown while a request is parsed or prepared; becomes the response status.
class ServeError : public std::runtime_error {
 public:
  ServeError(Code c, const std::string& msg) : std::runtime_error(msg), code(c) {}
  Code code;
};

// An input tensor as received: raw little-endian elements in row-major order. The bytes belong
// to the request (HTTP body, protobuf message or a decoded JSON buffer) and outlive the call.
struct TensorView {
  std::string name;
  std::string datatype;               // KServe names: "FP32", "FP16", ...
  std::vector<std::int64_t> shape;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;               // bytes
};

struct OutputTensor {
  std::string name;
  std::string datatype;
  std::vector<std::int64_t> shape;
  std::string data;                   // raw little-endian elements, row-major (the gRPC front
                                      // moves it into its answer, not a copy)
  ShmRef shm;                         // region set: written there (data then empty)
};

// One inference call as both fronts hand it to the service.
struct InferCall {
  std::string model;
  std::string id;                     // the client's id (echoed), may be empty
  std::vector<TensorView> inputs;
  std::vector<std::string> outputs;   // requested outputs; empty: the model's default
  // Shared memory: the span each requested output goes to (empty, or one per output; a span
  // without data: in the response), and the spans the inputs read from; kept mapped for the call.
  std::vector<ShmSpan> output_spans;
  std::vector<ShmSpan> input_spans;
  Clock::time_point deadline = Clock::time_point::max();
  std::string protocol;               // "http" or "grpc", for logs
};

// Input `t` of `call` reads its bytes from `span` (kept mapped for the call).
inline void read_input_from(InferCall& call, TensorView& t, ShmSpan span) {
  t.data = span.data;
  t.size = span.size;
  call.input_spans.push_back(std::move(span));
}

// Writes `bytes` from `src` as output `t` into its shared-memory span and records where they
// went (t.shm; t.data is left empty); throws invalid() when they do not fit in the span.
void write_output_to(OutputTensor& t, const ShmSpan& span, const void* src, std::size_t bytes);

struct InferResult {
  Status status;
  std::string request_id;             // the id logs carry (client's id or a generated one)
  std::vector<OutputTensor> outputs;
};

// A 400 / INVALID_ARGUMENT error with this message.
ServeError invalid(const std::string& msg);

// The input of that name in the call; throws invalid() when it is missing or given twice.
const TensorView& find_input(const InferCall& call, const std::string& name);

// Bytes per element of a KServe datatype name; 0 when the server does not know it.
std::size_t datatype_size(const std::string& datatype);

// Product of a shape's dimensions, or -1 when a dimension is negative or the product would
// pass `limit` (checked before any buffer is sized from it).
std::int64_t shape_elements(const std::vector<std::int64_t>& shape, std::int64_t limit);
std::string shape_string(const std::vector<std::int64_t>& shape);

}  // namespace protattn::server
