// protattn server: HTTP routes: parse requests into InferCalls, serialise InferResults.
#include "http_front.hpp"

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "common/parallel.hpp"
#include "log.hpp"
#include "protattn/error.hpp"
#include "protattn/half.hpp"

namespace protattn::server {

using nlohmann::json;

namespace {

// Serves each accepted connection on its own thread, started when no thread is idle, up to
// `max_threads`. httplib keeps a thread for a connection's whole keep-alive life, so a fixed
// pool of T threads stalls the (T+1)-th connection until another closes: a client opening one
// connection per concurrent request plus one for statistics hangs. Threads that finish a
// connection wait for the next one; they end at shutdown.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(std::size_t max_threads) : max_(std::max<std::size_t>(1, max_threads)) {}
  ~ConnectionPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::lock_guard lock(m_);
    jobs_.push_back(std::move(fn));
    if (idle_ < jobs_.size() && threads_.size() < max_)
      threads_.emplace_back([this] {
        detail::name_this_thread("protattn-http");
        work();
      });
    else
      cv_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();  // each finishes the connections queued before it ends
  }

 private:
  void work() {
    std::unique_lock lock(m_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // stopping and nothing left
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const std::size_t max_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  bool stop_ = false;
};

constexpr const char* kHeaderLength = "Inference-Header-Content-Length";
constexpr const char* kTimeoutHeader = "Request-Timeout-Ms";
constexpr int kMaxJsonDepth = 8;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& msg) {
  send_json(res, status, json{{"error", msg}});
}

std::string input_names(const ModelSpec& m) {
  std::string s;
  for (const auto& t : m.inputs) s += (s.empty() ? "" : ", ") + t.name;
  return s;
}

std::string bearer_key(const httplib::Request& req) {
  std::string auth = req.get_header_value("Authorization");
  if (auth.rfind("Bearer ", 0) == 0) return auth.substr(7);
  return req.get_header_value("X-API-Key");
}

// The socket of the connection a handler serves, found by its two ports among the process's
// open descriptors: httplib 0.11 does not hand it to handlers. -1 when not found.
int find_connection_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    auto port_of = [](const sockaddr_storage& s) -> int {
      if (s.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(s).sin_port);
      if (s.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(s).sin6_port);
      return -1;
    };
    if (port_of(local) == req.local_port && port_of(peer) == req.remote_port) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// Whether the peer closed the connection (hang-up or error on the socket).
bool peer_closed(int fd) {
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

std::size_t count_elements(const json& j, int depth) {
  if (!j.is_array()) return 1;
  if (depth > kMaxJsonDepth) throw ServeError(Code::invalid_argument, "tensor data nested too deep");
  std::size_t n = 0;
  for (const auto& e : j) n += count_elements(e, depth + 1);
  return n;
}

template <class F>
void for_each_element(const json& j, F&& f) {
  if (!j.is_array()) {
    f(j);
    return;
  }
  for (const auto& e : j) for_each_element(e, f);
}

// JSON "data" of an input decoded into little-endian bytes of its datatype.
std::vector<std::uint8_t> decode_json_data(const std::string& name, const std::string& datatype,
                                           const json& data, std::int64_t elements) {
  const std::size_t got = count_elements(data, 0);
  if (static_cast<std::int64_t>(got) != elements)
    throw ServeError(Code::invalid_argument, "input '" + name + "': " + std::to_string(got) +
                                                 " data elements for " + std::to_string(elements) +
                                                 " in its shape");
  std::vector<std::uint8_t> out(got * datatype_size(datatype));
  std::size_t i = 0;
  for_each_element(data, [&](const json& e) {
    if (!e.is_number())
      throw ServeError(Code::invalid_argument,
                       "input '" + name + "': data element " + std::to_string(i) + " is not a number");
    if (datatype == "INT32") {
      if (!e.is_number_integer() || e.get<std::int64_t>() < INT32_MIN || e.get<std::int64_t>() > INT32_MAX)
        throw ServeError(Code::invalid_argument, "input '" + name + "': data element " + std::to_string(i) +
                                                     " is not a 32-bit integer");
      const std::int32_t v = e.get<std::int32_t>();
      std::memcpy(out.data() + 4 * i, &v, 4);
      ++i;
      return;
    }
    const float f = e.get<float>();
    if (datatype == "FP32") {
      std::memcpy(out.data() + 4 * i, &f, 4);
    } else {
      const std::uint16_t h = float_to_half(f);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
    ++i;
  });
  return out;
}

json tensor_data_json(const OutputTensor& t) {
  json arr = json::array();
  const std::size_t size = datatype_size(t.datatype), n = t.data.size() / size;
  for (std::size_t i = 0; i < n; ++i) {
    if (t.datatype == "FP16") {
      std::uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      arr.push_back(half_to_float(h));
    } else {
      float f;
      std::memcpy(&f, t.data.data() + 4 * i, 4);
      arr.push_back(f);
    }
  }
  return arr;
}

bool json_bool_param(const json& params, const char* key, bool dflt) {
  if (!params.is_object() || !params.contains(key)) return dflt;
  const json& v = params[key];
  if (!v.is_boolean())
    throw ServeError(Code::invalid_argument, std::string("parameter '") + key + "' must be a boolean");
  return v.get<bool>();
}

// What the parser keeps alive for the InferCall's views.
struct ParsedHttp {
  InferCall call;
  std::vector<std::vector<std::uint8_t>> decoded;
  std::vector<bool> binary_out;  // per requested output
  bool binary_default = false;
};

// The shared-memory parameters of a tensor's "parameters" object; false when it has none. The
// region and the byte size go together, the offset is optional.
bool json_shm_ref(const json& params, const std::string& what, ShmRef& ref) {
  if (!params.is_object()) return false;
  const bool has_region = params.contains("shared_memory_region"), has_size = params.contains("shared_memory_byte_size");
  if (!has_region && !has_size && !params.contains("shared_memory_offset")) return false;
  if (!has_region || !has_size)
    throw ServeError(Code::invalid_argument, what + ": shared_memory_region and shared_memory_byte_size go together");
  if (!params["shared_memory_region"].is_string())
    throw ServeError(Code::invalid_argument, what + ": shared_memory_region must be a string");
  auto integer = [&](const char* name) -> std::int64_t {
    if (!params.contains(name)) return 0;
    if (!params[name].is_number_integer()) throw ServeError(Code::invalid_argument, what + ": " + name + " must be an integer");
    return params[name].get<std::int64_t>();
  };
  ref.region = params["shared_memory_region"].get<std::string>();
  if (ref.region.empty()) throw ServeError(Code::invalid_argument, what + ": shared_memory_region is empty");
  ref.byte_size = integer("shared_memory_byte_size");
  ref.offset = integer("shared_memory_offset");
  return true;
}

void parse_infer(const httplib::Request& req, const Service& svc, const std::string& model_name,
                 ParsedHttp& p) {
  const std::string& body = req.body;
  std::size_t header_len = body.size();
  if (req.has_header(kHeaderLength)) {
    const std::string v = req.get_header_value(kHeaderLength);
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n > body.size())
      throw ServeError(Code::invalid_argument, std::string(kHeaderLength) + " '" + v +
                                                   "' is not a length within the body (" +
                                                   std::to_string(body.size()) + " bytes)");
    header_len = static_cast<std::size_t>(n);
  }
  json j = json::parse(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(header_len), nullptr, false);
  if (j.is_discarded()) throw ServeError(Code::invalid_argument, "malformed JSON in request body");
  if (!j.is_object()) throw ServeError(Code::invalid_argument, "request body must be a JSON object");
  p.call.model = model_name;
  p.call.protocol = "http";
  if (j.contains("id")) {
    if (!j["id"].is_string()) throw ServeError(Code::invalid_argument, "'id' must be a string");
    p.call.id = j["id"].get<std::string>().substr(0, 128);
  }
  const json params = j.value("parameters", json::object());
  if (!params.is_object()) throw ServeError(Code::invalid_argument, "'parameters' must be an object");
  p.binary_default = json_bool_param(params, "binary_data_output", false);
  if (params.contains("timeout")) {
    if (!params["timeout"].is_number_integer() || params["timeout"].get<std::int64_t>() <= 0)
      throw ServeError(Code::invalid_argument, "parameter 'timeout' must be a positive integer (microseconds)");
    p.call.deadline = std::min(p.call.deadline,
                               Clock::now() + std::chrono::microseconds(params["timeout"].get<std::int64_t>()));
  }
  if (req.has_header(kTimeoutHeader)) {
    const std::string v = req.get_header_value(kTimeoutHeader);
    char* end = nullptr;
    const double ms = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(ms > 0))
      throw ServeError(Code::invalid_argument, std::string(kTimeoutHeader) + " '" + v + "' is not a positive number");
    p.call.deadline = std::min(p.call.deadline, Clock::now() + std::chrono::microseconds(
                                                                  static_cast<std::int64_t>(ms * 1e3)));
  }

  const ModelSpec* model = svc.find_model(model_name);
  if (!j.contains("inputs") || !j["inputs"].is_array() || j["inputs"].empty())
    throw ServeError(Code::invalid_argument, "'inputs' must be a non-empty array");
  if (j["inputs"].size() > 16) throw ServeError(Code::invalid_argument, "too many inputs");
  std::size_t binary_offset = header_len;
  const std::int64_t max_elements = static_cast<std::int64_t>(svc.options().max_body_bytes);
  for (const json& in : j["inputs"]) {
    if (!in.is_object()) throw ServeError(Code::invalid_argument, "each input must be an object");
    TensorView t;
    if (!in.contains("name") || !in["name"].is_string())
      throw ServeError(Code::invalid_argument, "input without a string 'name'");
    t.name = in["name"].get<std::string>();
    if (!in.contains("datatype") || !in["datatype"].is_string())
      throw ServeError(Code::invalid_argument, "input '" + t.name + "': missing 'datatype'");
    t.datatype = in["datatype"].get<std::string>();
    if (!in.contains("shape") || !in["shape"].is_array())
      throw ServeError(Code::invalid_argument, "input '" + t.name + "': missing 'shape'");
    for (const json& d : in["shape"]) {
      if (!d.is_number_integer())
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': shape entries must be integers");
      t.shape.push_back(d.get<std::int64_t>());
    }
    if (model) {
      const TensorSpec* spec = model->input(t.name);
      if (!spec)
        throw ServeError(Code::invalid_argument, "unknown input '" + t.name + "' (model '" +
                                                     model->name + "' takes " + input_names(*model) + ")");
      if (spec->datatype != t.datatype)
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': datatype " + t.datatype +
                                                     ", expected " + spec->datatype);
    }
    const std::size_t elem = datatype_size(t.datatype);
    if (elem == 0) throw ServeError(Code::invalid_argument, "input '" + t.name + "': unknown datatype " + t.datatype);
    const std::int64_t elements = shape_elements(t.shape, max_elements);
    if (elements < 0)
      throw ServeError(Code::invalid_argument, "input '" + t.name + "': shape " + shape_string(t.shape) +
                                                   " is negative or too large");
    const json in_params = in.value("parameters", json::object());
    ShmRef in_shm;
    if (json_shm_ref(in_params, "input '" + t.name + "'", in_shm)) {
      if (in.contains("data") || in_params.contains("binary_data_size"))
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': data and shared memory both given");
      read_input_from(p.call, t, svc.shm().span(in_shm, "input '" + t.name + "'"));
    } else if (in_params.is_object() && in_params.contains("binary_data_size")) {
      const json& s = in_params["binary_data_size"];
      if (!s.is_number_integer() || s.get<std::int64_t>() < 0)
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': bad binary_data_size");
      const std::size_t n = s.get<std::size_t>();
      if (n > body.size() - binary_offset)
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': binary_data_size " +
                                                     std::to_string(n) + " runs past the body");
      t.data = reinterpret_cast<const std::uint8_t*>(body.data()) + binary_offset;
      t.size = n;
      binary_offset += n;
    } else if (in.contains("data")) {
      if (t.datatype != "FP32" && t.datatype != "FP16" && t.datatype != "INT32")
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': JSON data of datatype " +
                                                     t.datatype + " is not supported");
      p.decoded.push_back(decode_json_data(t.name, t.datatype, in["data"], elements));
      t.data = p.decoded.back().data();
      t.size = p.decoded.back().size();
    } else {
      throw ServeError(Code::invalid_argument, "input '" + t.name + "': neither 'data' nor binary_data_size");
    }
    p.call.inputs.push_back(std::move(t));
  }
  if (binary_offset != body.size())
    throw ServeError(Code::invalid_argument, std::to_string(body.size() - binary_offset) +
                                                 " bytes of binary data belong to no input");
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) throw ServeError(Code::invalid_argument, "'outputs' must be an array");
    for (const json& o : j["outputs"]) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
        throw ServeError(Code::invalid_argument, "each output must be an object with a 'name'");
      p.call.outputs.push_back(o["name"].get<std::string>());
      const json o_params = o.value("parameters", json::object());
      p.binary_out.push_back(json_bool_param(o_params, "binary_data", p.binary_default));
      ShmRef ref;
      const std::string what = "output '" + p.call.outputs.back() + "'";
      p.call.output_spans.push_back(json_shm_ref(o_params, what, ref) ? svc.shm().span(ref, what) : ShmSpan{});
    }
  }
}

