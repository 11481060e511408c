// protattn server: gRPC handlers: protobuf messages to InferCalls and InferResults back.
#include "grpc_front.hpp"

#include <algorithm>
#include <climits>
#include <cstring>

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include "kserve.grpc.pb.h"
#include "log.hpp"
#include "protattn/error.hpp"

namespace protattn::server {

namespace {

grpc::StatusCode grpc_code(Code c) {
  switch (c) {
    case Code::ok: return grpc::StatusCode::OK;
    case Code::invalid_argument: return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::not_found: return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::unavailable: return grpc::StatusCode::UNAVAILABLE;
    case Code::deadline_exceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Code::cancelled: return grpc::StatusCode::CANCELLED;
    case Code::unauthenticated: return grpc::StatusCode::UNAUTHENTICATED;
    case Code::internal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

inference::DataType config_type(const std::string& t) {
  if (t == "FP32") return inference::TYPE_FP32;
  if (t == "FP16") return inference::TYPE_FP16;
  if (t == "INT32") return inference::TYPE_INT32;
  return inference::TYPE_INVALID;
}

void fill_stats(inference::ModelStatistics* out, const ModelSpec& m, const ModelStats& s) {
  out->set_name(m.name);
  out->set_version(m.version);
  out->set_last_inference(s.last_inference_ms);
  out->set_inference_count(s.inference_count);
  out->set_execution_count(s.execution_count);
  auto* st = out->mutable_inference_stats();
  auto set = [](inference::StatisticDuration* d, std::uint64_t c, std::uint64_t ns) {
    d->set_count(c);
    d->set_ns(ns);
  };
  set(st->mutable_success(), s.success_count, s.success_ns);
  set(st->mutable_fail(), s.fail_count, s.fail_ns);
  set(st->mutable_queue(), s.queue_count, s.queue_ns);
  set(st->mutable_compute_input(), s.compute_count, 0);
  set(st->mutable_compute_infer(), s.compute_count, s.compute_ns);
  set(st->mutable_compute_output(), s.compute_count, 0);
}

class InferenceService final : public inference::GRPCInferenceService::Service {
 public:
  explicit InferenceService(server::Service& s) : svc_(s) {}

  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* r) override {
    r->set_live(svc_.live());
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* r) override {
    r->set_ready(svc_.ready());
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext* ctx, const inference::ModelReadyRequest* q,
                          inference::ModelReadyResponse* r) override {
    if (auto st = check_key(ctx); !st.ok()) return st;
    const ModelSpec* m = svc_.find_model(q->name());
    r->set_ready(m && svc_.ready() && (q->version().empty() || q->version() == m->version));
    return grpc::Status::OK;
  }
  grpc::Status ServerMetadata(grpc::ServerContext* ctx, const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse* r) override {
    if (auto st = check_key(ctx); !st.ok()) return st;
    r->set_name(kServerName);
    r->set_version(kServerVersion);
    for (const std::string& e : svc_.extensions()) r->add_extensions(e);
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext* ctx, const inference::ModelMetadataRequest* q,
                             inference::ModelMetadataResponse* r) override {
    if (auto st = check_key(ctx); !st.ok()) return st;
    const ModelSpec* m = nullptr;
    if (auto st = lookup(q->name(), q->version(), m); !st.ok()) return st;
    r->set_name(m->name);
    r->add_versions(m->version);
    r->set_platform("protattn");
    auto fill = [](auto* t, const TensorSpec& s) {
      t->set_name(s.name);
      t->set_datatype(s.datatype);
      for (auto d : s.shape) t->add_shape(d);
    };
    for (const auto& s : m->inputs) fill(r->add_inputs(), s);
    for (const auto& s : m->outputs) fill(r->add_outputs(), s);
    return grpc::Status::OK;
  }
  grpc::Status ModelConfig(grpc::ServerContext* ctx, const inference::ModelConfigRequest* q,
                           inference::ModelConfigResponse* r) override {
    if (auto st = check_key(ctx); !st.ok()) return st;
    const ModelSpec* m = nullptr;
    if (auto st = lookup(q->name(), q->version(), m); !st.ok()) return st;
    auto* c = r->mutable_config();
    c->set_name(m->name);
    c->set_backend("protattn");
    c->set_max_batch_size(0);
    for (const auto& s : m->inputs) {
      auto* i = c->add_input();
      i->set_name(s.name);
      i->set_data_type(config_type(s.datatype));
      for (auto d : s.shape) i->add_dims(d);
      i->set_optional(s.optional);
    }
    for (const auto& s : m->outputs) {
      auto* o = c->add_output();
      o->set_name(s.name);
      o->set_data_type(config_type(s.datatype));
      for (auto d : s.shape) o->add_dims(d);
    }
    c->mutable_dynamic_batching()->set_max_queue_delay_microseconds(
        static_cast<std::uint64_t>(svc_.options().max_queue_delay_ms * 1000));
    auto& p = *c->mutable_parameters();
    char cutoff[32];
    std::snprintf(cutoff, sizeof cutoff, "%g", static_cast<double>(m->layout.cutoff));
    p["type"].set_string_value(m->type);
    p["cutoff"].set_string_value(cutoff);
    p["mask"].set_string_value(to_string(m->layout.mask));
    p["order"].set_string_value(to_string(m->layout.order));
    p["tile"].set_string_value(std::to_string(m->layout.tile));
    if (m->is_encoder()) {
      p["trained"].set_string_value(m->encoder->config.trained ? "true" : "false");
      p["weights"].set_string_value(m->weights_path);
    }
    return grpc::Status::OK;
  }
  grpc::Status ModelStatistics(grpc::ServerContext* ctx, const inference::ModelStatisticsRequest* q,
                               inference::ModelStatisticsResponse* r) override {
    if (auto st = check_key(ctx); !st.ok()) return st;
    if (q->name().empty()) {
      for (const auto& m : svc_.models()) fill_stats(r->add_model_stats(), m, svc_.metrics().model_stats(m.name));
      return grpc::Status::OK;
    }
    const ModelSpec* m = nullptr;
    if (auto st = lookup(q->name(), q->version(), m); !st.ok()) return st;
    fill_stats(r->add_model_stats(), *m, svc_.metrics().model_stats(m->name));
    return grpc::Status::OK;
  }

  grpc::Status SystemSharedMemoryStatus(grpc::ServerContext* ctx, const inference::SystemSharedMemoryStatusRequest* q,
                                        inference::SystemSharedMemoryStatusResponse* r) override {
    return shm_call(ctx, [&] {
      for (const auto& reg : svc_.shm().status(q->name())) {
        auto& st = (*r->mutable_regions())[reg.name];
        st.set_name(reg.name);
        st.set_key(reg.key);
        st.set_offset(reg.offset);
        st.set_byte_size(reg.byte_size);
      }
    });
  }
  grpc::Status SystemSharedMemoryRegister(grpc::ServerContext* ctx, const inference::SystemSharedMemoryRegisterRequest* q,
                                          inference::SystemSharedMemoryRegisterResponse*) override {
    return shm_call(ctx, [&] { svc_.shm().add(q->name(), q->key(), q->offset(), q->byte_size()); });
  }
  grpc::Status SystemSharedMemoryUnregister(grpc::ServerContext* ctx,
                                            const inference::SystemSharedMemoryUnregisterRequest* q,
                                            inference::SystemSharedMemoryUnregisterResponse*) override {
    return shm_call(ctx, [&] { svc_.shm().remove(q->name()); });
  }

  grpc::Status ModelInfer(grpc::ServerContext* ctx, const inference::ModelInferRequest* q,
                          inference::ModelInferResponse* r) override {
    const auto arrived = Clock::now();
    if (auto st = check_key(ctx); !st.ok()) {
      svc_.record_failure(q->model_name(), "grpc", {Code::unauthenticated, st.error_message()}, arrived);
      return st;
    }
    InferCall call;
    std::vector<std::string> decoded;  // typed contents turned into raw bytes
    const ModelSpec* m = svc_.find_model(q->model_name());
    try {
      if (!m) throw ServeError(Code::not_found, "unknown model '" + q->model_name() + "'");
      if (!q->model_version().empty() && q->model_version() != m->version)
        throw ServeError(Code::not_found, "model '" + m->name + "' has no version '" + q->model_version() + "'");
      parse(*q, *ctx, call, decoded);
    } catch (const ServeError& e) {
      svc_.record_failure(q->model_name(), "grpc", {e.code, e.what()}, arrived);
      return grpc::Status(grpc_code(e.code), e.what());
    }
    InferResult res = svc_.infer(call, [ctx] { return ctx->IsCancelled(); });
    ctx->AddTrailingMetadata("x-request-id", res.request_id);
    if (!res.status.ok()) return grpc::Status(grpc_code(res.status.code), res.status.message);
    r->set_model_name(m->name);
    r->set_model_version(m->version);
    r->set_id(q->id());
    // raw_output_contents has one entry per output, an empty one for an output in shared memory
    // (Triton's C++ client reads an entry for every output).
    for (auto& t : res.outputs) {
      auto* o = r->add_outputs();
      o->set_name(t.name);
      o->set_datatype(t.datatype);
      for (auto d : t.shape) o->add_shape(d);
      if (!t.shm.region.empty()) {
        auto& p = *o->mutable_parameters();
        p["shared_memory_region"].set_string_param(t.shm.region);
        p["shared_memory_byte_size"].set_int64_param(t.shm.byte_size);
        if (t.shm.offset != 0) p["shared_memory_offset"].set_int64_param(t.shm.offset);
      }
      r->add_raw_output_contents(std::move(t.data));  // the answer's bytes, moved
    }
    return grpc::Status::OK;
  }

 private:
  grpc::Status check_key(grpc::ServerContext* ctx) const {
    if (!svc_.auth_required()) return grpc::Status::OK;
    const auto& md = ctx->client_metadata();
    std::string key;
    if (auto it = md.find("authorization"); it != md.end()) {
      const std::string v(it->second.data(), it->second.size());
      if (v.rfind("Bearer ", 0) == 0) key = v.substr(7);
    }
    if (key.empty())
      if (auto it = md.find("x-api-key"); it != md.end()) key.assign(it->second.data(), it->second.size());
    if (svc_.authorized(key)) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong API key (metadata authorization: Bearer <key> or x-api-key)");
  }

  // A shared-memory call: the API key, the --allow-shared-memory switch, errors as statuses.
  template <typename F>
  grpc::Status shm_call(grpc::ServerContext* ctx, F&& f) {
    if (auto st = check_key(ctx); !st.ok()) return st;
    if (!svc_.options().allow_shared_memory)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "shared memory is off (serve --allow-shared-memory)");
    try {
      f();
    } catch (const ServeError& e) {
      return grpc::Status(grpc_code(e.code), e.what());
    }
    return grpc::Status::OK;
  }

  // The shared-memory parameters of a tensor; false when it has none. Both the region and the
  // byte size are needed, the offset is optional.
  static bool shm_ref(const google::protobuf::Map<std::string, inference::InferParameter>& params,
                      const std::string& what, ShmRef& ref) {
    const auto region = params.find("shared_memory_region");
    const auto size = params.find("shared_memory_byte_size");
    const auto offset = params.find("shared_memory_offset");
    if (region == params.end() && size == params.end() && offset == params.end()) return false;
    if (region == params.end() || size == params.end())
      throw invalid(what + ": shared_memory_region and shared_memory_byte_size go together");
    if (region->second.parameter_choice_case() != inference::InferParameter::kStringParam)
      throw invalid(what + ": shared_memory_region must be a string");
    auto int64_of = [&](const inference::InferParameter& p, const char* name) {
      if (p.parameter_choice_case() != inference::InferParameter::kInt64Param)
        throw invalid(what + ": " + name + " must be an int64");
      return p.int64_param();
    };
    ref.region = region->second.string_param();
    if (ref.region.empty()) throw invalid(what + ": shared_memory_region is empty");
    ref.byte_size = int64_of(size->second, "shared_memory_byte_size");
    ref.offset = offset == params.end() ? 0 : int64_of(offset->second, "shared_memory_offset");
    return true;
  }

  grpc::Status lookup(const std::string& name, const std::string& version, const ModelSpec*& m) const {
    m = svc_.find_model(name);
    if (!m) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unknown model '" + name + "'");
    if (!version.empty() && version != m->version)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "model '" + name + "' has no version '" + version + "'");
    return grpc::Status::OK;
  }

