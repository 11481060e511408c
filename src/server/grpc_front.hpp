// protattn server: the gRPC front (the protocol's GRPCInferenceService, synchronous handlers).
#pragma once
#include <memory>
#include <string>

#include "service.hpp"

namespace protattn::server {

class GrpcFront {
 public:
  explicit GrpcFront(Service& service);
  ~GrpcFront();
  // Binds and starts serving on its own threads; returns the bound port. Throws Error.
  int start(const std::string& host, int port);
  // Stops accepting RPCs and waits for the ones in progress to be answered.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace protattn::server