void send_infer_result(httplib::Response& res, const ParsedHttp& p, const InferResult& r,
                       const std::string& model, const std::string& version) {
  json out = {{"model_name", model}, {"model_version", version}, {"outputs", json::array()}};
  if (!p.call.id.empty()) out["id"] = p.call.id;
  std::vector<const OutputTensor*> binary;  // sent after the JSON header, in output order
  for (std::size_t i = 0; i < r.outputs.size(); ++i) {
    const OutputTensor& t = r.outputs[i];
    json o = {{"name", t.name}, {"datatype", t.datatype}, {"shape", t.shape}};
    const bool bin = i < p.binary_out.size() ? p.binary_out[i] : p.binary_default;
    if (!t.shm.region.empty()) {
      o["parameters"] = {{"shared_memory_region", t.shm.region}, {"shared_memory_byte_size", t.shm.byte_size}};
      if (t.shm.offset != 0) o["parameters"]["shared_memory_offset"] = t.shm.offset;
    } else if (bin) {
      o["parameters"] = {{"binary_data_size", t.data.size()}};
      binary.push_back(&t);
    } else {
      o["data"] = tensor_data_json(t);
    }
    out["outputs"].push_back(std::move(o));
  }
  res.status = 200;
  res.set_header("X-Request-Id", r.request_id);
  std::string head = out.dump();
  if (binary.empty()) {
    res.set_content(std::move(head), "application/json");
    return;
  }
  // One body of its final size, each output copied into it once. (Not a content provider writing
  // from the outputs' own buffers: httplib stops those when the server stops, and a drain must
  // still answer every accepted request in full.)
  res.set_header(kHeaderLength, std::to_string(head.size()));
  std::size_t total = head.size();
  for (const OutputTensor* t : binary) total += t->data.size();
  std::string body;
  body.reserve(total);
  body += head;
  for (const OutputTensor* t : binary) body.append(t->data);
  res.set_content(std::move(body), "application/octet-stream");
}