  void parse(const inference::ModelInferRequest& q, const grpc::ServerContext& ctx, InferCall& call,
             std::vector<std::string>& decoded) const {
    call.model = q.model_name();
    call.protocol = "grpc";
    call.id = q.id().substr(0, 128);
    const auto grpc_deadline = ctx.deadline();
    if (grpc_deadline != std::chrono::system_clock::time_point::max()) {
      const auto left = grpc_deadline - std::chrono::system_clock::now();
      call.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
    }
    if (auto it = q.parameters().find("timeout"); it != q.parameters().end()) {
      if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
          it->second.int64_param() <= 0)
        throw ServeError(Code::invalid_argument, "parameter 'timeout' must be a positive int64 (microseconds)");
      call.deadline = std::min(call.deadline, Clock::now() + std::chrono::microseconds(it->second.int64_param()));
    }
    if (q.inputs_size() == 0) throw ServeError(Code::invalid_argument, "no inputs");
    if (q.inputs_size() > 16) throw ServeError(Code::invalid_argument, "too many inputs");
    // Inputs in shared memory have no raw_input_contents entry: the others have one each, in order.
    std::vector<ShmRef> in_shm(static_cast<std::size_t>(q.inputs_size()));
    int in_message = 0;
    for (int i = 0; i < q.inputs_size(); ++i)
      if (!shm_ref(q.inputs(i).parameters(), "input '" + q.inputs(i).name() + "'", in_shm[static_cast<std::size_t>(i)]))
        ++in_message;
    const bool raw = q.raw_input_contents_size() > 0;
    if (raw && q.raw_input_contents_size() != in_message)
      throw ServeError(Code::invalid_argument, std::to_string(q.raw_input_contents_size()) +
                                                   " raw_input_contents for " + std::to_string(in_message) +
                                                   " inputs not in shared memory");
    int raw_index = 0;
    const ModelSpec* m = svc_.find_model(q.model_name());
    decoded.reserve(static_cast<std::size_t>(q.inputs_size()));
    for (int i = 0; i < q.inputs_size(); ++i) {
      const auto& in = q.inputs(i);
      TensorView t;
      t.name = in.name();
      t.datatype = in.datatype();
      t.shape.assign(in.shape().begin(), in.shape().end());
      if (const TensorSpec* spec = m ? m->input(t.name) : nullptr; spec && spec->datatype != t.datatype)
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': datatype " + t.datatype +
                                                     ", expected " + spec->datatype);
      if (!in_shm[static_cast<std::size_t>(i)].region.empty()) {
        if (in.has_contents())
          throw ServeError(Code::invalid_argument, "input '" + t.name + "': contents and shared memory both given");
        read_input_from(call, t, svc_.shm().span(in_shm[static_cast<std::size_t>(i)], "input '" + t.name + "'"));
      } else if (raw) {
        const std::string& bytes = q.raw_input_contents(raw_index++);
        t.data = reinterpret_cast<const std::uint8_t*>(bytes.data());
        t.size = bytes.size();
      } else if (t.datatype == "INT32" && in.contents().int_contents_size() > 0) {
        const auto& c = in.contents().int_contents();
        decoded.emplace_back(reinterpret_cast<const char*>(c.data()), static_cast<std::size_t>(c.size()) * 4);
        t.data = reinterpret_cast<const std::uint8_t*>(decoded.back().data());
        t.size = decoded.back().size();
      } else if (t.datatype == "FP32" && in.contents().fp32_contents_size() > 0) {
        const auto& c = in.contents().fp32_contents();
        decoded.emplace_back(reinterpret_cast<const char*>(c.data()), static_cast<std::size_t>(c.size()) * 4);
        t.data = reinterpret_cast<const std::uint8_t*>(decoded.back().data());
        t.size = decoded.back().size();
      } else {
        throw ServeError(Code::invalid_argument, "input '" + t.name + "': no data (use raw_input_contents, " +
                                                     "fp32_contents or int_contents; FP16 has no typed contents)");
      }
      call.inputs.push_back(std::move(t));
    }
    for (const auto& o : q.outputs()) {
      call.outputs.push_back(o.name());
      ShmRef ref;
      const std::string what = "output '" + o.name() + "'";
      call.output_spans.push_back(shm_ref(o.parameters(), what, ref) ? svc_.shm().span(ref, what) : ShmSpan{});
    }
  }

  server::Service& svc_;
};

}  // namespace