// What a client should know about a model beyond its tensors: an atom_encoder says whether its
// weights were trained (`protattn init-model` writes untrained, seeded random ones).
json model_parameters_json(const ModelSpec& m) {
  json p = {{"type", m.type}};
  if (m.is_encoder()) {
    const ModelConfig& c = m.encoder->config;
    p["trained"] = c.trained;
    if (!c.trained)
      p["note"] = "untrained: seeded random weights (protattn init-model --seed " + std::to_string(c.seed) +
                  "); the embeddings mean nothing";
    p["channels"] = c.channels;
    p["layers"] = c.layers;
    p["heads"] = c.heads;
    p["head_dim"] = c.head_dim;
  }
  return p;
}

json tensor_meta_json(const std::vector<TensorSpec>& ts) {
  json a = json::array();
  for (const auto& t : ts) a.push_back({{"name", t.name}, {"datatype", t.datatype}, {"shape", t.shape}});
  return a;
}

json model_config_json(const ModelSpec& m, const Options& opt) {
  json in = json::array(), out = json::array();
  for (const auto& t : m.inputs)
    in.push_back({{"name", t.name}, {"data_type", "TYPE_" + t.datatype}, {"format", "FORMAT_NONE"},
                  {"dims", t.shape}, {"optional", t.optional}});
  for (const auto& t : m.outputs)
    out.push_back({{"name", t.name}, {"data_type", "TYPE_" + t.datatype}, {"dims", t.shape}});
  char cutoff[32];
  std::snprintf(cutoff, sizeof cutoff, "%g", static_cast<double>(m.layout.cutoff));
  return {{"name", m.name},
          {"platform", ""},
          {"backend", "protattn"},
          {"max_batch_size", 0},
          {"input", in},
          {"output", out},
          {"dynamic_batching",
           {{"max_queue_delay_microseconds", static_cast<std::int64_t>(opt.max_queue_delay_ms * 1000)}}},
          {"parameters",
           {{"type", {{"string_value", m.type}}},
            {"cutoff", {{"string_value", cutoff}}},
            {"mask", {{"string_value", to_string(m.layout.mask)}}},
            {"order", {{"string_value", to_string(m.layout.order)}}},
            {"tile", {{"string_value", std::to_string(m.layout.tile)}}}}}};
}

json model_config_json_full(const ModelSpec& m, const Options& opt) {
  json c = model_config_json(m, opt);
  if (m.is_encoder()) {
    c["parameters"]["trained"] = {{"string_value", m.encoder->config.trained ? "true" : "false"}};
    c["parameters"]["weights"] = {{"string_value", m.weights_path}};
  }
  return c;
}

json duration_json(std::uint64_t count, std::uint64_t ns) { return {{"count", count}, {"ns", ns}}; }

json model_stats_json(const ModelSpec& m, const ModelStats& s) {
  return {{"name", m.name},
          {"version", m.version},
          {"last_inference", s.last_inference_ms},
          {"inference_count", s.inference_count},
          {"execution_count", s.execution_count},
          {"inference_stats",
           {{"success", duration_json(s.success_count, s.success_ns)},
            {"fail", duration_json(s.fail_count, s.fail_ns)},
            {"queue", duration_json(s.queue_count, s.queue_ns)},
            {"compute_input", duration_json(s.compute_count, 0)},
            {"compute_infer", duration_json(s.compute_count, s.compute_ns)},
            {"compute_output", duration_json(s.compute_count, 0)}}},
          {"batch_stats", json::array()}};
}

}  // namespace

struct HttpFront::Impl {
  Service& svc;
  httplib::Server http;
  int listen_fd = -1;  // the listening socket, seen when httplib creates it
  explicit Impl(Service& s) : svc(s) {}