struct GrpcFront::Impl {
  explicit Impl(Service& s) : svc(s), service(s) {}
  Service& svc;
  InferenceService service;
  std::unique_ptr<grpc::Server> server;
};

GrpcFront::GrpcFront(Service& service) : impl_(std::make_unique<Impl>(service)) {}

GrpcFront::~GrpcFront() { shutdown(); }

int GrpcFront::start(const std::string& host, int port) {
  const Options& o = impl_->svc.options();
  grpc::ServerBuilder builder;
  int bound = 0;
  const std::string address = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                              std::to_string(port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound);
  // gRPC sets SO_REUSEPORT by default: a second server would bind a busy port and silently
  // take half of its calls. Without it a busy port is an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&impl_->service);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<std::size_t>(o.max_body_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(INT32_MAX);
  grpc::ResourceQuota quota("protattn-grpc");
  // The synchronous server holds one thread per call until it is answered (the call waits for
  // its batch), plus its pollers; past the quota gRPC answers RESOURCE_EXHAUSTED itself.
  quota.SetMaxThreads(grpc_thread_budget(o) + 2);
  // A thread that has answered its call goes back to polling unless max_pollers threads already
  // poll, in which case it exits (gRPC's default max_pollers is 2). With many calls in flight
  // that is a thread created and destroyed per call; letting every thread of the budget stay
  // cut the server's CPU per call by 40% and raised small-answer throughput by 50% at 64 in
  // flight (bench/results/serve-host-cpu-2026-11-30.md).
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, grpc_thread_budget(o));
  builder.SetResourceQuota(quota);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || bound == 0) throw Error("gRPC: cannot bind " + address + " (in use or bad address)");
  return bound;
}

void GrpcFront::shutdown() {
  if (impl_ && impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(60));
    impl_->server->Wait();
    impl_->server.reset();
  }
}

}  // namespace protattn::server