  // Answers 401 and returns false when a key is configured and the request lacks it.
  bool check_key(const httplib::Request& req, httplib::Response& res) {
    if (svc.authorized(bearer_key(req))) return true;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)");
    return false;
  }

  const ModelSpec* model_or_error(const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const ModelSpec* m = svc.find_model(name);
    if (!m) {
      send_error(res, 400, "unknown model '" + name + "'");
      return nullptr;
    }
    if (req.matches.size() > 2 && req.matches[2].matched && req.matches[2] != m->version) {
      send_error(res, 400, "model '" + name + "' has no version '" + std::string(req.matches[2]) + "'");
      return nullptr;
    }
    return m;
  }

  void infer(const httplib::Request& req, httplib::Response& res) {
    const auto arrived = Clock::now();
    const std::string model = req.matches[1];
    if (!svc.authorized(bearer_key(req))) {
      svc.record_failure(model, "http", {Code::unauthenticated, "missing or wrong API key"}, arrived);
      check_key(req, res);
      return;
    }
    ParsedHttp p;
    const ModelSpec* m = svc.find_model(model);
    try {
      if (!m) throw ServeError(Code::not_found, "unknown model '" + model + "'");
      if (req.matches[2].matched && req.matches[2] != m->version)
        throw ServeError(Code::not_found, "model '" + model + "' has no version '" +
                                              std::string(req.matches[2]) + "'");
      parse_infer(req, svc, model, p);
    } catch (const ServeError& e) {
      svc.record_failure(model, "http", {e.code, e.what()}, arrived);
      send_error(res, http_status(e.code), e.what());
      return;
    }
    int fd = -2;  // looked up lazily: most requests finish before the first check
    auto client_gone = [&] {
      if (fd == -2) fd = find_connection_socket(req);
      return fd >= 0 && peer_closed(fd);
    };
    const InferResult r = svc.infer(p.call, client_gone);
    if (!r.status.ok()) {
      res.set_header("X-Request-Id", r.request_id);
      send_error(res, http_status(r.status.code), r.status.message);
      return;
    }
    send_infer_result(res, p, r, m->name, m->version);
  }

  // The system shared-memory extension: status, register and unregister (one region or all).
  void shm_routes() {
    const std::string all = "/v2/systemsharedmemory", one = R"(/v2/systemsharedmemory/region/([^/]+))";
    auto guarded = [this](auto f) {
      return [this, f](const httplib::Request& req, httplib::Response& res) {
        if (!check_key(req, res)) return;
        if (!svc.options().allow_shared_memory) {
          send_error(res, 400, "shared memory is off (serve --allow-shared-memory)");
          return;
        }
        try {
          f(req, res);
        } catch (const ServeError& e) {
          send_error(res, http_status(e.code), e.what());
        }
      };
    };
    auto status = [this](const std::string& name, httplib::Response& res) {
      json out = json::array();
      for (const auto& r : svc.shm().status(name))
        out.push_back({{"name", r.name}, {"key", r.key}, {"offset", r.offset}, {"byte_size", r.byte_size}});
      send_json(res, 200, out);
    };
    http.Get(all + "/status", guarded([status](const httplib::Request&, httplib::Response& res) { status("", res); }));
    http.Get(one + "/status",
             guarded([status](const httplib::Request& req, httplib::Response& res) { status(req.matches[1], res); }));
    http.Post(one + "/register", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const json j = json::parse(req.body, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("key") || !j["key"].is_string() ||
          !j.contains("byte_size") || !j["byte_size"].is_number_unsigned() ||
          (j.contains("offset") && !j["offset"].is_number_unsigned()))
        throw ServeError(Code::invalid_argument,
                         "register: the body must be {\"key\": string, \"offset\": unsigned (optional), \"byte_size\": unsigned}");
      svc.shm().add(req.matches[1], j["key"].get<std::string>(), j.value("offset", std::uint64_t{0}),
                    j["byte_size"].get<std::uint64_t>());
      send_json(res, 200, json::object());
    }));
    http.Post(all + "/unregister", guarded([this](const httplib::Request&, httplib::Response& res) {
      svc.shm().remove("");
      send_json(res, 200, json::object());
    }));
    http.Post(one + "/unregister", guarded([this](const httplib::Request& req, httplib::Response& res) {
      svc.shm().remove(req.matches[1]);
      send_json(res, 200, json::object());
    }));
  }

  void routes() {
    http.Get("/v2/health/live", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"live", svc.live()}});
    });
    http.Get("/v2/health/ready", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, svc.ready() ? 200 : 503, json{{"ready", svc.ready()}});
    });
    http.Get("/v2", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      send_json(res, 200, json{{"name", kServerName}, {"version", kServerVersion}, {"extensions", svc.extensions()}});
    });
    shm_routes();
    http.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      res.set_content(svc.metrics().render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Get("/v2/models/stats", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      json all = json::array();
      for (const auto& m : svc.models()) all.push_back(model_stats_json(m, svc.metrics().model_stats(m.name)));
      send_json(res, 200, json{{"model_stats", all}});
    });
    const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
    http.Get(model, [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      const ModelSpec* m = model_or_error(req, res);
      if (!m) return;
      send_json(res, 200, json{{"name", m->name}, {"versions", {m->version}}, {"platform", "protattn"},
                               {"inputs", tensor_meta_json(m->inputs)},
                               {"outputs", tensor_meta_json(m->outputs)},
                               {"parameters", model_parameters_json(*m)}});
    });
    http.Get(model + "/ready", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      const ModelSpec* m = model_or_error(req, res);
      if (!m) return;
      send_json(res, svc.ready() ? 200 : 503, json{{"name", m->name}, {"ready", svc.ready()}});
    });
    http.Get(model + "/config", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      const ModelSpec* m = model_or_error(req, res);
      if (!m) return;
      send_json(res, 200, model_config_json_full(*m, svc.options()));
    });
    http.Get(model + "/stats", [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_key(req, res)) return;
      const ModelSpec* m = model_or_error(req, res);
      if (!m) return;
      send_json(res, 200, json{{"model_stats", {model_stats_json(*m, svc.metrics().model_stats(m->name))}}});
    });
    http.Post(model + "/infer", [this](const httplib::Request& req, httplib::Response& res) { infer(req, res); });
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        const int status = res.status;
        const std::string msg = status == 404   ? "no such endpoint"
                                : status == 413 ? "request body too large"
                                                : "request failed";
        send_error(res, status, msg);
      }
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg = e.what();
      } catch (...) {
      }
      log_event(LogLevel::error, "http_exception", {{"error", msg}});
      send_error(res, 500, msg);
    });
  }
};

HttpFront::HttpFront(Service& service) : impl_(std::make_unique<Impl>(service)) {
  const Options& o = service.options();
  auto& http = impl_->http;
  const int threads = o.http_threads;
  http.new_task_queue = [threads] { return new ConnectionPool(static_cast<std::size_t>(threads)); };
  http.set_payload_max_length(o.max_body_bytes);
  http.set_keep_alive_max_count(100000);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  http.set_tcp_nodelay(true);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind a port already in use
  // and silently share its connections; SO_REUSEADDR alone allows a quick restart but makes a
  // busy port an error. The descriptor is kept to widen the listen backlog after binding.
  http.set_socket_options([impl = impl_.get()](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    impl->listen_fd = sock;
  });
  impl_->routes();
}

HttpFront::~HttpFront() = default;

int HttpFront::bind(const std::string& host, int port) {
  auto& http = impl_->http;
  int bound = port;
  if (port == 0) {
    bound = http.bind_to_any_port(host);
    if (bound <= 0) throw Error("HTTP: cannot bind " + host + " (any port)");
  } else if (!http.bind_to_port(host, port)) {
    throw Error("HTTP: cannot bind " + host + ":" + std::to_string(port) + " (in use or bad address)");
  }
  // The packaged httplib listens with a backlog of 5: a burst of clients connecting at once
  // (perf_analyzer opens one connection per concurrent request) overflows it and the kernel
  // resets connections. listen() again on the bound socket only widens the backlog.
  if (impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, SOMAXCONN) != 0)
    throw Error("HTTP: listen on " + host + ":" + std::to_string(bound) + ": " + std::strerror(errno));
  return bound;
}

void HttpFront::serve() { impl_->http.listen_after_bind(); }

void HttpFront::stop() { impl_->http.stop(); }

bool HttpFront::running() const { return impl_->http.is_running(); }

}  // namespace protattn::server
